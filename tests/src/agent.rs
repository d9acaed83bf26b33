//! The agent under test, as a child process printing JSON lines. Stopped
//! with SIGTERM on drop.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use serde_json::Value;

pub struct Agent {
    child: Child,
    lines: Receiver<Value>,
    /// Every record received so far, in order.
    pub records: Vec<Value>,
    pub ready: Value,
}

/// The agent binary: `KEEPALIVE_AGENT_BIN`, else the workspace's release build.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEPALIVE_AGENT_BIN") {
        return p.into();
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/keepalive-agent");
    assert!(
        p.exists(),
        "{} not built: run `cargo xtask test`",
        p.display()
    );
    p
}

impl Agent {
    /// Starts `keepalive-agent run --json EXTRA…` and waits for its `ready` line.
    pub fn start(extra: &[&str]) -> Agent {
        crate::require_root();
        let mut child = Command::new(binary())
            .args(["run", "--json", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KEEPALIVE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting keepalive-agent");
        let stdout = child.stdout.take().expect("agent stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("agent printed a line that is not JSON ({e}): {line}"),
                }
            }
        });
        let mut agent = Agent {
            child,
            lines,
            records: Vec::new(),
            ready: Value::Null,
        };
        agent.ready = agent
            .wait_for(Duration::from_secs(20), |r| r["event"] == "ready")
            .expect("agent did not become ready within 20 s");
        agent
    }

    /// Collects records until one matches `pred` or `timeout` passes.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(r) = self.records.iter().find(|r| pred(r)) {
            return Some(r.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.records.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("agent exited early: {}", self.exit_status())
                }
            }
        }
        None
    }

    /// The agent's exit status once its stdout closed; it may take a moment
    /// to be reaped after closing its pipe.
    fn exit_status(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => return "stdout closed, process still running".into(),
                Err(e) => return format!("unknown ({e})"),
            }
        }
    }

    /// Takes in whatever arrived within `settle`.
    pub fn settle(&mut self, settle: Duration) {
        let _ = self.wait_for(settle, |_| false);
    }

    /// Records of `event` kind about the socket with this cookie.
    pub fn of(&self, event: &str, cookie: u64) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["event"] == event && r["cookie"] == cookie)
            .collect()
    }

    /// Records of `event` kind whose local endpoint is `local`.
    pub fn at(&self, event: &str, local: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["event"] == event && r["local"] == local)
            .collect()
    }

    /// GET `path` from the agent's HTTP API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_with_accept(path, "*/*")
    }

    pub fn get_with_accept(&self, path: &str, accept: &str) -> (u16, String) {
        let url = format!(
            "http://{}{path}",
            self.ready["listen"].as_str().expect("listen in ready")
        );
        let resp = ureq::get(&url)
            .header("Accept", accept)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body()
                .read_to_string()
                .expect("reading the response"),
        )
    }

    /// GET a JSON document from the agent.
    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// SIGTERM, then the final `stopped` record (kernel counters).
    pub fn stop(mut self) -> (Vec<Value>, Value) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = self
            .wait_for(Duration::from_secs(10), |r| r["event"] == "stopped")
            .expect("agent printed no `stopped` record after SIGTERM");
        let status = self.child.wait().expect("waiting for the agent");
        assert!(status.success(), "agent exited with {status}");
        (std::mem::take(&mut self.records), stopped)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}
