//! The probe and ACK counters a socket's credit goes to, kept by what
//! decides their labels (owner, namespace, port) once looked up: a probe
//! or ACK then costs one small lookup and an atomic add, not a workload's
//! labels made and hashed into two families and a namespace's set (most
//! of the agent's CPU per event before, #15). Emptied whenever a label
//! could come out different: names learned or changed (`names_changed`),
//! a namespace's series dropped, the workload cap freeing places; and when
//! it reaches its bound.

use std::{collections::HashMap, hash::Hash, sync::Arc};

use keepalive_api::Owner;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::{Metrics, PortLabel, RttLabel, ScopePort};

/// Entries before the cache starts over (a node with more owner × port ×
/// namespace combinations than this pays the full lookup more often).
const MAX_ENTRIES: usize = 16_384;

/// An owner by identity: the table interns one `Arc` per process, and
/// holding it keeps its address from being reused by another owner.
#[derive(Clone)]
struct ByAddress(Arc<Owner>);

impl PartialEq for ByAddress {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ByAddress {}

impl Hash for ByAddress {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        Arc::as_ptr(&self.0).hash(h);
    }
}

/// What a socket's series labels are made from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    owner: Option<ByAddress>,
    netns: Option<u32>,
    port: PortLabel,
}

impl SeriesKey {
    pub fn new(owner: Option<Arc<Owner>>, netns: Option<u32>, port: PortLabel) -> Self {
        SeriesKey {
            owner: owner.map(ByAddress),
            netns,
            port,
        }
    }

    pub fn owner(&self) -> Option<Arc<Owner>> {
        self.owner.as_ref().map(|o| o.0.clone())
    }

    pub fn netns(&self) -> Option<u32> {
        self.netns
    }

    pub fn port(&self) -> PortLabel {
        self.port
    }
}

/// One label set's counters, each made on its first use (a series that
/// never counted is not exported at 0).
struct Handles {
    labels: ScopePort,
    probes: Option<Counter>,
    acks: Option<Counter>,
    rtt: Option<Histogram>,
    /// Whether the workload was folded into "other" by the cap: every
    /// observation so folded is counted, cached or not.
    folded: bool,
}

/// Hashed with foldhash: the keys are a pointer and two small integers,
/// hashed once or twice per event (SipHash was most of a hit's cost).
#[derive(Default)]
pub struct SeriesCache {
    by_key: HashMap<SeriesKey, Handles, foldhash::fast::RandomState>,
}

impl SeriesCache {
    pub fn clear(&mut self) {
        self.by_key.clear();
    }
}

/// Which of a label set's two counters.
#[derive(Clone, Copy)]
enum Which {
    Probes,
    Acks,
}

impl Metrics {
    /// Remembers `labels` (made for `key`; `folded` when the workload cap
    /// folded them) for the next credits of `key`.
    pub fn cache_series(&mut self, key: SeriesKey, labels: ScopePort, folded: bool) {
        if self.cached.by_key.len() >= MAX_ENTRIES {
            self.cached.clear();
        }
        self.cached.by_key.insert(
            key,
            Handles {
                labels,
                probes: None,
                acks: None,
                rtt: None,
                folded,
            },
        );
    }

    /// Whether `key`'s labels are cached; a use of a folded workload's
    /// counts as one more fold (as making its labels would have).
    pub fn use_cached(&mut self, key: &SeriesKey) -> bool {
        let Some(h) = self.cached.by_key.get(key) else {
            return false;
        };
        if h.folded {
            self.workloads.fold_again();
        }
        true
    }

    /// Observes an RTT into the histogram of `key`'s namespace label
    /// (nothing if `key` is not cached).
    pub fn observe_rtt_cached(&mut self, key: &SeriesKey, seconds: f64) {
        let Some(h) = self.cached.by_key.get(key) else {
            return;
        };
        if let Some(rtt) = &h.rtt {
            rtt.observe(seconds);
            return;
        }
        let label = RttLabel {
            namespace: h.labels.scope.workload.namespace.clone(),
        };
        self.remember_rtt_series(key.netns, &label);
        let rtt = self.rtt.get_or_create(&label).clone();
        rtt.observe(seconds);
        if let Some(h) = self.cached.by_key.get_mut(key) {
            h.rtt = Some(rtt);
        }
    }

    /// Adds to the cached series of `key` (nothing if there is none).
    pub fn add_cached(&mut self, key: &SeriesKey, probes: u64, acks: u64) {
        let Some(h) = self.cached.by_key.get(key) else {
            return;
        };
        // The usual case: the counters are made already, one lookup.
        let ready = |c: &Option<Counter>, n: u64| n == 0 || c.is_some();
        if ready(&h.probes, probes) && ready(&h.acks, acks) {
            for (c, n) in [(&h.probes, probes), (&h.acks, acks)] {
                if let Some(c) = c.as_ref().filter(|_| n > 0) {
                    c.inc_by(n);
                }
            }
            return;
        }
        for (which, n) in [(Which::Probes, probes), (Which::Acks, acks)] {
            if n > 0 {
                self.make_counter(key, which).inc_by(n);
            }
        }
    }

