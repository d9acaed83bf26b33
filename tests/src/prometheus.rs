//! A real Prometheus server (Debian's `prometheus` package) on loopback,
//! for tests that check dashboards and alert rules against what Prometheus
//! makes of the agent's metrics. Its storage lives in a temporary folder;
//! the server is stopped and the folder removed on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The server binary: `PROMETHEUS_BIN`, else `prometheus` on PATH.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return p.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "no prometheus server on PATH: install the Debian package `prometheus` (cargo xtask setup does)"
            )
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh folder under the system's temporary directory, removed by the
/// owner.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Prometheus {
    /// Starts a server with `config` (prometheus.yml text) and waits until
    /// it answers /-/ready.
    pub fn start(config: &str) -> Prometheus {
        let dir = temp_dir("keepalive-prometheus");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("writing prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("creating the log");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            if p.get_status("/-/ready") == Some(200) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The folder holding the config, the data and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the server logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn get_status(&self, path: &str) -> Option<u16> {
        ureq::get(&format!("{}{path}", self.url))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// GET an API path with query parameters; returns `data` of a
    /// `status: success` answer, panics with the error otherwise.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.url);
        let mut req = ureq::get(&url).config().http_status_as_error(false).build();
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let body = req
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .into_body()
            .read_to_string()
            .expect("reading the answer");
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url} {params:?}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "GET {url} {params:?}: {body}");
        v["data"].clone()
    }

    /// An instant query: the result vector (or scalar, as one sample).
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", promql)]);
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                data["result"].as_array().cloned().unwrap_or_default()
            }
            Some("scalar") | Some("string") => {
                vec![serde_json::json!({"metric": {}, "value": data["result"]})]
            }
            other => panic!("{promql}: unexpected result type {other:?}"),
        }
    }

    /// The alerts the rule manager holds (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts", &[])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every loaded rule, across groups.
    pub fn rules(&self) -> Vec<Value> {
        self.api("/api/v1/rules", &[])["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Values of `label` on series matching `selector` (what Grafana's
    /// `label_values(selector, label)` lists).
    pub fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        self.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", selector)],
        )
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
    }

    /// Polls `probe` every 250 ms until it returns Some or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut probe: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe(self) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The float value of a sample from `query` (`[ts, "value"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
