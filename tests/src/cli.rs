//! The agent binary as a short-lived command (bad flags, the CLI), with a
//! time limit.

use std::{
    io::Read as _,
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use crate::agent::{command, spawn_piped};

/// What a short-lived command did.
#[derive(Debug)]
pub struct Outcome {
    /// None when killed (by the timeout or a signal).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs the agent binary with `args` and `env` (on top of ours), killing
/// it after `timeout`.
pub fn run_agent_cli(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Outcome {
    run_with_timeout(&[], args, env, timeout)
}

/// `PREFIX… keepalive-agent ARGS…`, killed after `timeout`.
pub fn run_with_timeout(
    prefix: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Outcome {
    let mut cmd = command(prefix);
    cmd.args(args).envs(env.iter().copied());
    let mut child = spawn_piped(&mut cmd);
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if Instant::now() > deadline {
            timed_out = true;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            break child.wait().expect("waiting");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}
