//! The secured endpoint: `--web.config.file` (the exporter-toolkit's
//! format) with TLS, client certificates and basic auth, checked with
//! curl and a real Prometheus; certificate rotation under scraping; the
//! per-socket endpoints kept to the loopback listener; gzip; and bad
//! configurations refused at start with exit 2 naming the field.

use keepalive_api::TcpState;
use keepalive_tests::{
    agent::Launch,
    tls::{Curl, Pki, curl, write},
    wait,
};

use super::*;

pub const USER: &str = "prometheus";
pub const PASSWORD: &str = "correct horse battery staple";

/// A bcrypt hash made by the agent's own `hash-password`.
pub fn hash(password: &str) -> String {
    let mut child = agent::command(&[])
        .args(["hash-password", "--cost", "6"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running keepalive-agent hash-password");
    use std::io::Write as _;
    writeln!(child.stdin.take().expect("stdin"), "{password}").expect("writing the password");
    let out = child.wait_with_output().expect("hash-password");
    assert!(out.status.success(), "hash-password failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// An agent whose --listen speaks TLS, asks for a client certificate of
/// the test's CA (`client_auth`) and basic auth; per-socket endpoints on
/// a loopback listener of their own.
pub struct Secured {
    pub agent: Agent,
    pub pki: Pki,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn secured(client_auth: &str, args: &[&str]) -> Secured {
    secured_with(client_auth, "", args)
}

/// As [`secured`], with more `tls_server_config` lines.
pub fn secured_with(client_auth: &str, tls_extra: &str, args: &[&str]) -> Secured {
    let dir = prometheus::temp_dir("keepalive-web");
    let pki = Pki::new(&dir);
    let (server_cert, server_key) = pki.write_server("server", "agent-1");
    let config = dir.join("web.yml");
    // Relative names: the toolkit reads them from the file's folder.
    write(
        &config,
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: {client_auth}\n  client_ca_file: ca.crt\n  min_version: TLS12\n{tls_extra}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  {USER}: {}\n",
            hash(PASSWORD)
        ),
    );
    let config_arg = config.to_string_lossy().into_owned();
    let mut all = vec![
        "--web.config.file",
        &config_arg,
        "--local-listen",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let agent = Agent::start(&all);
    assert_eq!(agent.ready.scheme, keepalive_api::Scheme::Https);
    Secured {
        agent,
        pki,

        server_cert,
        server_key,
    }
}

impl Secured {
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.agent.ready.listen)
    }

    /// curl with the CA and `extra` (credentials, a client certificate).
    pub fn curl(&self, extra: &[&str], path: &str) -> Curl {
        let ca = self.pki.ca.to_string_lossy().into_owned();
        let mut args = vec!["--cacert", &ca];
        args.extend_from_slice(extra);
        curl(&args, &self.url(path))
    }

    /// curl as Prometheus would: client certificate and password.
    pub fn scrape(&self, path: &str) -> Curl {
        let cert = self.pki.client_cert.to_string_lossy().into_owned();
        let key = self.pki.client_key.to_string_lossy().into_owned();
        let user = format!("{USER}:{PASSWORD}");
        self.curl(&["--cert", &cert, "--key", &key, "-u", &user], path)
    }

    /// The scrape config of a Prometheus job for this agent.
    pub fn scrape_config(&self, job: &str, labels: &str) -> String {
        format!(
            "  - job_name: {job}\n    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n    basic_auth:\n      username: {USER}\n      password: \"{PASSWORD}\"\n    static_configs:\n      - targets: [\"{}\"]\n        labels: {{{labels}}}\n",
            self.pki.ca.display(),
            self.pki.client_cert.display(),
            self.pki.client_key.display(),
            self.agent.ready.listen,
        )
    }
}

/// Every series name and label set of a text exposition (values vary
/// between two scrapes; the series do not).
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        // Ones that appear as the agent works.
        .filter(|s| !s.starts_with("keepalive_agent_scan_namespace_errors"))
        .collect()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("a gzip reply");
    out
}

#[test]
fn the_metrics_listener_takes_only_authenticated_tls_and_keeps_sockets_local() {
    require_tool("curl", "apt-get install curl (cargo xtask setup)");
    let s = secured("RequireAndVerifyClientCert", &[]);
    let cert = s.pki.client_cert.to_string_lossy().into_owned();
    let key = s.pki.client_key.to_string_lossy().into_owned();
    let with_cert = ["--cert", cert.as_str(), "--key", key.as_str()];

    let ok = s.scrape("/metrics");
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(
        ok.text().contains("keepalive_agent_build_info{"),
        "{}",
        ok.text()
    );
    assert!(
        ok.stderr
            .to_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{}",
        ok.stderr
    );
    assert_eq!(
        ok.server_subject().as_deref(),
        Some("CN=agent-1"),
        "{}",
        ok.stderr
    );

    let wrong = [with_cert.as_slice(), &["-u", "prometheus:guess"]].concat();
    assert_eq!(s.curl(&wrong, "/metrics").status, 401);
    let root = format!("root:{PASSWORD}");
    let unknown = [with_cert.as_slice(), &["-u", &root]].concat();
    assert_eq!(s.curl(&unknown, "/metrics").status, 401);
    let none = s.curl(&with_cert, "/metrics");
    assert_eq!(none.status, 401);
    assert!(
        none.stderr
            .to_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        none.stderr
    );
    // The kubelet's probes send no credentials.
    assert_eq!(s.curl(&with_cert, "/healthz").status, 200);

    // No client certificate: the handshake fails (curl 35/56: TLS alert).
    let no_cert = s.curl(&["-u", &format!("{USER}:{PASSWORD}")], "/metrics");
    assert_eq!(no_cert.status, 0, "{no_cert:?}");
    assert_ne!(no_cert.exit, 0);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = curl(&[], &format!("http://{}/metrics", s.agent.ready.listen));
    assert_eq!(plain.status, 0, "{plain:?}");
    let handshakes = value(
        &s.agent.get("/metrics").1,
        "keepalive_agent_http_tls_handshake_errors_total",
        &[],
    );
    assert!(handshakes >= Some(2.0), "handshake errors {handshakes:?}");
    let refused = value(
        &s.agent.get("/metrics").1,
        "keepalive_agent_http_unauthorized_total",
        &[],
    );
    assert_eq!(refused, Some(3.0));

    // Per-socket endpoints: not on the network listener, even with
    // credentials; on the loopback one.
    for path in ["/sockets", "/events", "/paths"] {
        let r = s.scrape(path);
        assert_eq!(r.status, 404, "{path} on the metrics listener: {r:?}");
        assert!(r.text().contains("only"), "{}", r.text());
    }
    let local = s
        .agent
        .ready
        .local_listen
        .clone()
        .expect("a local listener");
    // An established connection the agent has seen, held through the
    // comparison below: with none, the per-socket gauges have no series
    // and their families appear only with the scraper's own connection.
    let held = sock::listen("127.0.0.1:0".parse().expect("an address"));
    let client = sock::connect(held.local_addr().expect("bound"), None);
    let (_server, _) = held.accept().expect("accepting");
    let cookie = sock::cookie(&client);
    assert!(
        wait::eventually(Duration::from_secs(10), || {
            s.agent
                .sockets("")
                .iter()
                .any(|r| r.cookie == cookie && r.state == TcpState::Established)
        }),
        "the agent never listed the held connection {cookie}"
    );

    // gzip when asked, the same series as plain.
    for (url, plain) in [
        (format!("http://{local}/metrics"), s.agent.get("/metrics").1),
        (format!("http://{local}/sockets"), s.agent.get("/sockets").1),
    ] {
        let zipped = curl(&["-H", "Accept-Encoding: gzip"], &url);
        assert_eq!(zipped.status, 200);
        assert!(
            zipped
                .stderr
                .to_lowercase()
                .contains("content-encoding: gzip"),
            "{}",
            zipped.stderr
        );
        let text = gunzip(&zipped.body);
        if url.ends_with("/metrics") {
            // The same families: label sets of the per-socket gauges follow
            // sockets that open and close between the two scrapes.
            assert_eq!(families(&series(&text)), families(&series(&plain)));
        } else {
            let rows: Vec<keepalive_api::SocketRow> = serde_json::from_str(&text).expect("rows");
            assert!(!rows.is_empty());
        }
    }
    // And over TLS too.
    let user = format!("{USER}:{PASSWORD}");
    let tls_zip = s.curl(
        &[
            with_cert.as_slice(),
            &["-u", &user, "-H", "Accept-Encoding: gzip"],
        ]
        .concat(),
        "/metrics",
    );
    assert!(gunzip(&tls_zip.body).contains("keepalive_agent_build_info{"));
    s.agent.stop();
}

/// client_allowed_sans: a certificate of the right CA that names none of
/// the allowed names (a wildcard that covers one included) fails the
/// handshake; one that names it passes.
#[test]
fn client_certificates_must_name_an_allowed_san() {
    require_tool("curl", "apt-get install curl (cargo xtask setup)");
    let s = secured_with(
        "RequireAndVerifyClientCert",
        "  client_allowed_sans:\n    - prometheus.monitoring.svc\n",
        &[],
    );
    let user = format!("{USER}:{PASSWORD}");
    let with = |name: &str, sans: &[&str]| {
        let (cert, key) = s.pki.write_client(name, sans);
        let (cert, key) = (
            cert.to_string_lossy().into_owned(),
            key.to_string_lossy().into_owned(),
        );
        s.curl(&["--cert", &cert, "--key", &key, "-u", &user], "/metrics")
    };
    let allowed = with("allowed", &["prometheus.monitoring.svc"]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let other = with("other", &["grafana.monitoring.svc"]);
    assert_eq!(
        other.status, 0,
        "a certificate naming no allowed SAN got in: {other:?}"
    );
    // Compared exactly, as the exporter-toolkit does: a wildcard that
    // would match the allowed name as a server name is not it.
    let wildcard = with("wildcard", &["*.monitoring.svc"]);
    assert_eq!(
        wildcard.status, 0,
        "a wildcard certificate got in: {wildcard:?}"
    );
    // The kit's usual client certificate names 127.0.0.1 and localhost.
    assert_eq!(s.scrape("/metrics").status, 0);
    s.agent.stop();
}

/// Prometheus scrapes every second over TLS with a client certificate and
/// a password; the certificate and key are replaced under it (as a
/// cert-manager renewal does); the next handshake presents the new one and
/// no scrape fails.
#[test]
fn a_replaced_certificate_is_served_at_the_next_handshake_while_prometheus_scrapes() {
    require_tool("curl", "apt-get install curl (cargo xtask setup)");
    let s = secured("RequireAndVerifyClientCert", &[]);
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{}",
        s.scrape_config("keepalive-tls", "")
    ));
    let up = |p: &Prometheus| p.query(r#"up{job="keepalive-tls"} == 1"#);
    prom.wait_for(Duration::from_secs(15), |p| {
        (!up(p).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped over TLS:\n{}", prom.log()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.scrape("/healthz").server_subject().as_deref(),
        Some("CN=agent-1")
    );

    // Renamed into place, key first: for a moment the key does not fit
    // the certificate, which the agent must survive by keeping the old.
    let (cert, key) = s.pki.server("agent-2");
    let (new_cert, new_key) = (s.pki.dir.join("next.crt"), s.pki.dir.join("next.key"));
    write(&new_cert, &cert);
    write(&new_key, &key);
    std::fs::rename(&new_key, &s.server_key).expect("replacing the key");
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::rename(&new_cert, &s.server_cert).expect("replacing the certificate");
    let rotated = Instant::now();
    let deadline = rotated + Duration::from_secs(10);
    loop {
        if s.scrape("/healthz").server_subject().as_deref() == Some("CN=agent-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never served:\n{}",
            s.agent.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "rotation: new certificate served {:?} after the rename",
        rotated.elapsed()
    );
    std::thread::sleep(Duration::from_secs(8));
    // Every scrape of the last 20 s (the rotation inside) succeeded, and
    // none is missing: no gap between two beyond one interval (1 s, with
    // the scrape loop's jitter).
    let window = prom.query(r#"up{job="keepalive-tls"}[20s]"#);
    let samples: Vec<(f64, f64)> = window
        .first()
        .and_then(|s| s["values"].as_array())
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v[0].as_f64().unwrap_or(0.0),
                v[1].as_str().and_then(|x| x.parse().ok()).unwrap_or(-1.0),
            )
        })
        .collect();
    assert!(
        samples.len() >= 10,
        "{} scrapes in 20 s:\n{}",
        samples.len(),
        prom.log()
    );
    assert!(
        samples.iter().all(|(_, up)| *up == 1.0),
        "failed scrapes during the rotation: {samples:?}"
    );
    let gap = samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0, f64::max);
    assert!(
        gap < 2.5,
        "a scrape lost: {gap} s between two ({samples:?})"
    );
    eprintln!(
        "rotation: {} scrapes in 20 s, all up, longest gap {gap:.2} s",
        samples.len()
    );
    let m = s.agent.get("/metrics").1;
    assert!(
        value(
            &m,
            "keepalive_agent_web_config_reloads_total",
            &[("result", "success")]
        ) >= Some(1.0),
        "{m}"
    );
    assert_eq!(
        value(&m, "keepalive_agent_web_config_last_reload_successful", &[]),
        Some(1.0)
    );
    drop(prom);
    s.agent.stop();
}

/// A configuration the agent cannot use stops it before it touches the
/// kernel: exit 2, one line naming the field.
#[test]
fn a_bad_web_config_is_one_line_naming_the_field_and_exit_2() {
    let dir = prometheus::temp_dir("keepalive-web-bad");
    let pki = Pki::new(&dir);
    let (cert, _) = pki.write_server("server", "agent");
    let (_, other_key) = pki.write_server("other", "other");
    let hash = hash(PASSWORD);
    let cases: [(&str, String, &str); 6] = [
        (
            "unknown field",
            "tls_server_config:\n  certfile: server.crt\n".into(),
            "unknown field `certfile`",
        ),
        (
            "a password instead of its hash",
            format!("basic_auth_users:\n  {USER}: {PASSWORD}\n"),
            "basic_auth_users.prometheus: not a bcrypt hash",
        ),
        (
            "a missing file",
            "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n".into(),
            "tls_server_config.cert_file: ",
        ),
        (
            "a key that is not the certificate's",
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
                cert.display(),
                other_key.display()
            ),
            "tls_server_config.key_file: does not fit cert_file",
        ),
        (
            "an e-mail address as an allowed SAN",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [ops@example.com]\n".into(),
            "tls_server_config.client_allowed_sans: ops@example.com: only DNS names and IP addresses",
        ),
        (
            "a CA without a policy",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n".into(),
            "tls_server_config.client_ca_file: given with client_auth_type NoClientCert",
        ),
    ];
    for (what, text, expected) in cases {
        let path = dir.join("web.yml");
        write(&path, &text);
        let p = path.to_string_lossy().into_owned();
        let exited = match Agent::launch(Launch {
            args: &["--web.config.file", &p],
            ..Launch::default()
        }) {
            Ok(a) => {
                a.kill();
                panic!("{what}: the agent started");
            }
            Err(e) => e,
        };
        assert_eq!(exited.status.code(), Some(2), "{what}: {exited:?}");
        let last = exited.stderr.last().cloned().unwrap_or_default();
        assert!(
            last.contains("--web.config.file") && last.contains(expected),
            "{what}: expected …{expected}…, got {:?}",
            exited.stderr
        );
    }
    let missing = Agent::launch(Launch {
        args: &["--web.config.file", "/nonexistent/web.yml"],
        ..Launch::default()
    })
    .map(|a| a.kill())
    .expect_err("started without its web config");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        missing
            .stderr
            .last()
            .is_some_and(|l| l.contains("/nonexistent/web.yml: No such file")),
        "{:?}",
        missing.stderr
    );
}

/// The metric names of `series`, labels left out.
fn families(series: &BTreeSet<String>) -> BTreeSet<String> {
    series
        .iter()
        .map(|s| s.split('{').next().unwrap_or(s).to_owned())
        .collect()
}
