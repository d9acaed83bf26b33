//! What servers' idle closes cost, kept for the advice: each stale reuse
//! (a client wrote on a connection its server had closed for idleness,
//! and got the RST) and each data after close (a server's kernel reset a
//! client that wrote after the application had closed). Bounded: the
//! newest [`MAX_COSTS`] are kept, and each is forgotten after the path
//! memory.

use std::{collections::VecDeque, net::SocketAddr, sync::Arc};

use keepalive_api::Owner;

/// Costs kept at most.
pub const MAX_COSTS: usize = 1024;

/// Which end paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CostKind {
    /// A client's request on a connection its server had closed.
    StaleReuse,
    /// Late data our server's kernel reset.
    DataAfterClose,
}

/// One request lost to an idle close.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub kind: CostKind,
    pub owner: Option<Arc<Owner>>,
    pub netns: Option<u32>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The idle gap before the server's close.
    pub idle_before_s: Option<f64>,
    /// From the server's close to the late write.
    pub closed_for_s: Option<f64>,
    /// CLOCK_MONOTONIC ns.
    pub at_ns: u64,
}

impl Cost {
    /// How long the client's pool had kept the connection idle when it
    /// reused it: a lower bound of the pool's idle time.
    pub fn reused_after_s(&self) -> Option<f64> {
        Some(self.idle_before_s? + self.closed_for_s?)
    }
}

/// The newest costs, oldest first.
#[derive(Debug)]
pub struct CostLedger {
    costs: VecDeque<Cost>,
    memory_ns: u64,
}

impl CostLedger {
    pub fn new(memory_s: u64) -> Self {
        CostLedger {
            costs: VecDeque::new(),
            memory_ns: memory_s.saturating_mul(1_000_000_000),
        }
    }

    pub fn add(&mut self, cost: Cost) {
        if self.costs.len() >= MAX_COSTS {
            self.costs.pop_front();
        }
        self.costs.push_back(cost);
    }

    /// The costs seen within the memory before `now_ns`.
    pub fn recent(&self, now_ns: u64) -> impl Iterator<Item = &Cost> {
        let memory = self.memory_ns;
        self.costs
            .iter()
            .filter(move |c| now_ns.saturating_sub(c.at_ns) <= memory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(at_ns: u64) -> Cost {
        Cost {
            kind: CostKind::StaleReuse,
            owner: None,
            netns: None,
            local: "192.0.2.1:40000".parse().unwrap(),
            remote: "192.0.2.2:6379".parse().unwrap(),
            idle_before_s: Some(2.1),
            closed_for_s: Some(2.9),
            at_ns,
        }
    }

    #[test]
    fn the_ledger_keeps_the_newest_within_its_memory() {
        let s = 1_000_000_000;
        let mut ledger = CostLedger::new(10);
        for i in 0..(MAX_COSTS as u64 + 5) {
            ledger.add(cost(i));
        }
        assert_eq!(ledger.recent(0).count(), MAX_COSTS);
        assert_eq!(ledger.recent(0).next().unwrap().at_ns, 5);
        assert_eq!(ledger.recent(11 * s).count(), 0);
        assert_eq!(cost(0).reused_after_s(), Some(5.0));
    }
}
