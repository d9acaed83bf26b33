//! `cargo xtask bench`: exactness, overhead and scale of the agent, each
//! figure measured in the same run as its baseline, printed beside its
//! target and written as JSON for later comparison. Runs as root in its own
//! network namespaces; speed targets live here, never in tests.

use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use keepalive_api::Stopped;
use keepalive_tests::agent::Launch;
use serde_json::{Value, json};

mod hold;
mod idle;
mod nowire;
mod reconcile;
mod scale;
mod soak;
mod tc;
mod tcpdump;

pub use hold::hold;
pub use soak::soak;

pub(crate) struct Netns(String);

impl Netns {
    pub(crate) fn new(name: &str) -> anyhow::Result<Netns> {
        // A namespace left by an interrupted run; usually there is none.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        crate::cmd::run("ip", &["netns", "add", name])?;
        crate::cmd::run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(Netns(name.into()))
    }

    /// Runs `f` on a thread inside the namespace.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let file = fs::File::open(format!("/run/netns/{}", self.0))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on an fd we own, this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(anyhow::anyhow!(
                        "setns: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
        })
    }

    pub(crate) fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(format!("/run/netns/{}", self.0))
            .map(|m| m.ino())
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The agent as a child (the test kit's, quiet): stopped with SIGTERM,
/// also when a benchmark fails half-way.
pub(crate) struct Agent {
    inner: keepalive_tests::agent::Agent,
    spawn_to_ready: Duration,
}

impl Agent {
    pub(crate) fn start(extra: &[&str]) -> anyhow::Result<Agent> {
        let started = Instant::now();
        let args: Vec<&str> = std::iter::once("--quiet")
            .chain(extra.iter().copied())
            .collect();
        let inner = keepalive_tests::agent::Agent::launch(Launch {
            args: &args,
            env: &[("KEEPALIVE_LOG", "warn")],
            ..Launch::default()
        })
        .map_err(|e| anyhow::anyhow!("the agent exited before `ready`: {e:?}"))?;
        Ok(Agent {
            inner,
            spawn_to_ready: started.elapsed(),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.addr())
    }

    /// (user+system CPU seconds, RSS MiB, peak RSS MiB)
    pub(crate) fn usage(&self) -> (f64, f64, f64) {
        let pid = self.inner.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let cpu = (field(11) + field(12)) / tck;
        let kib = |key: &str| {
            keepalive_tests::proc::status_field(&format!("/proc/{pid}/status"), key)
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (cpu, kib("VmRSS") / 1024.0, kib("VmHWM") / 1024.0)
    }

    pub(crate) fn stop(self) -> anyhow::Result<Stopped> {
        Ok(self.inner.stop().1)
    }
}

/// GET `http://ADDR/PATH` with the test kit's client: (status, body, how long).
fn fetch(url: &str) -> anyhow::Result<(u16, String, Duration)> {
    let started = Instant::now();
    let (status, body) = keepalive_tests::http::get_url(&format!("http://{url}"), "*/*");
    Ok((status, body, started.elapsed()))
}

fn get(url: &str) -> anyhow::Result<(u16, usize, Duration)> {
    fetch(url).map(|(status, body, t)| (status, body.len(), t))
}

/// Five scrapes of `/metrics`: (median ms, bytes of the last).
fn scrape_metrics(agent: &Agent) -> anyhow::Result<(f64, usize)> {
    let mut ms = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let (status, bytes, t) = get(&agent.url("/metrics"))?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        size = bytes;
        ms.push(t.as_secs_f64() * 1e3);
    }
    Ok((tc::median(&ms), size))
}

/// The agent's count of lost ring-buffer events, as of now.
fn events_lost(agent: &Agent) -> anyhow::Result<u64> {
    let (_, body, _) = fetch(&agent.url("/metrics"))?;
    body.lines()
        .find_map(|l| l.strip_prefix("keepalive_agent_events_lost_total "))
        .and_then(|v| v.trim().parse().ok())
        .context("keepalive_agent_events_lost_total missing from /metrics")
}

/// The calling thread's namespace's `TCPKeepAlive` (the test kit's reader).
pub(crate) fn tcp_keepalive_counter() -> u64 {
    keepalive_tests::netstat::tcp_ext("TCPKeepAlive")
}

/// Past the connections' first inventory (`--inventory-seconds 5`).
const FIRST_INVENTORY: Duration = Duration::from_secs(6);

fn exactness_and_scale(n: usize, window: Duration) -> anyhow::Result<Value> {
    let ns = Netns::new("kabench")?;
    let agent = Agent::start(&[
        "--max-sockets",
        &(4 * n + 1024).to_string(),
        "--inventory-seconds",
        "5",
    ])?;
    let before = ns.run(tcp_keepalive_counter)?;
    let drops_before = keepalive_tests::netstat::softnet_dropped();
    let (cpu_made, _, _) = agent.usage();
    let made = Instant::now();
    let socks = hold::Holders::spawn(&ns.0, n, hold::Timing::Fast)?;
    let setup_s = made.elapsed().as_secs_f64();
    // Opening the connections is a burst of state changes of its own (four
    // events per connection); the probes come from the window after it.
    let lost_in_setup = events_lost(&agent)?;
    // So is their first inventory (owners of the accepted ends found in
    // /proc, the table filled): a cost per connection, measured apart
    // from the window's cost per probe.
    std::thread::sleep(FIRST_INVENTORY);
    let (cpu0, _, _) = agent.usage();
    let at_window = ns.run(tcp_keepalive_counter)?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, rss, peak_rss) = agent.usage();
    let window_probes = ns.run(tcp_keepalive_counter)? - at_window;
    let (metrics_ms, metrics_bytes) = scrape_metrics(&agent)?;
    let (_, sockets_bytes, sockets_t) = get(&agent.url("/sockets"))?;
    drop(socks);
    std::thread::sleep(Duration::from_millis(500));
    let delta = ns.run(tcp_keepalive_counter)? - before;
    let dropped = keepalive_tests::netstat::softnet_dropped() - drops_before;
    let stopped = agent.stop()?;
    let c = &stopped.counters;
    let counted = c.probes;
    Ok(json!({
        "connections": n,
        "sockets": 2 * n,
        "setup_s": setup_s,
        "window_s": elapsed,
        "kernel_probes": delta,
        "agent_probes": counted,
        "difference": counted as i64 - delta as i64,
        // A probe goes unanswered here only when the loopback backlog
        // (net.core.netdev_max_backlog) dropped it: bursts of thousands of
        // timers overflow it. The agent's ACK count must be the rest.
        "softnet_dropped": dropped,
        "agent_acks": c.acks,
        "acks_difference": c.acks as i64 - (delta as i64 - dropped as i64),
        "events_lost": c.events_lost,
        "events_lost_in_setup": lost_in_setup,
        "connections_per_s": n as f64 / setup_s,
        "probes_per_s": window_probes as f64 / elapsed,
        "agent_cpu_percent": 100.0 * (cpu1 - cpu0) / elapsed,
        "setup_agent_cpu_s": cpu0 - cpu_made,
        "setup_agent_cpu_us_per_connection": (cpu0 - cpu_made) / n as f64 * 1e6,
        "agent_rss_mib": rss,
        "agent_peak_rss_mib": peak_rss,
        "metrics_ms_median": metrics_ms,
        "metrics_bytes": metrics_bytes,
        "sockets_ms": sockets_t.as_secs_f64() * 1e3,
        "sockets_bytes": sockets_bytes,
        "netns": ns.inode(),
        "agent_counters": c,
    }))
}

fn startup() -> anyhow::Result<Value> {
    let agent = Agent::start(&[])?;
    let v = json!({
        "spawn_to_ready_ms": agent.spawn_to_ready.as_secs_f64() * 1e3,
        "agent_startup_ms": agent.inner.ready.startup_ms,
    });
    agent.stop()?;
    Ok(v)
}

/// The ±1 % target against the rounds' own noise: each load's cost (median
/// attached against median detached) beside the spread of its rounds
/// ((max − min) / median, the larger of the two settings'); a cost smaller
/// than the spread is not a measurement.
fn print_round_spread(tc: &Value) {
    let rounds = |key: &str| -> Vec<f64> {
        tc[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        let mid = tc::median(v);
        100.0 * (hi - lo) / mid
    };
    let loads = [
        (
            "bulk throughput",
            "cost_percent",
            "rounds_detached_gbit_s",
            "rounds_attached_gbit_s",
        ),
        (
            "ping-pong round trips",
            "ping_pong_cost_percent",
            "rounds_ping_pong_detached_per_s",
            "rounds_ping_pong_attached_per_s",
        ),
    ];
    let figures: Vec<(&str, f64, f64, usize)> = loads
        .iter()
        .map(|(name, cost, off, on)| {
            let (off, on) = (rounds(off), rounds(on));
            let noise = spread(&off).max(spread(&on));
            (
                *name,
                tc[*cost].as_f64().unwrap_or(f64::NAN),
                noise,
                off.len(),
            )
        })
        .collect();
    let ok = figures.iter().all(|(_, cost, _, _)| cost.abs() <= 1.0);
    println!(
        "target: throughput and round trips within 1 % of detached: {}",
        verdict(ok)
    );
    for (name, cost, noise, n) in figures {
        println!(
            "        {name:<22}: {cost:+.1} % slower attached (median of {n} alternating rounds each; the rounds spread {noise:.1} %)"
        );
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// One row per step: counts, losses, cost, and whether the step was exact.
fn print_exactness(exact: &[Value]) {
    println!(
        "\n{:<8} {:>9} {:>12} {:>12} {:>6} {:>14} {:>10} {:>13} {:>8} {:>11} {:>11} {:>9} {:>8} {:>21}",
        "conns",
        "probes/s",
        "kernel",
        "agent",
        "diff",
        "lost (setup)",
        "agent CPU",
        "RSS/peak MiB",
        "/metrics",
        "/sockets",
        "exact",
        "acks",
        "dropped",
        "acks-(probes-dropped)"
    );
    for e in exact {
        let ok = e["difference"] == 0 && e["events_lost"] == 0;
        println!(
            "{:<8} {:>9.0} {:>12} {:>12} {:>6} {:>14} {:>9.1}% {:>13} {:>6.1}ms {:>9.1}ms {:>11} {:>9} {:>8} {:>21}",
            e["connections"],
            e["probes_per_s"].as_f64().unwrap_or(0.0),
            e["kernel_probes"],
            e["agent_probes"],
            e["difference"],
            format!("{} ({})", e["events_lost"], e["events_lost_in_setup"]),
            e["agent_cpu_percent"].as_f64().unwrap_or(0.0),
            format!(
                "{:.1}/{:.1}",
                e["agent_rss_mib"].as_f64().unwrap_or(0.0),
                e["agent_peak_rss_mib"].as_f64().unwrap_or(0.0)
            ),
            e["metrics_ms_median"].as_f64().unwrap_or(0.0),
            e["sockets_ms"].as_f64().unwrap_or(0.0),
            verdict(ok),
            e["agent_acks"],
            e["softnet_dropped"],
            e["acks_difference"]
        );
    }
}

/// Each target beside its figure.
fn print_verdicts(exact: &[Value], tc: &Value, start: &Value) {
    let last = exact.last().cloned().unwrap_or_default();
    let rate = |e: &Value| e["probes_per_s"].as_f64().unwrap_or(0.0);
    let all_exact = exact.iter().all(|e| e["difference"] == 0);
    let lossless = exact
        .iter()
        .filter(|e| e["events_lost"] == 0)
        .map(rate)
        .fold(0.0, f64::max);
    println!(
        "\ntarget: counts exact at >= 20k probes/s: {} (probes equal TCPKeepAlive at every step: {}; \
         0 events lost up to {lossless:.0} probes/s)",
        verdict(all_exact && lossless >= 20_000.0),
        all_exact,
    );
    for e in exact.iter().filter(|e| e["events_lost"] != 0) {
        let setup = e["events_lost_in_setup"].as_u64().unwrap_or(0);
        println!(
            "        at {:.0} probes/s: {} events lost, {setup} of them while {} connections opened ({:.0}/s, four state changes each)",
            rate(e),
            e["events_lost"],
            e["connections"],
            e["connections_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    let cost = tc["cost_percent"].as_f64().unwrap_or(f64::NAN);
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (bulk, ping) = (&tc["bulk_stats"], &tc["ping_pong_stats"]);
    println!(
        "target: TC classifiers < 3 % of loopback TCP throughput: {} ({cost:.1} %: median {:.2} attached vs {:.2} Gbit/s detached; \
         classifiers {:.2} % of all CPU time, egress {:.0} ns, ingress {:.0} ns per packet)",
        verdict(cost < 3.0),
        f(&tc["throughput_attached_gbit_s"]),
        f(&tc["throughput_detached_gbit_s"]),
        f(&bulk["cpu_share_percent"]),
        f(&bulk["egress_ns_per_packet"]),
        f(&bulk["ingress_ns_per_packet"]),
    );
    println!(
        "        packet rate, 64-byte ping-pong: {:.1} % ({:.0} attached vs {:.0} round trips/s detached; \
         classifiers {:.2} % of all CPU time, egress {:.0} ns, ingress {:.0} ns per packet)",
        f(&tc["ping_pong_cost_percent"]),
        f(&tc["ping_pong_attached_per_s"]),
        f(&tc["ping_pong_detached_per_s"]),
        f(&ping["cpu_share_percent"]),
        f(&ping["egress_ns_per_packet"]),
        f(&ping["ingress_ns_per_packet"]),
    );
    print_round_spread(tc);
    tcpdump::print(tc);
    // Net of the hook and the stats themselves: ours minus do-nothing
    // classifiers attached the same way, in the same run.
    let net = |load: &str, dir: &str| {
        let key = format!("{dir}_ns_per_packet");
        let ours = f(&tc[format!("{load}_stats")][&key]);
        let base = f(&tc[format!("{load}_baseline_stats")][&key]);
        (base, ours, ours - base)
    };
    let nets: Vec<(&str, &str, (f64, f64, f64))> = ["bulk", "ping_pong"]
        .into_iter()
        .flat_map(|load| ["egress", "ingress"].map(|dir| (load, dir, net(load, dir))))
        .collect();
    let worst = nets.iter().map(|n| n.2.2).fold(f64::NAN, f64::max);
    println!(
        "target: classifiers' net cost <= 20 ns per packet over a do-nothing baseline: {} (worst {worst:.0} ns)",
        verdict(worst <= 20.0)
    );
    for (load, dir, (base, ours, diff)) in &nets {
        println!(
            "        {load:<9} {dir:<7}: baseline {base:.0} ns, ours {ours:.0} ns, net {diff:+.0} ns"
        );
    }
    // CPU-seconds of the agent over the window ÷ the probes in it.
    let us_per_probe = last["agent_cpu_percent"].as_f64().unwrap_or(f64::NAN)
        / 100.0
        / last["probes_per_s"].as_f64().unwrap_or(f64::NAN)
        * 1e6;
    println!(
        "target: agent CPU <= 1 us per probe: {} ({us_per_probe:.1} us at {:.0} probes/s, past the connections' first inventory; \
         opening them and that inventory cost {:.1} us of agent CPU per connection)",
        verdict(us_per_probe <= 1.0),
        last["probes_per_s"].as_f64().unwrap_or(f64::NAN),
        last["setup_agent_cpu_us_per_connection"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    let rss = last["agent_rss_mib"].as_f64().unwrap_or(f64::NAN);
    let peak = last["agent_peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
    let metrics = last["metrics_ms_median"].as_f64().unwrap_or(f64::NAN);
    println!(
        "target: RSS < 64 MiB and /metrics < 100 ms at {} sockets: {} ({rss:.1} MiB, peak {peak:.1} MiB during inventories; {metrics:.1} ms)",
        last["sockets"],
        verdict(rss < 64.0 && metrics < 100.0)
    );
    let ready = start["spawn_to_ready_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "target: start-up < 2 s: {} ({ready:.0} ms)",
        verdict(ready < 2000.0)
    );
}

/// `--idle`: the idle node at each size alone.
pub fn idle_only(window_s: u64, quick: bool) -> anyhow::Result<()> {
    crate::require_root("the benchmark")?;
    let idle = idle::step(Duration::from_secs(window_s), quick)?;
    eprintln!("bench: reconciliation after lost events…");
    let reconciled = reconcile::step()?;
    idle::print(&idle);
    reconcile::print(&reconciled);
    Ok(())
}

pub fn run(
    quick: bool,
    steps: Vec<usize>,
    json_out: Option<PathBuf>,
    compare: Option<PathBuf>,
) -> anyhow::Result<()> {
    crate::require_root("the benchmark")?;
    let steps: &[usize] = if !steps.is_empty() {
        &steps
    } else if quick {
        &[1_000, 5_000]
    } else {
        &[1_000, 10_000, 25_000, 50_000]
    };
    let window = Duration::from_secs(if quick { 5 } else { 10 });
    let mut exact = Vec::new();
    for &n in steps {
        eprintln!("bench: {n} idle keepalive connections for {window:?}…");
        exact.push(exactness_and_scale(n, window)?);
    }
    // At >= 20k probes/s (the rate) in --quick too.
    let nowire_n = 25_000;
    eprintln!("bench: {nowire_n} connections whose probes cannot reach the wire, for {window:?}…");
    let no_wire = nowire::step(nowire_n, window)?;
    eprintln!(
        "bench: scale, {} then {} idle tracked sockets…",
        2 * scale::LISTING_CONNECTIONS,
        2 * scale::SCALE_CONNECTIONS
    );
    let scale = scale::step()?;
    eprintln!("bench: TC classifiers attached vs detached…");
    let tc = tc::overhead(
        Duration::from_secs(if quick { 2 } else { 4 }),
        if quick { 3 } else { 5 },
    )?;
    let idle = idle::step(Duration::from_secs(if quick { 20 } else { 60 }), quick)?;
    eprintln!("bench: reconciliation after lost events…");
    let reconciled = reconcile::step()?;
    eprintln!("bench: start-up…");
    let start = startup()?;
    let result = json!({ "exactness": exact, "no_wire": no_wire, "scale": scale, "tc": tc, "idle": idle, "reconcile": reconciled, "startup": start });

    print_exactness(&exact);
    print_verdicts(&exact, &tc, &start);
    nowire::print(&no_wire);
    scale::print(&scale);
    idle::print(&idle);
    reconcile::print(&reconciled);

    let path = json_out.unwrap_or_else(|| PathBuf::from("target/bench/latest.json"));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("\nresults: {}", path.display());
    if let Some(old) = compare {
        print_comparison(&old, &result)?;
    }
    Ok(())
}

fn print_comparison(old: &Path, new: &Value) -> anyhow::Result<()> {
    let old: Value = serde_json::from_str(
        &fs::read_to_string(old).with_context(|| format!("reading {}", old.display()))?,
    )?;
    println!("\nnew / old:");
    let pairs = [
        (
            "tc cost %",
            &new["tc"]["cost_percent"],
            &old["tc"]["cost_percent"],
        ),
        (
            "tc ping-pong cost %",
            &new["tc"]["ping_pong_cost_percent"],
            &old["tc"]["ping_pong_cost_percent"],
        ),
        (
            "start-up ms",
            &new["startup"]["spawn_to_ready_ms"],
            &old["startup"]["spawn_to_ready_ms"],
        ),
    ];
    for (name, n, o) in pairs {
        if let (Some(n), Some(o)) = (n.as_f64(), o.as_f64()) {
            println!("  {name:<28} {n:>10.2} / {o:>10.2} = {:.2}", n / o);
        }
    }
    for (n, o) in new["exactness"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(old["exactness"].as_array().into_iter().flatten())
    {
        for key in [
            "probes_per_s",
            "agent_cpu_percent",
            "agent_rss_mib",
            "metrics_ms_median",
            "sockets_ms",
        ] {
            if let (Some(a), Some(b)) = (n[key].as_f64(), o[key].as_f64()) {
                println!(
                    "  {:<28} {a:>10.2} / {b:>10.2} = {:.2}",
                    format!("{} conns {key}", n["connections"]),
                    a / b
                );
            }
        }
    }
    Ok(())
}
