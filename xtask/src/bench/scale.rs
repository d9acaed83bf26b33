//! The bench's scale step (#15): idle keepalive sockets (the sysctls'
//! timing, no probe due) grown to 100k and then 250k tracked sockets. At
//! 100k, `ss -tnoie` (what an SRE runs today) is listed beside `/sockets`,
//! wall and CPU time each; at 250k, the agent's RSS, `/metrics` and a
//! streamed `/sockets`: its first byte, the whole reply, and whether the
//! agent's memory grew by the size of the reply.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Agent, Netns, hold, scrape_metrics, tc::median, verdict};

/// Every row of `/sockets` starts with its cookie.
const ROW: &[u8] = b"{\"cookie\":";

/// Listings of each kind; their medians are compared.
const LISTINGS: usize = 3;

/// Connections (two tracked sockets each) at the two sizes.
pub const LISTING_CONNECTIONS: usize = 50_000;
pub const SCALE_CONNECTIONS: usize = 125_000;

pub fn step() -> anyhow::Result<Value> {
    let ns = Netns::new("kabenchscale")?;
    let most = 2 * SCALE_CONNECTIONS;
    let agent = Agent::start(&[
        "--max-sockets",
        &(most + 16_384).to_string(),
        "--inventory-seconds",
        "5",
    ])?;
    let first = hold::Holders::spawn(&ns.0, LISTING_CONNECTIONS, hold::Timing::Sysctl)?;
    wait_tracked(&agent, 2 * LISTING_CONNECTIONS)?;
    let listings = ss_beside_sockets(&ns, &agent)?;
    let rest = hold::Holders::spawn(
        &ns.0,
        SCALE_CONNECTIONS - LISTING_CONNECTIONS,
        hold::Timing::Sysctl,
    )?;
    let tracked = wait_tracked(&agent, most)?;
    // Past the inventory that found them: the steady state.
    std::thread::sleep(Duration::from_secs(6));
    let scale = at_scale(&agent, tracked)?;
    drop((first, rest));
    agent.stop()?;
    Ok(json!({ "listing": listings, "scale": scale }))
}

/// The agent's tracked sockets, polled until at least `n` (or 60 s).
fn wait_tracked(agent: &Agent, n: usize) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tracked = tracked(agent)?;
        if tracked >= n as u64 {
            return Ok(tracked);
        }
        if Instant::now() > deadline {
            bail!("the agent tracks {tracked} sockets after 60 s, not {n}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tracked(agent: &Agent) -> anyhow::Result<u64> {
    let (_, body, _) = super::fetch(&agent.url("/metrics"))?;
    body.lines()
        .find_map(|l| l.strip_prefix("keepalive_agent_tracked_sockets "))
        .and_then(|v| v.trim().parse().ok())
        .context("keepalive_agent_tracked_sockets missing from /metrics")
}

/// CPU-seconds (user + system) of the reaped children so far.
fn children_cpu_s() -> f64 {
    // SAFETY: rusage is plain old data; getrusage fills the struct we pass.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// One `ss -tnoie` in the namespace: (wall s, CPU s, lines, bytes).
fn ss_listing(ns: &Netns) -> anyhow::Result<(f64, f64, usize, usize)> {
    let cpu0 = children_cpu_s();
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "ss", "-tnoie"])
        .stderr(Stdio::null())
        .output()
        .context("running ss")?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("ss -tnoie: {}", out.status);
    }
    // A header, then a line per socket (-i continues it on indented lines).
    let sockets = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| l.first().is_some_and(|b| !b.is_ascii_whitespace()))
        .count()
        .saturating_sub(1);
    Ok((wall, children_cpu_s() - cpu0, sockets, out.stdout.len()))
}

/// One streamed `/sockets`: (wall s, agent CPU s, rows, bytes, first byte s).
fn sockets_listing(agent: &Agent) -> anyhow::Result<(f64, f64, u64, u64, f64)> {
    let (cpu0, _, _) = agent.usage();
    let r = keepalive_tests::http::get_streamed(&format!("http://{}", agent.url("/sockets")), ROW)
        .map_err(|e| anyhow::anyhow!("GET /sockets: {e}"))?;
    let (cpu1, _, _) = agent.usage();
    if r.status != 200 {
        bail!("/sockets answered {}", r.status);
    }
    Ok((
        r.whole.as_secs_f64(),
        cpu1 - cpu0,
        r.marked,
        r.bytes,
        r.first_byte.as_secs_f64(),
    ))
}

