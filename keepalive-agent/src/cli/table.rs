//! `/sockets` rows as a table, like `ss -tnoe`, and `/paths` rows.

use keepalive_api::{Gap, PathRow, SocketRow};

use super::{escape::printable, text::keepalive_triplet};

pub const HEADER: &str = "State       Local Address:Port                         Peer Address:Port                          Netns       Process                Pod                            Keepalive idle/intvl/cnt     Idle  Probes Risk";

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub fn line(r: &SocketRow) -> String {
    let process = r
        .owner
        .as_ref()
        .map_or_else(|| "-".into(), |o| format!("{}({})", o.comm, o.pid));
    let pod = workload(r);
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
        "{:<11} {:<42} {:<42} {:<11} {:<22} {:<30} {:<24} {:>8} {:>7} {}",
        r.state.as_str(),
        or_dash(r.local),
        or_dash(r.remote),
        or_dash(r.netns),
        printable(&process),
        printable(&pod),
        keepalive,
        idle,
        r.probes,
        risk
    )
}

/// `namespace/pod/container` as kubectl users read it; outside
/// Kubernetes the systemd service, or the pod uid the runtime did not name.
fn workload(r: &SocketRow) -> String {
    match (&r.namespace, &r.pod) {
        (Some(ns), Some(pod)) => match &r.container {
            Some(c) => format!("{ns}/{pod}/{c}"),
            None => format!("{ns}/{pod}"),
        },
        _ => r
            .pod_uid
            .clone()
            .map(|uid| format!("pod{uid}"))
            .or_else(|| r.owner.as_ref().and_then(|o| o.service.clone()))
            .unwrap_or_else(|| "-".into()),
    }
}

pub const PATHS_HEADER: &str = "Path                                        Survived     Fatal  Resets Blackholes  Sockets AtRisk   Idle close Consistent with";

/// One `/paths` row: `>300s` reads "survived 300 s", `<=350s` "fatal at
/// 350 s", `2.0-2.3s` "its servers closed connections idle for 2.0 to 2.3 s".
pub fn path_line(r: &PathRow) -> String {
    let bound = |g: &Option<Gap>, sign: &str| {
        g.as_ref()
            .map_or_else(|| "-".into(), |g| format!("{sign}{:.1}s", g.idle_s))
    };
    let fits = if r.consistent_with.is_empty() {
        "-".to_string()
    } else {
        r.consistent_with.join(",")
    };
    let idle_close = r
        .idle_close
        .as_ref()
        .map_or_else(|| "-".into(), |c| format!("{:.1}-{:.1}s", c.min_s, c.max_s));
    format!(
        "{:<43} {:>9} {:>9} {:>7} {:>10} {:>8} {:>6} {:>12} {}",
        r.path,
        bound(&r.survived, ">"),
        bound(&r.fatal, "<="),
        r.resets,
        r.blackholes,
        r.sockets,
        r.at_risk,
        idle_close,
        fits
    )
}
