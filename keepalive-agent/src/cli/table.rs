//! `/sockets` rows as a table, like `ss -tnoe`.

use keepalive_api::SocketRow;

use super::text::keepalive_triplet;

pub const HEADER: &str = "State       Local Address:Port                         Peer Address:Port                          Netns       Process                Keepalive idle/intvl/cnt     Idle  Probes Risk";

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub fn line(r: &SocketRow) -> String {
    let process = r
        .owner
        .as_ref()
        .map_or_else(|| "-".into(), |o| format!("{}({})", o.comm, o.pid));
    let keepalive = match &r.keepalive {
        Some(k) if k.enabled => keepalive_triplet(k, true),
        Some(_) => "off".into(),
        None => "-".into(),
    };
    let idle = r.idle_s.map_or_else(|| "-".into(), |v| format!("{v:.0}s"));
    let risk = r
        .risk
        .as_ref()
        .map(|k| format!("{}:{}", k.profile, k.reason))
        .unwrap_or_default();
    format!(
        "{:<11} {:<42} {:<42} {:<11} {:<22} {:<24} {:>8} {:>7} {}",
        r.state.as_str(),
        or_dash(r.local),
        or_dash(r.remote),
        or_dash(r.netns),
        process,
        keepalive,
        idle,
        r.probes,
        risk
    )
}
