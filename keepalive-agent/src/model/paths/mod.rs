//! Each path's idle timeout, learned from passive observation: a lower
//! bound from the idle gaps connections survived, an upper bound from the
//! shortest gap that ended in an idle reset or an idle blackhole, and the
//! known profiles the two are consistent with.
//!
//! What the agent can see: a gap survived is observed when a connection
//! that was idle at one socket scan has received something by the next
//! (the bound is the idle at the earlier scan, so it is short of the true
//! gap by up to the interval between inventories), and exactly when a
//! keepalive probe sent after an idle gap is answered. A fatal gap is
//! exact (jiffies). What it cannot see: gaps that end between scans
//! without a probe, connections on loopback, and a middlebox that forgets
//! flows without telling either end until the next packet (that gap shows
//! only when one is sent).
//!
//! Beside the middleboxes' timeouts, each group keeps the idle gaps at
//! which its servers closed connections we opened (the peer's FIN after
//! silence): a server that closes at a fixed idle shows a tight range, the
//! timeout a client pool's idle eviction must stay below.
//!
//! Module map: [`key`] (destination groups). Pure policy: no I/O.

mod key;

use std::collections::HashMap;

pub use key::PathKey;

use super::risk::{Rule, profiles::PROFILES};

/// Linux conntrack's default `nf_conntrack_tcp_timeout_established` (5 days).
pub const LINUX_CONNTRACK_DEFAULT_S: u32 = 432_000;

/// One bound, and when it was seen (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seen {
    pub gap_s: f64,
    pub at_ns: u64,
}

/// Why a gap was fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fatal {
    Reset,
    Blackhole,
}

/// The idle gaps at which a group's servers closed connections: the
/// shortest and longest, how many, and when the latest was seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdleCloses {
    pub min_s: f64,
    pub max_s: f64,
    pub count: u64,
    pub last_ns: u64,
}

/// What one destination group taught.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bounds {
    /// Its servers' idle closes.
    pub idle_closes: Option<IdleCloses>,
    /// The longest gap survived (a lower bound of the timeout).
    pub survived: Option<Seen>,
    /// The shortest fatal gap (an upper bound).
    pub fatal: Option<Seen>,
    pub survived_count: u64,
    pub resets: u64,
    pub blackholes: u64,
}

impl Bounds {
    /// Known profiles whose timeout T fits survived < T <= fatal.
    pub fn consistent_with(&self) -> Vec<&'static str> {
        let Some(fatal) = self.fatal else {
            return Vec::new();
        };
        let lower = self.survived.map_or(0.0, |s| s.gap_s);
        let known = PROFILES
            .iter()
            .map(|p| (p.name, p.idle_timeout_s))
            .chain([("linux-conntrack", LINUX_CONNTRACK_DEFAULT_S)]);
        known
            .filter(|(_, t)| lower < f64::from(*t) && f64::from(*t) <= fatal.gap_s)
            .map(|(name, _)| name)
            .collect()
    }
}

/// Every destination group's bounds. Bounded: past `max` groups new ones
/// fold into [`PathKey::Other`], counted; a bound older than `memory_ns`
/// is forgotten (the path may have changed), and a group with none left
/// goes with it.
pub struct PathBook {
    groups: HashMap<PathKey, Bounds>,
    max: usize,
    memory_ns: u64,
    /// Observations folded into `other` because the book was full.
    pub folded: u64,
}

impl PathBook {
    pub fn new(max: usize, memory_s: u64) -> Self {
        PathBook {
            groups: HashMap::new(),
            max,
            memory_ns: memory_s.saturating_mul(1_000_000_000),
            folded: 0,
        }
    }

    fn group(&mut self, key: PathKey) -> &mut Bounds {
        let key = if self.groups.contains_key(&key) || self.groups.len() < self.max {
            key
        } else {
            self.folded += 1;
            PathKey::Other
        };
        self.groups.entry(key).or_default()
    }

    /// A connection on `key` survived an idle gap of `gap_s`.
    pub fn survived(&mut self, key: PathKey, gap_s: f64, now_ns: u64) {
        let memory = self.memory_ns;
        let b = self.group(key);
        b.survived_count += 1;
        let stale = |s: &Seen| now_ns.saturating_sub(s.at_ns) > memory;
        if b.survived.is_none_or(|s| gap_s >= s.gap_s || stale(&s)) {
            b.survived = Some(Seen {
                gap_s,
                at_ns: now_ns,
            });
        }
    }

    /// An idle gap of `gap_s` on `key` ended in a reset or a blackhole.
    pub fn fatal(&mut self, key: PathKey, gap_s: f64, why: Fatal, now_ns: u64) {
        let memory = self.memory_ns;
        let b = self.group(key);
        match why {
            Fatal::Reset => b.resets += 1,
            Fatal::Blackhole => b.blackholes += 1,
        }
        let stale = |s: &Seen| now_ns.saturating_sub(s.at_ns) > memory;
        if b.fatal.is_none_or(|s| gap_s <= s.gap_s || stale(&s)) {
            b.fatal = Some(Seen {
                gap_s,
                at_ns: now_ns,
            });
        }
    }

    /// A server on `key` closed a connection we opened after `gap_s` of
    /// silence. A range older than the memory starts again.
    pub fn peer_closed(&mut self, key: PathKey, gap_s: f64, now_ns: u64) {
        let memory = self.memory_ns;
        let b = self.group(key);
        let fresh = b
            .idle_closes
            .filter(|c| now_ns.saturating_sub(c.last_ns) <= memory);
        b.idle_closes = Some(match fresh {
            Some(c) => IdleCloses {
                min_s: c.min_s.min(gap_s),
                max_s: c.max_s.max(gap_s),
                count: c.count + 1,
                last_ns: now_ns,
            },
            None => IdleCloses {
                min_s: gap_s,
                max_s: gap_s,
                count: 1,
                last_ns: now_ns,
            },
        });
    }

    /// Forgets bounds older than the memory, and groups left with none.
    pub fn expire(&mut self, now_ns: u64) {
        let memory = self.memory_ns;
        let fresh = |s: &Option<Seen>| s.filter(|s| now_ns.saturating_sub(s.at_ns) <= memory);
        self.groups.retain(|_, b| {
            b.survived = fresh(&b.survived);
            b.fatal = fresh(&b.fatal);
            b.idle_closes = b
                .idle_closes
                .filter(|c| now_ns.saturating_sub(c.last_ns) <= memory);
            b.survived.is_some() || b.fatal.is_some() || b.idle_closes.is_some()
        });
    }

    #[cfg(test)]
    pub fn get(&self, key: &PathKey) -> Option<&Bounds> {
        self.groups.get(key)
    }

    /// The learned upper bound for a connection, in whole seconds.
    pub fn learned_timeout(
        &self,
        rules: &[Rule],
        remote: std::net::SocketAddr,
        service_port: u16,
    ) -> Option<(PathKey, u32)> {
        let key = PathKey::of(rules, remote, service_port)?;
        let fatal = self.groups.get(&key)?.fatal?;
        Some((key, fatal.gap_s.floor().max(1.0) as u32))
    }

    /// The idle closes learned of `key`'s servers.
    pub fn idle_closes_of(&self, key: &PathKey) -> Option<IdleCloses> {
        self.groups.get(key)?.idle_closes
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PathKey, &Bounds)> {
        self.groups.iter()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests;