    /// The label set's counter, made on first use, its label set then
    /// remembered for its namespace (to drop with it).
    fn make_counter(&mut self, key: &SeriesKey, which: Which) -> Counter {
        let h = &self.cached.by_key[key];
        if let Some(c) = h.counter(which) {
            return c.clone();
        }
        let labels = h.labels.clone();
        self.remember_port_series(key.netns, &labels);
        let family = match which {
            Which::Probes => &self.probes,
            Which::Acks => &self.acks,
        };
        let c = family.get_or_create(&labels).clone();
        if let Some(h) = self.cached.by_key.get_mut(key) {
            match which {
                Which::Probes => h.probes = Some(c.clone()),
                Which::Acks => h.acks = Some(c.clone()),
            }
        }
        c
    }
}

impl Handles {
    fn counter(&self, which: Which) -> Option<&Counter> {
        match which {
            Which::Probes => self.probes.as_ref(),
            Which::Acks => self.acks.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::{MetricsConfig, Name, Workload};

    fn web0() -> Workload {
        Workload {
            namespace: Name::of(Some("shop")),
            pod: Name::of(Some("web-0")),
            ..Workload::default()
        }
    }

    fn probes_of(m: &Metrics, pod: &str) -> Option<u64> {
        m.probes
            .get(&ScopePort {
                scope: super::super::Scope {
                    workload: Workload {
                        namespace: Name::of(Some("shop")),
                        pod: Name::of(Some(pod)),
                        ..Workload::default()
                    },
                    netns: super::super::NetnsOpt(None),
                },
                port: PortLabel::Port(22),
            })
            .map(|c| c.get())
    }

    fn cache(m: &mut Metrics, key: &SeriesKey, w: Workload) {
        let scope = m.scope(w, key.netns);
        let labels = ScopePort {
            scope,
            port: PortLabel::Port(22),
        };
        m.cache_series(key.clone(), labels, false);
    }

    #[test]
    fn cached_credits_reach_the_family_and_survive_a_dropped_namespace() {
        let mut m = Metrics::new(MetricsConfig::default());
        let owner = Arc::new(Owner::default());
        let key = SeriesKey::new(Some(owner.clone()), Some(7), PortLabel::Port(22));
        assert!(!m.use_cached(&key), "nothing cached yet");
        cache(&mut m, &key, web0());
        m.add_cached(&key, 2, 0);
        assert!(m.use_cached(&key));
        m.add_cached(&key, 3, 1);
        m.observe_rtt_cached(&key, 0.001);
        assert_eq!(probes_of(&m, "web-0"), Some(5));
        assert!(m.acks.get(&m.cached.by_key[&key].labels).is_some());
        // The namespace's series are dropped: the cached counter with them.
        m.forget_netns(7);
        assert_eq!(probes_of(&m, "web-0"), None);
        assert!(!m.use_cached(&key), "made afresh after a drop");
        cache(&mut m, &key, web0());
        m.add_cached(&key, 1, 0);
        assert_eq!(probes_of(&m, "web-0"), Some(1), "counted, not lost");
        // Another owner with equal fields is another key (by identity).
        let twin = SeriesKey::new(
            Some(Arc::new(Owner::default())),
            Some(7),
            PortLabel::Port(22),
        );
        assert!(!m.use_cached(&twin));
    }

    #[test]
    fn a_folded_workload_counts_every_fold_cached_or_not() {
        let mut m = Metrics::new(MetricsConfig {
            max_workloads: 1,
            ..MetricsConfig::default()
        });
        let first = SeriesKey::new(None, Some(1), PortLabel::Port(22));
        cache(&mut m, &first, web0());
        let key = SeriesKey::new(None, Some(2), PortLabel::Port(22));
        let mut web1 = web0();
        web1.pod = Name::of(Some("web-1"));
        let scope = m.scope(web1, Some(2));
        assert_eq!(scope.workload, Workload::other());
        assert_eq!(m.workloads.folded(), 1);
        let labels = ScopePort {
            scope,
            port: PortLabel::Port(22),
        };
        m.cache_series(key.clone(), labels, true);
        m.add_cached(&key, 1, 0);
        assert!(m.use_cached(&key));
        assert!(m.use_cached(&key));
        assert_eq!(m.workloads.folded(), 3, "each observation folded once");
    }
}
