//! A socket as `/sockets` shows it, and whether it is at risk.

use std::collections::HashMap;

use keepalive_api::{Risk, SocketRow, TcpState};

use super::Entry;
use crate::model::{
    paths::PathBook,
    risk::{self, Rule},
};

/// What a socket's risk is judged against: the configured rules, the
/// learned path bounds, and each namespace's active conntrack timeout.
#[derive(Clone, Copy)]
pub struct Judge<'a> {
    pub rules: &'a [Rule],
    pub paths: &'a PathBook,
    /// `nf_conntrack_tcp_timeout_established` by namespace inode, where
    /// conntrack tracks flows.
    pub conntrack: &'a HashMap<u32, u32>,
}

pub fn row(cookie: u64, e: &Entry, service_port: Option<u16>, judge: Judge<'_>) -> SocketRow {
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
        // Named by the caller, who holds the runtime's answers.
        pod: None,
        namespace: None,
        container: None,
        pod_uid: e.owner.as_ref().and_then(|o| o.pod_uid.clone()),
        uid: e.uid,
        inode: e.inode,
        keepalive: e.keepalive.clone(),
        idle_s: e.idle_s,
        probes_out: e.probes_out,
        probes: e.probes,
        acks: e.acks,
        last_rtt_us: e.last_rtt_us,
        dead_after_s,
        risk: risk_of(e, service_port, judge),
    }
}

/// Only established connections cross a middlebox's idle timer.
pub fn risk_of(e: &Entry, service_port: Option<u16>, judge: Judge<'_>) -> Option<Risk> {
    if e.state != TcpState::Established {
        return None;
    }
    let remote = e.remote?;
    let idle = e.keepalive.as_ref().filter(|k| k.enabled).map(|k| k.idle_s);
    let learned = service_port
        .and_then(|port| judge.paths.learned_timeout(judge.rules, remote, port))
        .map(|(_, s)| s);
    let conntrack = e.netns.and_then(|n| judge.conntrack.get(&n).copied());
    let timeout = risk::path_timeout(judge.rules, remote.ip(), remote.port(), learned, conntrack)?;
    risk::judge(timeout, idle)
}