/// `ss -tnoie` and `/sockets` over the same sockets, alternately.
fn ss_beside_sockets(ns: &Netns, agent: &Agent) -> anyhow::Result<Value> {
    let (mut ss, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..LISTINGS {
        ss.push(ss_listing(ns)?);
        ours.push(sockets_listing(agent)?);
    }
    let m = |v: Vec<f64>| median(&v);
    let ss_wall = m(ss.iter().map(|l| l.0).collect());
    let ss_cpu = m(ss.iter().map(|l| l.1).collect());
    let our_wall = m(ours.iter().map(|l| l.0).collect());
    let our_cpu = m(ours.iter().map(|l| l.1).collect());
    Ok(json!({
        "sockets": 2 * LISTING_CONNECTIONS,
        "ss_wall_s": ss_wall,
        "ss_cpu_s": ss_cpu,
        "ss_sockets": ss.last().map(|l| l.2),
        "ss_bytes": ss.last().map(|l| l.3),
        "sockets_wall_s": our_wall,
        "sockets_agent_cpu_s": our_cpu,
        "sockets_rows": ours.last().map(|l| l.2),
        "sockets_bytes": ours.last().map(|l| l.3),
        "wall_ratio": our_wall / ss_wall,
        "cpu_ratio": our_cpu / ss_cpu,
    }))
}

/// RSS, `/metrics` and a streamed `/sockets` at `tracked` sockets.
fn at_scale(agent: &Agent, tracked: u64) -> anyhow::Result<Value> {
    let (_, rss, peak_before) = agent.usage();
    let (metrics_ms, metrics_bytes) = scrape_metrics(agent)?;
    let (_, rss_before_listing, _) = agent.usage();
    let (wall, cpu, rows, bytes, first) = sockets_listing(agent)?;
    let (_, rss_after, peak_after) = agent.usage();
    Ok(json!({
        "tracked_sockets": tracked,
        "agent_rss_mib": rss,
        "agent_peak_rss_mib": peak_before,
        "metrics_ms_median": metrics_ms,
        "metrics_bytes": metrics_bytes,
        "sockets_first_byte_ms": first * 1e3,
        "sockets_whole_ms": wall * 1e3,
        "sockets_agent_cpu_s": cpu,
        "sockets_rows": rows,
        "sockets_mib": bytes as f64 / (1 << 20) as f64,
        "rss_before_listing_mib": rss_before_listing,
        "rss_after_listing_mib": rss_after,
        "peak_rss_growth_mib": peak_after - peak_before,
    }))
}

pub fn print(v: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let s = &v["scale"];
    let (rss, metrics) = (f(&s["agent_rss_mib"]), f(&s["metrics_ms_median"]));
    let (first, whole) = (f(&s["sockets_first_byte_ms"]), f(&s["sockets_whole_ms"]));
    let (reply, growth) = (f(&s["sockets_mib"]), f(&s["peak_rss_growth_mib"]));
    println!(
        "target: {} tracked sockets: RSS <= 128 MiB: {} ({rss:.1} MiB, peak {:.1} MiB); /metrics <= 50 ms: {} ({metrics:.1} ms, {} bytes)",
        s["tracked_sockets"],
        verdict(rss <= 128.0),
        f(&s["agent_peak_rss_mib"]),
        verdict(metrics <= 50.0),
        s["metrics_bytes"],
    );
    println!(
        "        /sockets streamed: first byte <= 50 ms: {} ({first:.1} ms); whole reply <= 1 s: {} ({whole:.0} ms, {} rows, {reply:.1} MiB); \
         agent memory not grown by the reply: {} (peak RSS +{growth:.1} MiB, RSS {:.1} -> {:.1} MiB)",
        verdict(first <= 50.0),
        verdict(whole <= 1000.0),
        s["sockets_rows"],
        verdict(growth < reply / 2.0),
        f(&s["rss_before_listing_mib"]),
        f(&s["rss_after_listing_mib"]),
    );
    let l = &v["listing"];
    println!(
        "side by side, {} sockets: ss -tnoie {:.0} ms wall, {:.0} ms CPU ({} sockets, {:.1} MiB) vs /sockets {:.0} ms wall, {:.0} ms agent CPU ({} rows, {:.1} MiB): \
         /sockets / ss = {:.2} wall, {:.2} CPU",
        l["sockets"],
        f(&l["ss_wall_s"]) * 1e3,
        f(&l["ss_cpu_s"]) * 1e3,
        l["ss_sockets"],
        f(&l["ss_bytes"]) / (1 << 20) as f64,
        f(&l["sockets_wall_s"]) * 1e3,
        f(&l["sockets_agent_cpu_s"]) * 1e3,
        l["sockets_rows"],
        f(&l["sockets_bytes"]) / (1 << 20) as f64,
        f(&l["wall_ratio"]),
        f(&l["cpu_ratio"]),
    );
}
