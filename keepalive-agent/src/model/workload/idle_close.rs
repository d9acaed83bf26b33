//! A workload's fixes for a server's idle close, from the requests it
//! cost ([`crate::model::idle_close`]): a client whose pool reused
//! connections its server had closed evicts idle ones sooner (below the
//! server's idle close, learned or seen); a server whose clients wrote
//! after it closed keeps idle connections open longer (above the idle at
//! which they reused them). Each in the program's own terms
//! (`pool_idle`, `server_idle` in `programs.yaml`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{
    idle_close::{Cost, CostKind},
    knowledge::{Entry, fill_idle},
};

/// Which side changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleCloseFixKind {
    /// The client's pool evicts idle connections before the server closes them.
    PoolIdle,
    /// The server keeps idle connections open longer than its clients' pools.
    ServerIdle,
}

/// One change for one workload, against one server (or one port of ours).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleCloseFix {
    pub kind: IdleCloseFixKind,
    /// The server a client reached (`192.0.2.2:6379`), or the port of ours
    /// its clients reached (`:6379`).
    pub peer: String,
    /// Requests it cost: stale reuses, or late data reset.
    pub requests: u64,
    /// The server's idle close: the shortest learned for the destination,
    /// else seen in these requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_idle_close_s: Option<f64>,
    /// The longest idle after which a client reused a connection: its
    /// pool keeps idle connections at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_reused_after_s: Option<f64>,
    /// The advised pool eviction (below the server's close) or server idle
    /// close (above the clients' reuse), whole seconds.
    pub advised_s: u32,
    /// What to write, in the program's terms.
    pub change: Vec<String>,
    pub note: String,
}

/// Requests against one peer, as they are added.
#[derive(Debug, Default)]
pub(super) struct Pending {
    requests: u64,
    /// Shortest idle close (learned, or seen before a cost).
    close_s: Option<f64>,
    reused_after_s: Option<f64>,
}

/// Per kind and peer.
pub(super) type PendingIdleCloses = BTreeMap<(IdleCloseFixKind, String), Pending>;

/// The fix kind and peer of a cost.
pub(super) fn key_of(cost: &Cost) -> (IdleCloseFixKind, String) {
    match cost.kind {
        CostKind::StaleReuse => (IdleCloseFixKind::PoolIdle, cost.remote.to_string()),
        CostKind::DataAfterClose => (
            IdleCloseFixKind::ServerIdle,
            format!(":{}", cost.local.port()),
        ),
    }
}

/// Counts `cost`; `learned_close_s` is its server's shortest idle close
/// learned for the destination (client side).
pub(super) fn pend(pending: &mut PendingIdleCloses, cost: &Cost, learned_close_s: Option<f64>) {
    let p = pending.entry(key_of(cost)).or_default();
    p.requests += 1;
    let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    p.close_s = min(min(p.close_s, learned_close_s), cost.idle_before_s);
    p.reused_after_s = match (p.reused_after_s, cost.reused_after_s()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

/// The pool's advised idle eviction: a fifth below the server's close
/// (its timer's granularity: Redis checks about once a second).
fn pool_eviction_s(close_s: f64) -> u32 {
    ((close_s * 0.8).floor() as u32).max(1)
}

/// The server's advised idle close: a quarter above the longest idle its
/// clients reused after.
fn server_close_s(reused_after_s: f64) -> u32 {
    (reused_after_s * 1.25).ceil() as u32
}

pub(super) fn fix(
    entry: &Entry,
    (kind, peer): (IdleCloseFixKind, String),
    p: Pending,
) -> IdleCloseFix {
    let (advised_s, template, note) = match kind {
        IdleCloseFixKind::PoolIdle => (
            p.close_s.map_or(1, pool_eviction_s),
            entry.pool_idle.as_deref(),
            "the server closes connections idle longer than its own timeout; a pool that keeps them longer reuses closed ones. TCP keepalive probes do not help: the server counts application data, not probes",
        ),
        IdleCloseFixKind::ServerIdle => (
            server_close_s(p.reused_after_s.or(p.close_s).unwrap_or(1.0)),
            entry.server_idle.as_deref(),
            "its clients keep idle connections longer than this server does; behind a load balancer, above its idle timeout too (AWS ALB 60 s, GCP 600 s)",
        ),
    };
    let change = template
        .map(|t| vec![fill_idle(t, advised_s, advised_s)])
        .unwrap_or_default();
    IdleCloseFix {
        kind,
        peer,
        requests: p.requests,
        server_idle_close_s: p.close_s,
        client_reused_after_s: p.reused_after_s,
        advised_s,
        change,
        note: note.into(),
    }
}

#[cfg(test)]
mod tests {
    use keepalive_api::Program;

    use super::*;
    use crate::model::knowledge::{Side, entry};

    fn cost(kind: CostKind, idle_before_s: f64, closed_for_s: f64) -> Cost {
        Cost {
            kind,
            owner: None,
            netns: None,
            local: "192.0.2.1:40000".parse().unwrap(),
            remote: "192.0.2.2:6379".parse().unwrap(),
            idle_before_s: Some(idle_before_s),
            closed_for_s: Some(closed_for_s),
            at_ns: 0,
        }
    }

    #[test]
    fn a_pool_evicts_below_the_servers_close_in_its_terms() {
        let mut pending = PendingIdleCloses::new();
        pend(
            &mut pending,
            &cost(CostKind::StaleReuse, 5.2, 1.0),
            Some(5.05),
        );
        pend(
            &mut pending,
            &cost(CostKind::StaleReuse, 5.1, 3.0),
            Some(5.05),
        );
        let (key, p) = pending.pop_first().unwrap();
        assert_eq!(key, (IdleCloseFixKind::PoolIdle, "192.0.2.2:6379".into()));
        let f = fix(entry(Program::Go, Side::Outbound), key, p);
        assert_eq!(
            (f.requests, f.server_idle_close_s, f.advised_s),
            (2, Some(5.05), 4)
        );
        assert_eq!(f.client_reused_after_s, Some(8.1));
        assert!(
            f.change[0].contains("IdleConnTimeout: 4 * time.Second"),
            "{:?}",
            f.change
        );
    }

    #[test]
    fn a_server_closes_above_its_clients_reuse_in_its_terms() {
        let mut pending = PendingIdleCloses::new();
        pend(
            &mut pending,
            &cost(CostKind::DataAfterClose, 2.7, 2.3),
            None,
        );
        let (key, p) = pending.pop_first().unwrap();
        assert_eq!(key, (IdleCloseFixKind::ServerIdle, ":40000".into()));
        let f = fix(entry(Program::Redis, Side::Inbound), key, p);
        // Reused after 5.0 s: keep idle connections 7 s.
        assert_eq!((f.server_idle_close_s, f.advised_s), (Some(2.7), 7));
        assert!(f.change[0].starts_with("timeout 7"), "{:?}", f.change);
    }
}
