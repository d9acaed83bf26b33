//! Data-path cost of the TC classifiers: loopback TCP in a namespace of its
//! own, with the agent's classifiers detached (`--no-tc`) and attached.
//! Two loads: bulk throughput (64 KiB writes, few large GSO packets) and a
//! 64-byte ping-pong (the packet rate: every segment is small enough for
//! the classifiers to parse). Rounds alternate the order (ABBA) after a
//! discarded warm-up, and medians are compared, because a 2-core machine's
//! round-to-round noise is larger than the cost measured. A last round with
//! `kernel.bpf_stats_enabled` gives each program's time per packet and its
//! share of all CPU time spent (the stats' own clock reads are kept out of
//! the throughput rounds), for ours and for do-nothing classifiers attached
//! the same way: the difference is what our parsing costs a packet. A third
//! setting in the same rounds runs tcpdump with the runbooks' keepalive
//! filter instead (`tcpdump.rs`): what users pay today for the same view.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{Agent, Netns, tcpdump::Capture};

/// Bytes per second of one bulk TCP flow over the namespace's loopback.
fn bulk(ns: &Netns, for_: Duration) -> anyhow::Result<f64> {
    ns.run(|| -> anyhow::Result<f64> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let reader = std::thread::spawn(move || -> std::io::Result<u64> {
            let (mut s, _) = l.accept()?;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                total += n as u64;
            }
        });
        let mut c = TcpStream::connect(addr)?;
        let chunk = vec![7u8; 1 << 16];
        let t = Instant::now();
        while t.elapsed() < for_ {
            c.write_all(&chunk)?;
        }
        drop(c);
        let bytes = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        Ok(bytes as f64 / t.elapsed().as_secs_f64())
    })?
}

const PING: usize = 64;

/// Round trips per second of a 64-byte ping-pong (TCP_NODELAY) over the
/// namespace's loopback: two small segments, four classifier runs, each.
fn ping_pong(ns: &Netns, for_: Duration) -> anyhow::Result<f64> {
    ns.run(|| -> anyhow::Result<f64> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let echo = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut s, _) = l.accept()?;
            s.set_nodelay(true)?;
            let mut buf = [0u8; PING];
            loop {
                match s.read_exact(&mut buf) {
                    Ok(()) => s.write_all(&buf)?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        });
        let mut c = TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        let mut buf = [1u8; PING];
        let t = Instant::now();
        let mut trips = 0u64;
        while t.elapsed() < for_ {
            c.write_all(&buf)?;
            c.read_exact(&mut buf)?;
            trips += 1;
        }
        let rate = trips as f64 / t.elapsed().as_secs_f64();
        drop(c);
        echo.join()
            .map_err(|_| anyhow::anyhow!("echo panicked"))??;
        Ok(rate)
    })?
}

/// What watches the rounds' loads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watcher {
    /// The agent with `--no-tc`: nothing on the data path.
    Detached,
    /// The agent with its classifiers.
    Classifiers,
    /// The agent with `--no-tc`, and tcpdump with the runbooks' filter on
    /// the loads' interface (what users run today).
    Tcpdump,
}

/// One load's rate and the CPU-seconds of its watcher's process (the
/// agent's, or tcpdump's), with tcpdump's own count of packets captured.
struct Watched {
    rate: f64,
    cpu_s: f64,
    captured: Option<u64>,
}

/// (bulk, ping-pong) as `watcher` watches them.
fn round(ns: &Netns, watcher: Watcher, window: Duration) -> anyhow::Result<(Watched, Watched)> {
    let agent = Agent::start(if watcher == Watcher::Classifiers {
        &[]
    } else {
        &["--no-tc"]
    })?;
    let measured = (
        watched(ns, &agent, watcher, || bulk(ns, window))?,
        watched(ns, &agent, watcher, || ping_pong(ns, window))?,
    );
    agent.stop()?;
    Ok(measured)
}

