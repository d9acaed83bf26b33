//! The agent under test as a child process: started with any wrapper
//! (`setpriv`), arguments and environment; its stdout read as typed
//! [`Line`]s, its stderr captured (and shown when a test fails); signalled,
//! stopped or killed; asked over HTTP ([`http`]). The one way every suite
//! and `cargo xtask bench` run the agent.

mod http;

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use keepalive_api::{Line, Ready, Record, RecordKind, Stopped};

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

/// `PREFIX… keepalive-agent ARGS…` as a command.
pub fn command(prefix: &[&str]) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(binary());
            c
        }
        None => Command::new(binary()),
    }
}

/// Starts `cmd` with stdin closed and stdout and stderr piped to us.
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting keepalive-agent")
}

/// How to start the agent.
#[derive(Clone, Debug, Default)]
pub struct Launch<'a> {
    /// A wrapper the agent runs under (`setpriv …`).
    pub prefix: &'a [&'a str],
    /// Arguments after `run --json --listen 127.0.0.1:0`.
    pub args: &'a [&'a str],
    /// On top of ours (`KEEPALIVE_LOG=info`).
    pub env: &'a [(&'a str, &'a str)],
}

/// A running agent.
pub struct Agent {
    child: Child,
    lines: Receiver<Line>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Every record received so far, in order.
    pub records: Vec<Record>,
    pub ready: Ready,
    stopped: Option<Stopped>,
}

/// An agent that ended before printing `ready`.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub records: Vec<Record>,
    pub stderr: Vec<String>,
}

fn spawn_reader<R: std::io::Read + Send + 'static>(
    from: R,
    mut each: impl FnMut(String) -> bool + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if !each(line) {
                break;
            }
        }
    })
}

impl Agent {
    /// `keepalive-agent run --json --listen 127.0.0.1:0 ARGS…`; panics
    /// unless it becomes ready.
    pub fn start(args: &[&str]) -> Agent {
        Agent::launch(Launch {
            args,
            ..Launch::default()
        })
        .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"))
    }

    /// Starts the agent as `how` says; Err when it exits before `ready`.
    pub fn launch(how: Launch<'_>) -> Result<Agent, Exited> {
        crate::require_root();
        let mut cmd = command(how.prefix);
        cmd.args(["run", "--json", "--listen", "127.0.0.1:0"])
            .args(how.args)
            .env("KEEPALIVE_LOG", "info")
            // The kit's namespaces are `ip netns` ones, no pod's: their
            // series are told apart by inode (a test's env may say false).
            .env("KEEPALIVE_NETNS_LABEL", "true")
            .envs(how.env.iter().copied());
        let mut child = spawn_piped(&mut cmd);
        let (tx, lines) = mpsc::channel();
        spawn_reader(child.stdout.take().expect("stdout"), move |line| {
            let line = Line::parse(&line)
                .unwrap_or_else(|e| panic!("the agent printed a line that is not its schema: {e}"));
            tx.send(line).is_ok()
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err_reader = spawn_reader(child.stderr.take().expect("stderr"), move |line| {
            sink.lock().expect("stderr lines").push(line);
            true
        });
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(Line::Ready(ready)) => {
                    return Ok(Agent {
                        child,
                        lines,
                        stderr,
                        records,
                        ready,
                        stopped: None,
                    });
                }
                Ok(Line::Record(r)) => records.push(*r),
                Ok(Line::Stopped(_)) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("waiting for the agent");
                    let _ = err_reader.join();
                    let stderr = stderr.lock().expect("stderr lines").clone();
                    return Err(Exited {
                        status,
                        records,
                        stderr,
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "agent neither ready nor gone after 20 s; stderr:\n{}",
                    stderr.lock().expect("stderr lines").join("\n")
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// How many stderr lines so far (a mark for [`Agent::stderr_since`]).
    pub fn stderr_len(&self) -> usize {
        self.stderr.lock().expect("stderr lines").len()
    }

    pub fn stderr_since(&self, mark: usize) -> Vec<String> {
        self.stderr.lock().expect("stderr lines")[mark..].to_vec()
    }

    /// Waits until `pred` holds for the stderr lines after `mark`.
    pub fn wait_stderr(
        &self,
        mark: usize,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> bool {
        crate::wait::eventually(timeout, || pred(&self.stderr_since(mark)))
    }

    /// Collects records until one matches `pred` or `timeout` passes.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Record) -> bool,
    ) -> Option<Record> {
        if let Some(r) = self.records.iter().find(|r| pred(r)) {
            return Some(r.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(Line::Record(r)) => {
                    self.records.push(*r.clone());
                    if pred(&r) {
                        return Some(*r);
                    }
                }
                Ok(Line::Stopped(s)) => self.stopped = Some(s),
                Ok(Line::Ready(_)) => panic!("a second `ready` line"),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "agent exited early: {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr().join("\n")
                ),
            }
        }
        None
    }

    /// Takes in whatever arrived within `settle`.
    pub fn settle(&mut self, settle: Duration) {
        let _ = self.wait_for(settle, |_| false);
    }

    /// Records of `event` kind about the socket with this cookie.
    pub fn of(&self, event: RecordKind, cookie: u64) -> Vec<&Record> {
        of(&self.records, event, cookie)
    }

    /// SIGTERM, then the final `stopped` line; the exit must be clean.
    pub fn stop(self) -> (Vec<Record>, Stopped) {
        self.stop_with(libc::SIGTERM)
    }

    /// `sig` (one that stops the agent), then the final `stopped` line;
    /// the exit must be clean.
    pub fn stop_with(mut self, sig: i32) -> (Vec<Record>, Stopped) {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.stopped.is_none() && Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(Line::Record(r)) => self.records.push(*r),
                Ok(Line::Stopped(s)) => self.stopped = Some(s),
                Ok(Line::Ready(_)) => panic!("a second `ready` line"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let Some(stopped) = self.stopped.take() else {
            panic!(
                "no `stopped` line after SIGTERM; stderr:\n{}",
                self.stderr().join("\n")
            )
        };
        let status = self.child.wait().expect("waiting for the agent");
        assert!(
            status.success(),
            "agent exited with {status}; stderr:\n{}",
            self.stderr().join("\n")
        );
        (std::mem::take(&mut self.records), stopped)
    }

    /// SIGKILL: no chance to clean up. Returns the exit status.
    pub fn kill(mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("waiting for the agent")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// Records of `event` kind about the socket with this cookie.
pub fn of(records: &[Record], event: RecordKind, cookie: u64) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.event == event && r.cookie == cookie)
        .collect()
}

/// Ends a child still running: SIGTERM, and SIGKILL after 10 s.
pub fn terminate(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        terminate(&mut self.child);
        if std::thread::panicking() {
            eprintln!("agent stderr:\n{}", self.stderr().join("\n"));
        }
    }
}
