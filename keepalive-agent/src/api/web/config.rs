//! The web configuration file, in the Prometheus exporter-toolkit's format
//! (`--web.config.file` of node_exporter and every exporter built on it),
//! so one file serves both: `tls_server_config`, `http_server_config` and
//! `basic_auth_users`. Parsing checks everything a handshake or a request
//! would otherwise find out later: the files exist and match, the hashes are
//! bcrypt, the names are known. Relative paths are relative to the file's
//! directory, as in the toolkit.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Why a web configuration cannot be used; each names the field.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

impl WebConfigError {
    /// `field` of the file at `path` cannot be used, for `reason`.
    pub fn field(path: &Path, field: impl Into<String>, reason: impl Into<String>) -> Self {
        WebConfigError::Field {
            path: path.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The toolkit's `client_auth_type` values (Go's `tls.ClientAuthType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    /// A certificate is asked for and not checked.
    RequestClientCert,
    /// One is required and not checked.
    RequireAnyClientCert,
    /// One is checked against `client_ca_file` if given.
    VerifyClientCertIfGiven,
    /// One is required and checked against `client_ca_file`.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    pub fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }

    pub fn requires(self) -> bool {
        matches!(
            self,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

/// TLS protocol versions by the toolkit's names. rustls speaks 1.2 and
/// 1.3 only: a minimum of 1.0 or 1.1 is met by 1.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The certificate (chain) itself, PEM, instead of `cert_file`.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub client_auth_type: ClientAuth,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_ca: Option<String>,
    /// A verified client certificate must name one of these (DNS names or
    /// IP addresses in its SANs).
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
    #[serde(default)]
    pub min_version: Option<TlsVersion>,
    #[serde(default)]
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 suites by IANA name (TLS 1.3's are always on, as in Go).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Key exchange groups by Go's names (X25519, CurveP256, CurveP384).
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted for the toolkit's files; the agent speaks HTTP/1.1 only.
    #[serde(default)]
    #[allow(dead_code)]
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    /// User name → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// The response headers the toolkit lets a file set.
pub const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

impl WebConfigFile {
    /// Reads and parses `path` (the checks of the files it names come with
    /// building the TLS configuration).
    pub fn read(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, WebConfigError> {
        // An empty file is the toolkit's "no TLS, no auth".
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let file: WebConfigFile =
            serde_norway::from_str(text).map_err(|e| WebConfigError::Syntax {
                path: path.to_owned(),
                message: one_line(&e.to_string()),
            })?;
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), WebConfigError> {
        let field = |field: &str, reason: &str| WebConfigError::field(path, field, reason);
        for (user, hash) in &self.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(field(
                    &format!("basic_auth_users.{user}"),
                    "not a bcrypt hash (make one with `keepalive-agent hash-password`)",
                ));
            }
        }
        if let Some(http) = &self.http_server_config {
            for name in http.headers.keys() {
                if !ALLOWED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    return Err(field(
                        &format!("http_server_config.headers.{name}"),
                        &format!(
                            "not a header the file may set ({})",
                            ALLOWED_HEADERS.join(", ")
                        ),
                    ));
                }
            }
        }
        let Some(tls) = &self.tls_server_config else {
            return Ok(());
        };
        for san in &tls.client_allowed_sans {
            if rustls::pki_types::ServerName::try_from(san.as_str()).is_err() {
                return Err(field(
                    "tls_server_config.client_allowed_sans",
                    &format!("{san}: only DNS names and IP addresses are supported"),
                ));
            }
        }
        if !tls.client_allowed_sans.is_empty() && !tls.client_auth_type.verifies() {
            return Err(field(
                "tls_server_config.client_allowed_sans",
                "needs client_auth_type RequireAndVerifyClientCert or VerifyClientCertIfGiven",
            ));
        }
        if let (Some(min), Some(max)) = (tls.min_version, tls.max_version)
            && min > max
        {
            return Err(field("tls_server_config.min_version", "above max_version"));
        }
        if tls.max_version.is_some_and(|v| v < TlsVersion::TLS12) {
            return Err(field(
                "tls_server_config.max_version",
                "below TLS12, which is the oldest version keepalive-agent speaks",
            ));
        }
        let has_ca = tls.client_ca_file.is_some() || tls.client_ca.is_some();
        if has_ca && tls.client_auth_type == ClientAuth::NoClientCert {
            return Err(field(
                "tls_server_config.client_ca_file",
                "given with client_auth_type NoClientCert: set client_auth_type (RequireAndVerifyClientCert)",
            ));
        }
        if tls.client_auth_type.verifies() && !has_ca {
            return Err(field(
                "tls_server_config.client_auth_type",
                "verifies client certificates but no client_ca_file is given",
            ));
        }
        Ok(())
    }

    /// Whether the listener speaks TLS: a certificate is configured (the
    /// toolkit serves plain HTTP for a `tls_server_config` without one).
    pub fn tls(&self) -> Option<&TlsServerConfig> {
        self.tls_server_config.as_ref().filter(|t| {
            t.cert_file.is_some() || t.cert.is_some() || t.key_file.is_some() || t.key.is_some()
        })
    }
}

/// A path of the file relative to the configuration's own directory.
pub fn relative_to(config: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        return file.to_owned();
    }
    config
        .parent()
        .map_or_else(|| file.to_owned(), |dir| dir.join(file))
}

/// serde_norway's messages span lines ("… at line 3 column 5"); the
/// agent's errors are one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfigFile, WebConfigError> {
        WebConfigFile::parse(Path::new("/etc/web.yml"), text)
    }

    #[test]
    fn an_unknown_field_is_named() {
        let e = parse("tls_server_config:\n  certfile: a.pem\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `certfile`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn a_password_instead_of_a_hash_is_refused() {
        let e = parse("basic_auth_users:\n  alice: secret\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
    }

    #[test]
    fn verification_needs_a_ca() {
        let e = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("client_auth_type"), "{e}");
        let e = parse("tls_server_config:\n  client_auth_type: Sometimes\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `Sometimes`"), "{e}");
    }

    #[test]
    fn the_toolkits_example_parses() {
        let f = parse(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS12\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\nhttp_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze\n",
        )
        .unwrap();
        assert!(f.tls().is_some());
        assert_eq!(
            relative_to(Path::new("/etc/web.yml"), Path::new("server.crt")),
            Path::new("/etc/server.crt")
        );
        assert!(parse("").unwrap().tls().is_none());
    }
}
