//! The bench step where keepalive probes cannot reach the wire: the
//! connections' namespace drops every TCP segment in its nftables output
//! hook (a host firewall, or a peer whose route is gone), so TC egress sees
//! no probe and the count rests on the timer hooks alone, plus what the
//! kernel programs recover from `icsk_probes_out` for the timer runs the
//! kernel ran without them (#15).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Agent, Netns, hold, tcp_keepalive_counter, verdict};

/// Every TCP segment leaving the namespace dropped before the device.
const DROP_TCP_OUTPUT: &str = "table inet kabench_nowire {
  chain output {
    type filter hook output priority 0; policy accept;
    meta l4proto tcp drop
  }
}
";

/// `n` keepalive connections (1 s idle and interval, 100 probes: none dies
/// in the window) whose probes go nowhere for `window`.
pub fn step(n: usize, window: Duration) -> anyhow::Result<Value> {
    let ns = Netns::new("kabenchnowire")?;
    let agent = Agent::start(&["--max-sockets", &(4 * n + 1024).to_string()])?;
    let before = ns.run(tcp_keepalive_counter)?;
    let socks = hold::Holders::spawn(&ns.0, n, hold::Timing::Fast)?;
    let rules = std::env::temp_dir().join("kabench-nowire.nft");
    std::fs::write(&rules, DROP_TCP_OUTPUT)?;
    let rules_arg = rules.display().to_string();
    crate::cmd::run("ip", &["netns", "exec", &ns.0, "nft", "-f", &rules_arg])?;
    let _ = std::fs::remove_file(&rules);
    let t0 = Instant::now();
    let at_drop = ns.run(tcp_keepalive_counter)?;
    std::thread::sleep(window);
    let elapsed = t0.elapsed().as_secs_f64();
    let in_window = ns.run(tcp_keepalive_counter)? - at_drop;
    drop(socks);
    std::thread::sleep(Duration::from_millis(500));
    let delta = ns.run(tcp_keepalive_counter)? - before;
    let stopped = agent.stop()?;
    let c = &stopped.counters;
    Ok(json!({
        "connections": n,
        "window_s": elapsed,
        "probes_per_s": in_window as f64 / elapsed,
        "kernel_probes": delta,
        "agent_probes": c.probes,
        "difference": c.probes as i64 - delta as i64,
        "recovered_from_probes_out": c.probes_recovered,
        "wire_only": c.probes_wire_only,
        "wire_probes": c.wire_probes,
        "events_lost": c.events_lost,
    }))
}

pub fn print(v: &Value) {
    let rate = v["probes_per_s"].as_f64().unwrap_or(0.0);
    let exact = v["difference"] == 0;
    println!(
        "target: exact where probes cannot reach the wire (nftables drops all TCP output), >= 20k probes/s: {} \
         ({} probes = TCPKeepAlive {} at {rate:.0}/s; {} of them from runs the kernel ran without our timer programs, \
         counted from icsk_probes_out; TC saw {} probes leave over the whole step; {} events lost)",
        verdict(exact && rate >= 20_000.0),
        v["agent_probes"],
        v["kernel_probes"],
        v["recovered_from_probes_out"],
        v["wire_probes"],
        v["events_lost"],
    );
}
