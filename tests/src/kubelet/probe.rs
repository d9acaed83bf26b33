//! A container's startup, readiness and liveness probes, run as the
//! kubelet runs them (pkg/probe): httpGet against the pod's IP without
//! verifying the certificate and without credentials, a status of
//! 200-399 passing; exec in the container, exit 0 passing; tcpSocket a
//! connect. Timeouts, periods and thresholds are the manifest's.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde_json::Value;

#[derive(Clone, Debug)]
pub enum Action {
    Http {
        scheme: String,
        host: Option<String>,
        port: u16,
        path: String,
    },
    Exec(Vec<String>),
    Tcp {
        port: u16,
    },
}

#[derive(Clone, Debug)]
pub struct Probe {
    /// `startupProbe`, `readinessProbe` or `livenessProbe`.
    pub kind: &'static str,
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

/// Runs a command in the container: Ok, or what failed.
pub type Exec<'a> = &'a dyn Fn(&[String], Duration) -> Result<(), String>;

fn seconds(v: &Value, default: u64) -> Duration {
    Duration::from_secs(v.as_u64().unwrap_or(default))
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(v: &Value, container: &Value) -> u16 {
    if let Some(n) = v.as_u64() {
        return n as u16;
    }
    let name = v.as_str().expect("a probe's port: a number or a port name");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("probe port {name:?} names none of the container's ports"))
        as u16
}

impl Probe {
    /// The container's probes, in the kubelet's order: startup first.
    pub fn all_of(container: &Value) -> Vec<Probe> {
        ["startupProbe", "readinessProbe", "livenessProbe"]
            .into_iter()
            .filter(|k| !container[*k].is_null())
            .map(|k| Probe::parse(k, &container[k], container))
            .collect()
    }

    fn parse(kind: &'static str, p: &Value, container: &Value) -> Probe {
        let action = if !p["httpGet"].is_null() {
            let h = &p["httpGet"];
            assert!(
                h["httpHeaders"].is_null(),
                "{kind}: httpHeaders are not sent by this test's kubelet"
            );
            Action::Http {
                scheme: h["scheme"].as_str().unwrap_or("HTTP").to_lowercase(),
                host: h["host"].as_str().map(String::from),
                port: port(&h["port"], container),
                path: h["path"].as_str().unwrap_or("/").to_string(),
            }
        } else if !p["exec"].is_null() {
            Action::Exec(
                p["exec"]["command"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
            )
        } else if !p["tcpSocket"].is_null() {
            Action::Tcp {
                port: port(&p["tcpSocket"]["port"], container),
            }
        } else {
            panic!("{kind}: a probe this test's kubelet cannot run (grpc?): {p}");
        };
        Probe {
            kind,
            action,
            initial_delay: seconds(&p["initialDelaySeconds"], 0),
            period: seconds(&p["periodSeconds"], 10),
            timeout: seconds(&p["timeoutSeconds"], 1),
            failure_threshold: p["failureThreshold"].as_u64().unwrap_or(3) as u32,
        }
    }

    /// The longest the kubelet waits for a first success.
    pub fn budget(&self) -> Duration {
        self.initial_delay + self.period * self.failure_threshold
    }

    /// An httpGet probe's URL: the pod's IP unless `host` is given.
    fn url(scheme: &str, host: &Option<String>, port: u16, path: &str, pod_ip: IpAddr) -> String {
        let host = host.clone().unwrap_or_else(|| url_host(pod_ip));
        format!("{scheme}://{host}:{port}{path}")
    }

    pub fn describe(&self, pod_ip: IpAddr) -> String {
        let what = match &self.action {
            Action::Http {
                scheme,
                host,
                port,
                path,
            } => format!("httpGet {}", Probe::url(scheme, host, *port, path, pod_ip)),
            Action::Exec(argv) => format!("exec {}", argv.join(" ")),
            Action::Tcp { port } => format!("tcpSocket :{port}"),
        };
        format!(
            "{} {what} (every {} s, timeout {} s, {} failures)",
            self.kind,
            self.period.as_secs(),
            self.timeout.as_secs(),
            self.failure_threshold
        )
    }

    /// One attempt.
    pub fn once(&self, pod_ip: IpAddr, exec: Exec) -> Result<(), String> {
        match &self.action {
            Action::Http {
                scheme,
                host,
                port,
                path,
            } => {
                let url = Probe::url(scheme, host, *port, path, pod_ip);
                let timeout = self.timeout.as_secs_f64().to_string();
                // The kubelet's client: no certificate check, no
                // credentials, its own user agent.
                let c = crate::tls::curl(
                    &[
                        "--insecure",
                        "--max-time",
                        &timeout,
                        "-H",
                        "User-Agent: kube-probe/1.30",
                    ],
                    &url,
                );
                if (200..400).contains(&c.status) {
                    Ok(())
                } else {
                    Err(format!(
                        "{url}: status {} (curl exit {}): {}",
                        c.status,
                        c.exit,
                        c.stderr.lines().last().unwrap_or_default()
                    ))
                }
            }
            Action::Exec(argv) => exec(argv, self.timeout),
            Action::Tcp { port } => {
                TcpStream::connect_timeout(&SocketAddr::new(pod_ip, *port), self.timeout)
                    .map(drop)
                    .map_err(|e| format!("connect :{port}: {e}"))
            }
        }
    }

    /// Probes as the kubelet does until the first success (its time since
    /// `since`) or `failure_threshold` failures (the last one's error).
    pub fn until_success(
        &self,
        since: Instant,
        pod_ip: IpAddr,
        exec: Exec,
    ) -> Result<Duration, String> {
        std::thread::sleep(self.initial_delay);
        let mut failures = 0;
        loop {
            let attempt = Instant::now();
            match self.once(pod_ip, exec) {
                Ok(()) => return Ok(since.elapsed()),
                Err(e) => {
                    failures += 1;
                    if failures >= self.failure_threshold {
                        return Err(format!("{failures} failures, the last: {e}"));
                    }
                }
            }
            std::thread::sleep(self.period.saturating_sub(attempt.elapsed()));
        }
    }
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}
