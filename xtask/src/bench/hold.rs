//! The benchmark's idle keepalive connections, held by helper processes.
//! One process may not open more descriptors than its hard RLIMIT_NOFILE
//! (20000 on these machines, and raising it needs CAP_SYS_RESOURCE, which
//! this sandbox's root lacks), so tens of thousands of connections are
//! spread over several holders: the xtask binary's hidden `bench-hold`
//! command, run inside the benchmark's namespace with `ip netns exec`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Connections per holder: two descriptors each, under a 20000 limit.
const PER_HOLDER: usize = 8_000;

/// The connections' keepalive timing.
#[derive(Clone, Copy)]
pub enum Timing {
    /// 1 s idle and interval: a probe a second each.
    Fast,
    /// SO_KEEPALIVE alone: the namespace's sysctls (7200 s by default), no
    /// probe due in a benchmark's window.
    Sysctl,
}

/// Running holders; closing their stdin (on drop) closes every connection.
pub struct Holders(Vec<Child>);

impl Holders {
    /// `n` connections in the namespace `netns`, ready when this returns;
    /// `timing` says whose keepalive timing they have.
    pub fn spawn(netns: &str, n: usize, timing: Timing) -> anyhow::Result<Holders> {
        Self::spawn_by(netns, n, PER_HOLDER, timing)
    }

    /// As [`Holders::spawn`], `per_holder` connections per process at most
    /// (processes, as a node's pods have them).
    pub fn spawn_by(
        netns: &str,
        n: usize,
        per_holder: usize,
        timing: Timing,
    ) -> anyhow::Result<Holders> {
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut holders = Holders(Vec::new());
        let mut left = n;
        while left > 0 {
            let conns = left.min(per_holder.clamp(1, PER_HOLDER));
            left -= conns;
            let child = Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(&exe)
                .args(["bench-hold", "--conns", &conns.to_string()])
                .args(match timing {
                    Timing::Fast => &[][..],
                    Timing::Sysctl => &["--sysctl-timing"][..],
                })
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting a connection holder")?;
            holders.0.push(child);
        }
        for child in &mut holders.0 {
            let mut line = String::new();
            if let Some(out) = child.stdout.as_mut() {
                BufReader::new(out).read_line(&mut line)?;
            }
            if line.trim() != "ready" {
                let mut err = String::new();
                if let Some(e) = child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                bail!("a connection holder failed: {}", err.trim());
            }
        }
        Ok(holders)
    }

    /// Both sets, held together.
    pub fn join(mut self, mut other: Holders) -> Holders {
        self.0.append(&mut other.0);
        Holders(std::mem::take(&mut self.0))
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(child.stdin.take());
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// The `bench-hold` command: opens `conns` connections, says `ready`, and
/// holds them until its stdin closes.
pub fn hold(conns: usize, sysctl_timing: bool) -> anyhow::Result<()> {
    raise_nofile()?;
    let timing = if sysctl_timing {
        Timing::Sysctl
    } else {
        Timing::Fast
    };
    let socks = connections(conns, timing)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(socks);
    Ok(())
}

/// The soft descriptor limit raised to the hard one.
fn raise_nofile() -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `n` keepalive connections (1 s idle, 1 s interval, 100 probes; or the
/// sysctls' timing) over loopback, with their accepted ends.
fn connections(n: usize, timing: Timing) -> anyhow::Result<Vec<TcpStream>> {
    let mut all = Vec::with_capacity(2 * n);
    let l = TcpListener::bind("127.0.0.1:0")?;
    let to = l.local_addr()?;
    for _ in 0..n {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        match timing {
            Timing::Fast => s.set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(1))
                    .with_interval(Duration::from_secs(1))
                    .with_retries(100),
            )?,
            Timing::Sysctl => s.set_keepalive(true)?,
        }
        s.connect(&to.into())
            .with_context(|| format!("connection {} of {n}", all.len() / 2 + 1))?;
        all.push(TcpStream::from(s));
        all.push(l.accept()?.0);
    }
    Ok(all)
}
