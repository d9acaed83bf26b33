//! A stdout nobody drains (`keepalive-agent run | sleep 60`, a FIFO whose
//! reader never reads): the agent keeps serving and counting, drops the
//! lines it cannot write (counted), and stops on SIGTERM at once.

use std::{
    os::unix::fs::OpenOptionsExt as _,
    process::{Command, Stdio},
};

use keepalive_tests::{agent, http::get_within, metrics::value, prometheus};

use super::*;

/// A FIFO with a reader that never reads, and the writing end for the agent.
struct StalledFifo {
    dir: std::path::PathBuf,
    _reader: std::fs::File,
    writer: Option<std::fs::File>,
}

impl StalledFifo {
    fn new() -> StalledFifo {
        let dir = prometheus::temp_dir("keepalive-fifo");
        let path = dir.join("stdout");
        let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(status.success());
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("opening the FIFO's reader");
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("opening the FIFO's writer");
        StalledFifo {
            dir,
            _reader: reader,
            writer: Some(writer),
        }
    }
}

impl Drop for StalledFifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One scrape within 2 s.
fn metrics_within_2s(base: &str) -> Option<String> {
    let url = format!("{base}/metrics");
    let (status, body) = get_within(&url, "*/*", Some(Duration::from_secs(2))).ok()?;
    (status == 200).then_some(body)
}

#[test]
fn a_stdout_nobody_reads_blocks_nothing_and_sigterm_still_stops() {
    let mut fifo = StalledFifo::new();
    let ns = Netns::new("kfifo");
    let port = prometheus::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = agent::command(&[])
        .args(["run", "--json", "--all-events", "--inventory-seconds", "1"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("KEEPALIVE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(fifo.writer.take().expect("writer"))
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the agent");
    let pid = child.id();
    assert!(
        eventually(Duration::from_secs(20), || metrics_within_2s(&base)
            .is_some()),
        "the agent never served"
    );
    let held = held_by(pid);
    // Thousands of lines: state changes of a connection churn (the FIFO
    // takes 64 KiB, the agent's queue 8192 lines), and keepalive probes.
    let _pairs = ns.run(|| {
        connection_churn(6000);
        keepalive_pairs(50)
    });
    std::thread::sleep(Duration::from_secs(3));
    for path in ["/livez", "/healthz", "/metrics"] {
        let status = raw_get_status(
            &format!("127.0.0.1:{port}"),
            path.as_bytes(),
            Duration::from_secs(2),
        );
        assert_eq!(status, Some(200), "{path} while stdout is stalled");
    }
    let text = metrics_within_2s(&base).expect("/metrics");
    let dropped = value(
        &text,
        "keepalive_agent_output_lines_dropped_total",
        &[("stream", "stdout")],
    );
    let probes = value(&text, "keepalive_agent_kernel_probes_total", &[]);
    let started = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let exited = eventually(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let took = started.elapsed();
    let status = child.wait().expect("waiting for the agent");
    eprintln!(
        "stalled stdout: {dropped:?} lines dropped, {probes:?} probes counted, stopped in {took:?} ({status})"
    );
    assert!(
        exited && took < Duration::from_secs(2),
        "SIGTERM took {took:?}"
    );
    assert!(status.success(), "{status}");
    assert!(
        dropped.is_some_and(|d| d > 0.0),
        "no line counted as dropped"
    );
    assert!(probes.is_some_and(|p| p > 0.0));
    // The kernel frees a process's BPF objects soon after it exits.
    let released = eventually(Duration::from_secs(5), || still_alive(&held).is_empty());
    assert!(released, "left behind: {:?}", still_alive(&held));
}
