//! `/paths`: each destination group's learned idle timeout, with the
//! sockets on it now.

use std::collections::HashMap;

use keepalive_api::{Gap, IdleCloseRange, PathRow, TcpState};

use super::state::AgentState;
use crate::model::{
    clock::{Clock, ms},
    paths::{PathKey, Seen},
};

/// Established sockets and those at risk, per path.
fn sockets_by_path(s: &AgentState) -> HashMap<PathKey, (u64, u64)> {
    let judge = s.judge();
    let mut by = HashMap::new();
    for (_, e) in s.table.iter() {
        if e.state != TcpState::Established {
            continue;
        }
        let (Some(remote), Some(port)) = (e.remote, s.table.service_port(e)) else {
            continue;
        };
        let Some(key) = PathKey::of(&s.rules, remote, port) else {
            continue;
        };
        let n: &mut (u64, u64) = by.entry(key).or_default();
        n.0 += 1;
        n.1 += u64::from(s.table.risk_of(e, judge).is_some());
    }
    by
}

/// Every path the agent remembers, most constrained (shortest fatal gap)
/// first, then by name.
pub fn rows(s: &AgentState) -> Vec<PathRow> {
    let clock = Clock::new(0);
    let gap = |seen: Option<Seen>| {
        seen.map(|g| Gap {
            idle_s: ms(g.gap_s),
            seen_at: ms(clock.wall_seconds(g.at_ns)),
        })
    };
    let sockets = sockets_by_path(s);
    let mut rows: Vec<PathRow> = s
        .paths
        .iter()
        .map(|(key, b)| {
            let (on_path, at_risk) = sockets.get(key).copied().unwrap_or_default();
            PathRow {
                path: key.label(&s.rules),
                survived: gap(b.survived),
                fatal: gap(b.fatal),
                survived_count: b.survived_count,
                resets: b.resets,
                blackholes: b.blackholes,
                consistent_with: b.consistent_with().into_iter().map(String::from).collect(),
                sockets: on_path,
                at_risk,
                idle_close: b.idle_closes.map(|c| IdleCloseRange {
                    min_s: ms(c.min_s),
                    max_s: ms(c.max_s),
                    count: c.count,
                    seen_at: ms(clock.wall_seconds(c.last_ns)),
                }),
            }
        })
        .collect();
    let fatal = |r: &PathRow| r.fatal.as_ref().map_or(f64::INFINITY, |g| g.idle_s);
    rows.sort_by(|a, b| {
        fatal(a)
            .total_cmp(&fatal(b))
            .then_with(|| a.path.cmp(&b.path))
    });
    rows
}
