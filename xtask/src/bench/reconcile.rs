//! The reconciliation finds what events missed. With the setsockopt hook
//! live the agent takes an inventory only every `--reconcile-seconds`
//! (120), and at once when the ring buffer lost events. A burst of
//! connections through a ring buffer far too small for it (4 KiB: some
//! twenty state events) loses most of their events; the figure is how long
//! until `/sockets` lists every one of the burst's sockets all the same.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Agent, Netns, fetch, hold, verdict};

const CONNECTIONS: usize = 2_000;
/// An inventory at once after a loss, the health check noticing it within
/// a second: well under the 120 s between reconciliations.
const TARGET: Duration = Duration::from_secs(15);

pub fn step() -> anyhow::Result<Value> {
    let ns = Netns::new("kabenchrecon")?;
    let agent = Agent::start(&["--ring-buffer-bytes", "4096", "--max-sockets", "20000"])?;
    let held = hold::Holders::spawn(&ns.0, CONNECTIONS, hold::Timing::Sysctl)?;
    let opened = Instant::now();
    let sockets = format!("/sockets?netns={}", ns.inode());
    let established = || -> anyhow::Result<usize> {
        let (_, body, _) = fetch(&agent.url(&sockets))?;
        let rows: Vec<keepalive_api::SocketRow> = serde_json::from_str(&body)?;
        Ok(rows
            .iter()
            .filter(|r| r.state == keepalive_api::TcpState::Established)
            .count())
    };
    let mut listed = established()?;
    while listed < 2 * CONNECTIONS && opened.elapsed() < 2 * TARGET {
        std::thread::sleep(Duration::from_millis(200));
        listed = established()?;
    }
    let took = opened.elapsed();
    let (_, metrics, _) = fetch(&agent.url("/metrics"))?;
    let lost = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keepalive_agent_events_lost_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    drop(held);
    agent.stop()?;
    Ok(json!({
        "connections": CONNECTIONS,
        "sockets": 2 * CONNECTIONS,
        "events_lost": lost,
        "listed": listed,
        "listed_after_s": took.as_secs_f64(),
    }))
}

pub fn print(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let found = f("listed") >= f("sockets");
    println!(
        "target: what lost events hid is found (burst of {} connections through a 4 KiB ring buffer, {} events lost): \
         every socket in /sockets within {} s: {} ({} of {} after {:.1} s)",
        r["connections"],
        f("events_lost"),
        TARGET.as_secs(),
        verdict(found && f("listed_after_s") <= TARGET.as_secs_f64()),
        f("listed"),
        f("sockets"),
        f("listed_after_s"),
    );
}
