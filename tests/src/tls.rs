//! A certificate authority made for one test (rcgen): a server certificate
//! for 127.0.0.1 and a client certificate, as PEM files in a folder of
//! the test's, and `curl` to speak to the agent with them (what an SRE
//! would type), so that the checks do not share the agent's TLS stack.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct Pki {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// A CA and a client certificate (CN `prometheus`) in `dir`.
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "keepalive test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        let issuer = Issuer::new(params, key);
        let pki = Pki {
            dir: dir.to_owned(),
            ca: dir.join("ca.crt"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            issuer,
        };
        write(&pki.ca, &ca.pem());
        let (cert, key) = pki.leaf("prometheus", ExtendedKeyUsagePurpose::ClientAuth);
        write(&pki.client_cert, &cert);
        write(&pki.client_key, &key);
        pki
    }

    /// A server certificate for 127.0.0.1 and localhost with `cn` as its
    /// subject: (certificate PEM, key PEM).
    pub fn server(&self, cn: &str) -> (String, String) {
        self.leaf(cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate naming `sans`, written as `name.crt`/`name.key`.
    pub fn write_client(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let sans = sans.iter().map(|s| s.to_string()).collect();
        self.write_pair(
            name,
            self.leaf_for(name, sans, ExtendedKeyUsagePurpose::ClientAuth),
        )
    }

    fn leaf(&self, cn: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        self.leaf_for(cn, vec!["127.0.0.1".into(), "localhost".into()], usage)
    }

    fn leaf_for(
        &self,
        cn: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for `sans` as `name.crt`/`name.key`.
    pub fn write_server_for(&self, name: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let sans = sans.iter().map(|s| s.to_string()).collect();
        self.write_pair(
            name,
            self.leaf_for(cn, sans, ExtendedKeyUsagePurpose::ServerAuth),
        )
    }

    /// Writes a server certificate and key as `name.crt`/`name.key`.
    pub fn write_server(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        self.write_pair(name, self.server(cn))
    }

    /// A certificate and its key as `name.crt`/`name.key`.
    fn write_pair(&self, name: &str, (cert, key): (String, String)) -> (PathBuf, PathBuf) {
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        write(&c, &cert);
        write(&k, &key);
        (c, k)
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What `curl` got: its exit code, the HTTP status (0 without an answer)
/// and the body; with `verbose`, its stderr (the handshake) too.
#[derive(Debug)]
pub struct Curl {
    pub exit: i32,
    pub status: u16,
    pub body: Vec<u8>,
    pub stderr: String,
}

/// `curl -sS ARGS… -w '\n%{http_code}' URL` with a 5 s limit.
pub fn curl(args: &[&str], url: &str) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-v", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running curl (apt-get install curl): {e}"));
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[split..])
        .trim()
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Curl {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The subject curl printed for the server's certificate.
    pub fn server_subject(&self) -> Option<String> {
        self.stderr
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("* ")
                    .and_then(|l| l.trim().strip_prefix("subject:"))
            })
            .map(|s| s.trim().to_owned())
    }
}
