//! A rustls server configuration from the file's `tls_server_config`:
//! the certificate chain and its key (checked to match), the client
//! certificate policy (and the names a client certificate must carry),
//! protocol versions, TLS 1.2 suites and groups. The
//! crypto is rustls' with the `ring` provider; nothing here is hand-made.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::config::{ClientAuth, TlsServerConfig, TlsVersion, WebConfigError, relative_to};

/// What a TLS configuration was built from: the files to watch for
/// rotation.
pub struct BuiltTls {
    pub config: Arc<ServerConfig>,
    pub files: Vec<PathBuf>,
}

/// Builds the listener's TLS configuration; `path` is the web
/// configuration file (for relative paths and errors).
pub fn build(path: &Path, tls: &TlsServerConfig) -> Result<BuiltTls, WebConfigError> {
    let field = |field: &str, reason: String| {
        WebConfigError::field(path, format!("tls_server_config.{field}"), reason)
    };
    let mut files = Vec::new();
    let mut pem =
        |inline: &Option<String>, file: &Option<PathBuf>, name: &str, file_name: &str| match (
            inline, file,
        ) {
            (Some(text), None) => Ok(text.clone().into_bytes()),
            (None, Some(f)) => {
                let f = relative_to(path, f);
                let bytes = std::fs::read(&f)
                    .map_err(|e| field(file_name, format!("{}: {e}", f.display())))?;
                files.push(f);
                Ok(bytes)
            }
            (Some(_), Some(_)) => Err(field(name, format!("given with {file_name}: use one"))),
            (None, None) => Err(field(file_name, "missing".into())),
        };
    let cert_pem = pem(&tls.cert, &tls.cert_file, "cert", "cert_file")?;
    let key_pem = pem(&tls.key, &tls.key_file, "key", "key_file")?;
    let ca_pem = if tls.client_ca.is_some() || tls.client_ca_file.is_some() {
        Some(pem(
            &tls.client_ca,
            &tls.client_ca_file,
            "client_ca",
            "client_ca_file",
        )?)
    } else {
        None
    };

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| field("cert_file", format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(field("cert_file", "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| field("key_file", format!("not a PEM private key: {e}")))?;

    let provider = Arc::new(provider(tls, &field)?);
    let versions = versions(tls);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| field("min_version", e.to_string()))?;
    let verifier = client_verifier(tls, ca_pem.as_deref(), &provider, &field)?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    // with_single_cert checks that the key is the certificate's.
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| field("key_file", format!("does not fit cert_file: {e}")))?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(false);
    // HTTP/1.1 only: say so, so that a client offering h2 does not try it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(BuiltTls {
        config: Arc::new(config),
        files,
    })
}

type FieldError<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

/// ring's provider narrowed to the file's TLS 1.2 suites and groups.
fn provider(
    tls: &TlsServerConfig,
    field: &FieldError<'_>,
) -> Result<CryptoProvider, WebConfigError> {
    let mut p = ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        // TLS 1.3's suites are not configurable, as in Go.
        chosen.extend(
            p.cipher_suites
                .iter()
                .filter(|s| s.tls13().is_some())
                .copied(),
        );
        for name in &tls.cipher_suites {
            let suite = p
                .cipher_suites
                .iter()
                .find(|s| s.tls13().is_none() && s.suite().as_str() == Some(name.as_str()))
                .ok_or_else(|| {
                    field(
                        "cipher_suites",
                        format!("{name}: not a TLS 1.2 suite this agent offers"),
                    )
                })?;
            chosen.push(*suite);
        }
        p.cipher_suites = chosen;
    }
    if !tls.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for name in &tls.curve_preferences {
            let wanted = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                _ => {
                    return Err(field(
                        "curve_preferences",
                        format!("{name}: not one of X25519, CurveP256, CurveP384"),
                    ));
                }
            };
            if let Some(g) = p.kx_groups.iter().find(|g| g.name() == wanted) {
                groups.push(*g);
            }
        }
        p.kx_groups = groups;
    }
    Ok(p)
}

fn versions(tls: &TlsServerConfig) -> Vec<&'static SupportedProtocolVersion> {
    let min = tls.min_version.unwrap_or(TlsVersion::TLS12);
    let max = tls.max_version.unwrap_or(TlsVersion::TLS13);
    let mut v = Vec::new();
    if min <= TlsVersion::TLS12 && max >= TlsVersion::TLS12 {
        v.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::TLS13 {
        v.push(&rustls::version::TLS13);
    }
    v
}

fn client_verifier(
    tls: &TlsServerConfig,
    ca_pem: Option<&[u8]>,
    provider: &Arc<CryptoProvider>,
    field: &FieldError<'_>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, WebConfigError> {
    let auth = tls.client_auth_type;
    if auth == ClientAuth::NoClientCert {
        return Ok(None);
    }
    if !auth.verifies() {
        return Ok(Some(Arc::new(AnyCertificate {
            required: auth.requires(),
            algorithms: provider.signature_verification_algorithms,
        })));
    }
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.unwrap_or_default()) {
        let cert =
            cert.map_err(|e| field("client_ca_file", format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| field("client_ca_file", e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(field("client_ca_file", "no certificate in it".into()));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if auth.requires() {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder
        .build()
        .map_err(|e| field("client_ca_file", e.to_string()))?;
    if tls.client_allowed_sans.is_empty() {
        return Ok(Some(verifier));
    }
    Ok(Some(Arc::new(AllowedSans {
        verified: verifier,
        names: tls.client_allowed_sans.clone(),
    })))
}

/// `client_allowed_sans`: a certificate the CA vouches for must also name
/// one of the allowed names, compared exactly as the exporter-toolkit
/// does (a `*.example.com` SAN is not `prometheus.example.com`): DNS and
/// URI names as strings, IP addresses by webpki's own (exact) check.
#[derive(Debug)]
struct AllowedSans {
    verified: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl AllowedSans {
    fn allows(&self, cert: &webpki::EndEntityCert<'_>) -> bool {
        let named = |allowed: &str| {
            if let Ok(ip) = allowed.parse::<std::net::IpAddr>() {
                let ip = ServerName::IpAddress(ip.into());
                return cert.verify_is_valid_for_subject_name(&ip).is_ok();
            }
            cert.valid_dns_names().any(|n| n == allowed)
                || cert.valid_uri_names().any(|n| n == allowed)
        };
        self.names.iter().any(|allowed| named(allowed))
    }
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.verified.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.verified.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.verified.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .verified
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self.allows(&cert) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verified.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verified.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verified.supported_verify_schemes()
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked
/// for (or required) and taken as it is, as Go does; the handshake's
/// signatures are still checked (the client holds the certificate's key).
#[derive(Debug)]
struct AnyCertificate {
    required: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