fn watched(
    ns: &Netns,
    agent: &Agent,
    watcher: Watcher,
    load: impl FnOnce() -> anyhow::Result<f64>,
) -> anyhow::Result<Watched> {
    if watcher == Watcher::Tcpdump {
        let capture = Capture::start(ns, "lo")?;
        let rate = load()?;
        let c = capture.stop()?;
        return Ok(Watched {
            rate,
            cpu_s: c.cpu_s,
            captured: c.packets,
        });
    }
    let (cpu0, _, _) = agent.usage();
    let rate = load()?;
    let (cpu1, _, _) = agent.usage();
    Ok(Watched {
        rate,
        cpu_s: cpu1 - cpu0,
        captured: None,
    })
}

/// CPU time spent by all CPUs (not idle, not iowait), in ns, from /proc/stat.
fn busy_cpu_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    busy * 1_000_000_000 / hz
}

/// Total (run time ns, runs) of the programs called `name`, from
/// `bpftool prog show` (needs kernel.bpf_stats_enabled).
fn prog_stats(name: &str) -> (u64, u64) {
    let Ok(out) = crate::cmd::output("bpftool", &["prog", "show", "-j"]) else {
        return (0, 0);
    };
    let progs: Value = serde_json::from_str(&out).unwrap_or_default();
    let mut total = (0, 0);
    for p in progs.as_array().into_iter().flatten() {
        if p["name"] == name {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    total
}

/// The classifiers a stats round measures: ours, or the do-nothing ones
/// attached the same way (the agent's hidden `--tc-baseline`), whose cost
/// is the hook's and the stats' own (~20 ns of clock reads).
#[derive(Clone, Copy)]
enum Classifiers {
    Ours,
    Baseline,
}

impl Classifiers {
    fn args(self) -> &'static [&'static str] {
        match self {
            Classifiers::Ours => &[],
            Classifiers::Baseline => &["--tc-baseline"],
        }
    }

    /// (egress, ingress) program names.
    fn programs(self) -> (&'static str, &'static str) {
        match self {
            Classifiers::Ours => ("tc_egress", "tc_ingress"),
            Classifiers::Baseline => ("tc_noop_egress", "tc_noop_ingress"),
        }
    }
}

/// Per-packet cost of each classifier and their share of all CPU time
/// while `load` runs.
fn stats_round(
    classifiers: Classifiers,
    load: impl FnOnce() -> anyhow::Result<f64>,
) -> anyhow::Result<Value> {
    let agent = Agent::start(classifiers.args())?;
    let (egress, ingress) = classifiers.programs();
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let (e0, i0, cpu0) = (prog_stats(egress), prog_stats(ingress), busy_cpu_ns());
    let t = Instant::now();
    let result = load();
    let wall_ns = t.elapsed().as_nanos() as f64;
    let (e1, i1, cpu1) = (prog_stats(egress), prog_stats(ingress), busy_cpu_ns());
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    agent.stop()?;
    result?;
    let per = |a: (u64, u64), b: (u64, u64)| {
        let runs = b.1 - a.1;
        (runs > 0).then(|| (b.0 - a.0) as f64 / runs as f64)
    };
    let prog_ns = (e1.0 - e0.0) + (i1.0 - i0.0);
    let cpu_ns = cpu1.saturating_sub(cpu0);
    Ok(json!({
        "egress_ns_per_packet": per(e0, e1),
        "egress_packets": e1.1 - e0.1,
        "ingress_ns_per_packet": per(i0, i1),
        "ingress_packets": i1.1 - i0.1,
        "cpu_share_percent": (cpu_ns > 0).then(|| 100.0 * prog_ns as f64 / cpu_ns as f64),
        "core_percent": 100.0 * prog_ns as f64 / wall_ns,
    }))
}

pub fn overhead(window: Duration, rounds: usize) -> anyhow::Result<Value> {
    let ns = Netns::new("kabenchtc")?;
    eprintln!("bench: TC warm-up round (discarded)…");
    round(&ns, Watcher::Detached, window)?;
    let mut by = [Vec::new(), Vec::new(), Vec::new()];
    let watchers = [Watcher::Detached, Watcher::Classifiers, Watcher::Tcpdump];
    for r in 0..rounds {
        eprintln!("bench: TC round {}/{rounds}…", r + 1);
        // Rotated, and reversed every other round: none always goes first.
        let mut order: Vec<usize> = (0..watchers.len()).collect();
        order.rotate_left(r % watchers.len());
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            by[i].push(round(&ns, watchers[i], window)?);
        }
    }
    eprintln!("bench: TC per-packet cost (bpf_stats), ours and a do-nothing baseline…");
    let bulk_stats = stats_round(Classifiers::Ours, || bulk(&ns, window))?;
    let bulk_base = stats_round(Classifiers::Baseline, || bulk(&ns, window))?;
    let ping_stats = stats_round(Classifiers::Ours, || ping_pong(&ns, window))?;
    let ping_base = stats_round(Classifiers::Baseline, || ping_pong(&ns, window))?;
    let [off, on, dump] = &by;
    let col = |v: &[(Watched, Watched)], f: fn(&(Watched, Watched)) -> f64| {
        v.iter().map(f).collect::<Vec<_>>()
    };
    let (bulk_off, bulk_on, bulk_dump) = (
        col(off, |m| m.0.rate),
        col(on, |m| m.0.rate),
        col(dump, |m| m.0.rate),
    );
    let (ping_off, ping_on, ping_dump) = (
        col(off, |m| m.1.rate),
        col(on, |m| m.1.rate),
        col(dump, |m| m.1.rate),
    );
    let (b0, b1, b2) = (median(&bulk_off), median(&bulk_on), median(&bulk_dump));
    let (p0, p1, p2) = (median(&ping_off), median(&ping_on), median(&ping_dump));
    let gbit = |v: &[f64]| v.iter().map(|b| b * 8.0 / 1e9).collect::<Vec<_>>();
    let core = |v: &[(Watched, Watched)], f: fn(&(Watched, Watched)) -> f64| {
        100.0 * median(&col(v, f)) / window.as_secs_f64()
    };
    let captured = |v: &[(Watched, Watched)], f: fn(&(Watched, Watched)) -> Option<u64>| {
        median(&v.iter().filter_map(f).map(|n| n as f64).collect::<Vec<_>>())
    };
    Ok(json!({
        "throughput_detached_gbit_s": b0 * 8.0 / 1e9,
        "throughput_attached_gbit_s": b1 * 8.0 / 1e9,
        "throughput_tcpdump_gbit_s": b2 * 8.0 / 1e9,
        "cost_percent": 100.0 * (1.0 - b1 / b0),
        "tcpdump_cost_percent": 100.0 * (1.0 - b2 / b0),
        "rounds_detached_gbit_s": gbit(&bulk_off),
        "rounds_attached_gbit_s": gbit(&bulk_on),
        "rounds_tcpdump_gbit_s": gbit(&bulk_dump),
        "ping_pong_detached_per_s": p0,
        "ping_pong_attached_per_s": p1,
        "ping_pong_tcpdump_per_s": p2,
        "ping_pong_cost_percent": 100.0 * (1.0 - p1 / p0),
        "ping_pong_tcpdump_cost_percent": 100.0 * (1.0 - p2 / p0),
        "rounds_ping_pong_detached_per_s": ping_off,
        "rounds_ping_pong_attached_per_s": ping_on,
        "rounds_ping_pong_tcpdump_per_s": ping_dump,
        // Medians over the rounds, % of a core: the watcher's own process.
        "agent_bulk_core_percent": core(on, |m| m.0.cpu_s),
        "agent_ping_pong_core_percent": core(on, |m| m.1.cpu_s),
        "tcpdump_bulk_core_percent": core(dump, |m| m.0.cpu_s),
        "tcpdump_ping_pong_core_percent": core(dump, |m| m.1.cpu_s),
        "tcpdump_bulk_captured": captured(dump, |m| m.0.captured),
        "tcpdump_ping_pong_captured": captured(dump, |m| m.1.captured),
        "bulk_stats": bulk_stats,
        "bulk_baseline_stats": bulk_base,
        "ping_pong_stats": ping_stats,
        "ping_pong_baseline_stats": ping_base,
    }))
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
