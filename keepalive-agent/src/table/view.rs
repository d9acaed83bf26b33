//! A socket as `/sockets` shows it, and whether it is at risk.

use keepalive_api::{Risk, SocketRow, TcpState};

use super::Entry;
use crate::model::risk::{self, Rule};

pub fn row(cookie: u64, e: &Entry, rules: &[Rule]) -> SocketRow {
    let dead_after_s = e.keepalive.as_ref().filter(|k| k.enabled).and_then(|k| {
        let remaining = k.count.saturating_sub(e.probes_out) as f64;
        e.timer_in_s.map(|t| t + remaining * k.interval_s)
    });
    SocketRow {
        cookie,
        netns: e.netns,
        state: e.state,
        local: e.local,
        remote: e.remote,
        owner: e.owner.as_deref().cloned(),
        uid: e.uid,
        inode: e.inode,
        keepalive: e.keepalive.clone(),
        idle_s: e.idle_s,
        probes_out: e.probes_out,
        probes: e.probes,
        acks: e.acks,
        last_rtt_us: e.last_rtt_us,
        dead_after_s,
        risk: risk_of(e, rules),
    }
}

/// Only established connections cross a middlebox's idle timer.
pub fn risk_of(e: &Entry, rules: &[Rule]) -> Option<Risk> {
    if e.state != TcpState::Established {
        return None;
    }
    let remote = e.remote?;
    let idle = e.keepalive.as_ref().filter(|k| k.enabled).map(|k| k.idle_s);
    risk::assess(rules, remote.ip(), remote.port(), idle)
}
