//! `/advice`: every established socket grouped by workload and program,
//! with the fix in that program's terms ([`crate::model::workload`]),
//! judged against `idle_timeout=` rules when given (as `advise
//! --idle-timeout` writes them), else the agent's own, plus its learned
//! paths and conntracks; and the fixes for servers' idle closes that cost
//! requests (stale reuses, data after close). Built a chunk of sockets at
//! a time under the state lock, like `/sockets`; the reply holds
//! workloads, not sockets.

use std::os::unix::fs::MetadataExt as _;

use serde::{Deserialize, Serialize};

use super::state::{AgentState, Shared};
use crate::{
    model::{
        clock::monotonic_ns,
        idle_close::CostKind,
        paths::PathKey,
        risk::Rule,
        workload::{Advisor, WorkloadAdvice},
    },
    table::{Entry, Judge, row},
};

/// Sockets judged per lock.
const CHUNK: usize = 256;

/// The reply of `/advice`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdviceReply {
    pub workloads: Vec<WorkloadAdvice>,
}

/// The `idle_timeout` parameters (each a comma-separated list of rules);
/// any other parameter is refused.
pub fn rules(query: &[(String, String)]) -> Result<Option<Vec<Rule>>, String> {
    let mut rules = Vec::new();
    for (key, value) in query {
        if key != "idle_timeout" {
            return Err(format!(
                "unknown parameter {key:?}: /advice takes idle_timeout (PROFILE|SECONDS[@DESTINATION], comma-separated)"
            ));
        }
        for rule in value.split(',').filter(|r| !r.is_empty()) {
            rules.push(rule.parse::<Rule>().map_err(|e| e.to_string())?);
        }
    }
    Ok((!rules.is_empty()).then_some(rules))
}

/// The advice for every workload of the node.
pub fn build(state: &Shared, rules: Option<&[Rule]>) -> AdviceReply {
    // The DaemonSet runs in the node's network namespace: ours is the node's.
    let node_netns = std::fs::metadata("/proc/self/ns/net")
        .ok()
        .map(|m| m.ino() as u32);
    let (cookies, listening) = match state.lock() {
        Ok(s) => (s.table.live_cookies(), s.table.listening().clone()),
        Err(_) => return AdviceReply { workloads: vec![] },
    };
    let mut advisor = Advisor::new(node_netns, listening);
    for chunk in cookies.chunks(CHUNK) {
        let Ok(mut s) = state.lock() else { break };
        let s = &mut *s;
        // Field by field: the naming below borrows the state mutably.
        let judge = Judge {
            rules: rules.unwrap_or(&s.rules),
            paths: &s.paths,
            conntrack: &s.conntrack,
        };
        for &cookie in chunk {
            if let Some(mut row) = s.table.row_of(cookie, judge) {
                s.naming.name_row(&mut row);
                advisor.add(&row);
            }
        }
    }
    if let Ok(mut s) = state.lock() {
        add_costs(&mut advisor, &mut s, rules);
    }
    AdviceReply {
        workloads: advisor.finish(),
    }
}

/// The requests servers' idle closes cost lately, each counted against
/// the workload that owned its socket.
fn add_costs(advisor: &mut Advisor, s: &mut AgentState, rules: Option<&[Rule]>) {
    let AgentState {
        costs,
        naming,
        paths,
        conntrack,
        rules: own,
        ..
    } = s;
    let judge = Judge {
        rules: rules.unwrap_or(own),
        paths,
        conntrack,
    };
    for cost in costs.recent(monotonic_ns()) {
        let entry = Entry::established(cost.owner.clone(), cost.netns, cost.local, cost.remote);
        let mut socket = row(0, &entry, None, judge);
        naming.name_row(&mut socket);
        let learned = (cost.kind == CostKind::StaleReuse)
            .then(|| paths.idle_closes_of(&PathKey::of_server(judge.rules, cost.remote)))
            .flatten()
            .map(|c| c.min_s);
        advisor.add_cost(&socket, cost, learned);
    }
}
