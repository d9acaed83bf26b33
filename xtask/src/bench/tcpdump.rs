//! `tcpdump` as an SRE runs it today to watch keepalives: the runbooks'
//! filter for zero-payload ACKs, text decoded to /dev/null, on the
//! interface the bench's load uses. The bench measures its cost on the
//! same loads as the classifiers' (#15).

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, ChildStderr, Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::Netns;

/// The keepalive-only filter of the users' runbooks: ACKs with no payload.
pub const KEEPALIVE_FILTER: &str = "tcp and (tcp[tcpflags] & tcp-ack != 0) and \
     (ip[2:2] - ((ip[0] & 0xf)<<2) - ((tcp[12] & 0xf0)>>2)) == 0";

/// A running capture; `stop` ends it and says what it cost.
pub struct Capture {
    child: Child,
    stderr: BufReader<ChildStderr>,
}

/// What a capture cost and saw.
pub struct Captured {
    /// User + system CPU-seconds of the tcpdump process.
    pub cpu_s: f64,
    /// Its own closing count ("N packets captured"), if it printed one.
    pub packets: Option<u64>,
}

impl Capture {
    /// tcpdump on `interface` of `ns`, returned once it says it listens.
    pub fn start(ns: &Netns, interface: &str) -> anyhow::Result<Capture> {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &ns.0, "tcpdump", "-i", interface, "-nn", "-l",
            ])
            .arg(KEEPALIVE_FILTER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        let mut stderr = BufReader::new(child.stderr.take().context("tcpdump's stderr")?);
        // "verbose output suppressed…", then "listening on IFACE…".
        let mut said = String::new();
        for _ in 0..4 {
            let mut line = String::new();
            if stderr.read_line(&mut line)? == 0 {
                break;
            }
            if line.contains("listening on") {
                return Ok(Capture { child, stderr });
            }
            said.push_str(&line);
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("tcpdump did not start: {}", said.trim())
    }

    /// SIGINT (tcpdump prints its counts), then its CPU time from wait4.
    pub fn stop(mut self) -> anyhow::Result<Captured> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling and reaping our own child; the Child is not
        // waited on again (it is forgotten below).
        let (status, usage) = unsafe {
            libc::kill(pid, libc::SIGINT);
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
                bail!("wait4 tcpdump: {}", std::io::Error::last_os_error());
            }
            (status, usage)
        };
        std::mem::forget(self.child);
        let mut rest = String::new();
        let _ = self.stderr.read_to_string(&mut rest);
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("tcpdump failed ({status:#x}): {}", rest.trim());
        }
        let packets = rest.lines().find_map(|l| {
            l.strip_suffix(" packets captured")
                .and_then(|n| n.trim().parse().ok())
        });
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Captured {
            cpu_s: s(usage.ru_utime) + s(usage.ru_stime),
            packets,
        })
    }
}

/// tcpdump beside our classifiers, on the TC step's loads and rounds.
pub fn print(tc: &serde_json::Value) {
    let f = |k: &str| tc[k].as_f64().unwrap_or(f64::NAN);
    let stats = |load: &str| tc[format!("{load}_stats")]["core_percent"].as_f64();
    println!(
        "side by side, tcpdump '<keepalive filter>' -nn -l > /dev/null on the same interface, same rounds (+: faster than detached):"
    );
    for (name, load, rate, unit) in [
        ("bulk", "bulk", "throughput_{}_gbit_s", "Gbit/s"),
        (
            "ping-pong",
            "ping_pong",
            "ping_pong_{}_per_s",
            "round trips/s",
        ),
    ] {
        let at = |who: &str| f(&rate.replace("{}", who));
        let cost = |who: &str| 100.0 * (1.0 - at(who) / at("detached"));
        let agent = f(&format!("agent_{load}_core_percent"));
        let classifiers = stats(load).unwrap_or(f64::NAN);
        let dump = f(&format!("tcpdump_{load}_core_percent"));
        println!(
            "        {name:<9}: tcpdump {} {unit} ({:+.1} %, {:.0} packets captured) vs ours {} ({:+.1} %): \
             ours / tcpdump = {:.3} of the rate; CPU tcpdump {dump:.1} % of a core vs ours {:.1} % (agent {agent:.1} % + classifiers {classifiers:.1} %): \
             tcpdump / ours = {:.1}x",
            shown(at("tcpdump")),
            -cost("tcpdump"),
            f(&format!("tcpdump_{load}_captured")),
            shown(at("attached")),
            -cost("attached"),
            at("attached") / at("tcpdump"),
            agent + classifiers,
            dump / (agent + classifiers),
        );
    }
}

/// Gbit/s with two decimals, round trips/s whole.
fn shown(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
