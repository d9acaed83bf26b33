//! `cargo xtask bench --soak MINUTES`: the agent for a long while at a
//! steady 5000 probes/s, namespaces coming and going beside it and
//! `/metrics` scraped every 5 s. What must hold at the end: memory and
//! descriptors flat, counts exact (agent = kernel), nothing in the log.
//! Not part of CI: it takes as long as it is asked to.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Agent, Netns, get, hold, tcp_keepalive_counter, verdict};

/// Connections held: with 1-second keepalive intervals, 5000 probes/s.
const CONNECTIONS: usize = 5000;

/// (RSS MiB, open descriptors) of the agent now.
fn footprint(agent: &Agent) -> (f64, usize) {
    let (_, rss, _) = agent.usage();
    (rss, keepalive_tests::proc::fd_count(agent.inner.pid()))
}

/// A namespace made and deleted, with a keepalive client in it for a
/// moment: what a node running pods does all day.
fn churn_one(i: usize) -> anyhow::Result<()> {
    let ns = Netns::new(&format!("kasoak-churn{i}"))?;
    ns.run(|| {
        keepalive_tests::scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(1500))
    })?;
    Ok(())
}

/// The sum of `keepalive_probes_total` of namespace `netns`.
fn labelled_probes(agent: &Agent, netns: u64) -> anyhow::Result<u64> {
    let (_, body, _) = super::fetch(&agent.url("/metrics"))?;
    let label = format!("netns=\"{netns}\"");
    Ok(body
        .lines()
        .filter(|l| l.starts_with("keepalive_probes_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

pub fn soak(minutes: u64) -> anyhow::Result<()> {
    crate::require_root("the soak")?;
    let ns = Netns::new("kasoak")?;
    let agent = Agent::start(&["--max-sockets", "20000", "--inventory-seconds", "5"])?;
    let before = ns.run(tcp_keepalive_counter)?;
    let holders = hold::Holders::spawn(&ns.0, CONNECTIONS, hold::Timing::Fast)?;
    // Settled: connections made, first inventory taken.
    std::thread::sleep(Duration::from_secs(10));
    let start = footprint(&agent);
    let started = Instant::now();
    let end_at = started + Duration::from_secs(minutes * 60);
    let (mut scrapes, mut failed_scrapes, mut churned) = (0u64, 0u64, 0usize);
    let mut next_report = started + Duration::from_secs(60);
    while Instant::now() < end_at {
        let (status, _, _) = get(&agent.url("/metrics"))?;
        scrapes += 1;
        failed_scrapes += u64::from(status != 200);
        if scrapes % 6 == 0 {
            churn_one(churned)?;
            churned += 1;
        }
        if Instant::now() >= next_report {
            let (rss, fds) = footprint(&agent);
            eprintln!(
                "soak: {:.0} min, RSS {rss:.1} MiB, {fds} descriptors, {scrapes} scrapes, {churned} namespaces",
                started.elapsed().as_secs_f64() / 60.0
            );
            next_report += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let end = footprint(&agent);
    let elapsed = started.elapsed().as_secs_f64();
    drop(holders);
    std::thread::sleep(Duration::from_secs(1));
    let delta = ns.run(tcp_keepalive_counter)? - before;
    let log = agent.inner.stderr();
    // The namespace's labelled probes, settled after the last inventory.
    std::thread::sleep(Duration::from_secs(6));
    let counted = labelled_probes(&agent, ns.inode())?;
    agent.stop()?;
    let flat = end.0 <= start.0 * 1.2 + 8.0 && end.1 <= start.1 + 16;
    println!(
        "\nsoak: {minutes} min at {:.0} probes/s, {churned} namespaces churned, {scrapes} scrapes ({failed_scrapes} failed)",
        delta as f64 / elapsed
    );
    println!(
        "target: RSS and descriptors flat: {} (RSS {:.1} -> {:.1} MiB, descriptors {} -> {})",
        verdict(flat),
        start.0,
        end.0,
        start.1,
        end.1
    );
    println!(
        "target: counts exact: {} (keepalive_probes_total {counted} = TCPKeepAlive {delta} of the soak's namespace)",
        verdict(counted == delta)
    );
    println!(
        "target: 0 warnings or errors in the log: {} ({} lines)",
        verdict(log.is_empty()),
        log.len()
    );
    for line in log.iter().take(10) {
        println!("        {line}");
    }
    if !flat || counted != delta || !log.is_empty() || failed_scrapes > 0 {
        bail!("the soak missed a target");
    }
    Ok(())
}
