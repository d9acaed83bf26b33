//! The keepalive series each network namespace contributed to, remembered
//! so that they can be dropped when the namespace is gone: a dead pod's
//! series would otherwise stay for ever. A series another live namespace
//! also counts into (the host's processes, a pod restarted into a new
//! namespace) stays.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

use keepalive_api::Owner;

use super::{
    Metrics, PeerCloseLabels, ResetLabels, RttLabel, Scope, ScopePort, TimeoutLabels, Workload,
};
use crate::api::naming::Naming;

/// Label sets one namespace has in the keepalive families.
#[derive(Default)]
pub struct NetnsSeries {
    ports: HashSet<ScopePort>,
    timeouts: HashSet<TimeoutLabels>,
    resets: HashSet<ResetLabels>,
    peer_closes: HashSet<PeerCloseLabels>,
    resets_sent: HashSet<ResetLabels>,
    idle_closes: HashSet<ScopePort>,
    blackholes: HashSet<ScopePort>,
    rtt: HashSet<RttLabel>,
}

/// By namespace inode.
pub type SeriesByNetns = HashMap<u32, NetnsSeries>;

impl Metrics {
    fn series_of(&mut self, netns: Option<u32>) -> Option<&mut NetnsSeries> {
        netns.map(|n| self.series.entry(n).or_default())
    }

    /// The series scope of a socket owned by `workload` in `netns`.
    pub fn scope(&mut self, workload: Workload, netns: Option<u32>) -> Scope {
        Scope {
            workload: self.workloads.label(workload),
            netns: super::NetnsOpt(netns.filter(|_| self.netns_label)),
        }
    }

    /// The series scope of a socket of `owner` in `netns`, its workload
    /// named by `naming`; and whether the workload cap folded that
    /// workload into "other" (this fold counted, later ones are the
    /// caller's: `WorkloadLabels::fold_again`).
    pub fn scope_of_owner(
        &mut self,
        naming: &mut Naming,
        owner: Option<&Owner>,
        netns: Option<u32>,
    ) -> (Scope, bool) {
        let workload = naming.workload(owner, netns);
        let named = workload != Workload::other();
        let scope = self.scope(workload, netns);
        let folded = named && scope.workload == Workload::other();
        (scope, folded)
    }

    // The agent counts through cached handles (`handles.rs`); the tests
    // count directly.
    #[cfg(test)]
    pub fn count_probes(&mut self, netns: Option<u32>, labels: &ScopePort, n: u64) {
        self.remember_port_series(netns, labels);
        self.probes.get_or_create(labels).inc_by(n);
    }

    #[cfg(test)]
    pub fn count_acks(&mut self, netns: Option<u32>, labels: &ScopePort, n: u64) {
        self.remember_port_series(netns, labels);
        self.acks.get_or_create(labels).inc_by(n);
    }

    /// Remembers that `netns` observes into the RTT series `label`.
    pub(super) fn remember_rtt_series(&mut self, netns: Option<u32>, label: &RttLabel) {
        if let Some(s) = self.series_of(netns)
            && !s.rtt.contains(label)
        {
            s.rtt.insert(label.clone());
        }
    }

    /// Remembers that `netns` counts into the probe/ACK series `labels`.
    pub(super) fn remember_port_series(&mut self, netns: Option<u32>, labels: &ScopePort) {
        if let Some(s) = self.series_of(netns)
            && !s.ports.contains(labels)
        {
            s.ports.insert(labels.clone());
        }
    }

    pub fn count_timeout(&mut self, netns: Option<u32>, labels: &TimeoutLabels) {
        if let Some(s) = self.series_of(netns) {
            s.timeouts.insert(labels.clone());
        }
        self.timeouts.get_or_create(labels).inc();
    }

    pub fn count_reset(&mut self, netns: Option<u32>, labels: &ResetLabels) {
        if let Some(s) = self.series_of(netns) {
            s.resets.insert(labels.clone());
        }
        self.resets.get_or_create(labels).inc();
    }

    pub fn count_peer_close(&mut self, netns: Option<u32>, labels: &PeerCloseLabels) {
        if let Some(s) = self.series_of(netns) {
            s.peer_closes.insert(labels.clone());
        }
        self.peer_closes.get_or_create(labels).inc();
    }

    pub fn count_reset_sent(&mut self, netns: Option<u32>, labels: &ResetLabels) {
        if let Some(s) = self.series_of(netns) {
            s.resets_sent.insert(labels.clone());
        }
        self.resets_sent.get_or_create(labels).inc();
    }

    /// The shortest idle gap after which this workload closed a
    /// connection it had accepted.
    pub fn observe_idle_close(&mut self, netns: Option<u32>, labels: &ScopePort, gap_s: f64) {
        if let Some(s) = self.series_of(netns) {
            s.idle_closes.insert(labels.clone());
        }
        let g = self.idle_close.get_or_create(labels);
        if g.get() == 0.0 || gap_s < g.get() {
            g.set(gap_s);
        }
    }

    pub fn count_blackhole(&mut self, netns: Option<u32>, labels: &ScopePort) {
        if let Some(s) = self.series_of(netns) {
            s.blackholes.insert(labels.clone());
        }
        self.blackholes.get_or_create(labels).inc();
    }

    #[cfg(test)]
    pub fn observe_rtt(&mut self, netns: Option<u32>, labels: &RttLabel, seconds: f64) {
        self.remember_rtt_series(netns, labels);
        self.rtt.get_or_create(labels).observe(seconds);
    }

    /// Drops the keepalive series only namespace `netns` counted into.
    pub fn forget_netns(&mut self, netns: u32) {
        let Some(gone) = self.series.remove(&netns) else {
            return;
        };
        // Cached counters may be of series removed here, and the workload
        // cap may free places: labels are made afresh.
        self.forget_cached_series();
        for l in unheld(&gone.ports, &self.series, |s| &s.ports) {
            self.probes.remove(l);
            self.acks.remove(l);
        }
        for l in unheld(&gone.timeouts, &self.series, |s| &s.timeouts) {
            self.timeouts.remove(l);
        }
        for l in unheld(&gone.resets, &self.series, |s| &s.resets) {
            self.resets.remove(l);
        }
        for l in unheld(&gone.peer_closes, &self.series, |s| &s.peer_closes) {
            self.peer_closes.remove(l);
        }
        for l in unheld(&gone.resets_sent, &self.series, |s| &s.resets_sent) {
            self.resets_sent.remove(l);
        }
        for l in unheld(&gone.idle_closes, &self.series, |s| &s.idle_closes) {
            self.idle_close.remove(l);
        }
        for l in unheld(&gone.blackholes, &self.series, |s| &s.blackholes) {
            self.blackholes.remove(l);
        }
        for l in unheld(&gone.rtt, &self.series, |s| &s.rtt) {
            self.rtt.remove(l);
        }
        // Workloads no live namespace counts into free their place under
        // the cap.
        let workloads: HashSet<Workload> = self
            .series
            .values()
            .flat_map(|s| {
                s.ports
                    .iter()
                    .map(|l| &l.scope)
                    .chain(s.timeouts.iter().map(|l| &l.scope))
                    .chain(s.resets.iter().map(|l| &l.scope))
                    .chain(s.peer_closes.iter().map(|l| &l.scope))
                    .chain(s.resets_sent.iter().map(|l| &l.scope))
                    .chain(s.idle_closes.iter().map(|l| &l.scope))
                    .chain(s.blackholes.iter().map(|l| &l.scope))
            })
            .map(|scope| scope.workload.clone())
            .collect();
        self.workloads.retain(&workloads);
    }
}

/// The label sets of a gone namespace that no live namespace's series
/// hold (`of` picks one family's sets).
fn unheld<'a, L: Eq + Hash>(
    gone: &'a HashSet<L>,
    live: &'a SeriesByNetns,
    of: fn(&NetnsSeries) -> &HashSet<L>,
) -> impl Iterator<Item = &'a L> {
    gone.iter()
        .filter(move |l| !live.values().any(|s| of(s).contains(*l)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::{MetricsConfig, Name, PortLabel};

    fn pod(name: &str) -> Workload {
        Workload {
            namespace: Name::of(Some("shop")),
            pod: Name::of(Some(name)),
            ..Workload::default()
        }
    }

    #[test]
    fn a_gone_namespace_takes_only_its_own_series_along() {
        let mut m = Metrics::new(MetricsConfig::default());
        let at = |m: &mut Metrics, w: Workload| ScopePort {
            scope: m.scope(w, Some(1)),
            port: PortLabel::Port(22),
        };
        let (a, host) = (at(&mut m, pod("web-0")), at(&mut m, Workload::default()));
        m.count_probes(Some(1), &a, 3);
        m.count_acks(Some(1), &a, 2);
        m.observe_rtt(Some(1), &RttLabel::default(), 0.001);
        // The host's processes count from namespace 1 and 2.
        m.count_probes(Some(1), &host, 1);
        m.count_probes(Some(2), &host, 5);
        m.forget_netns(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(!text.contains("web-0"), "{text}");
        assert!(
            !text.contains("netns="),
            "no netns label by default: {text}"
        );
        assert!(
            text.contains(
                "keepalive_probes_total{namespace=\"\",pod=\"\",container=\"\",service=\"\",port=\"22\"} 6"
            ),
            "{text}"
        );
    }

    #[test]
    fn workloads_past_the_cap_fold_into_other() {
        let mut m = Metrics::new(MetricsConfig {
            max_workloads: 2,
            netns_label: true,
            ..MetricsConfig::default()
        });
        let scopes: Vec<Scope> = ["a", "b", "c"]
            .iter()
            .map(|p| m.scope(pod(p), Some(7)))
            .collect();
        assert_eq!(scopes[2].workload, Workload::other());
        assert_eq!(m.workloads.folded(), 1);
        assert_eq!(scopes[0].netns.0, Some(7), "--netns-label keeps netns");
        assert_eq!(m.scope(pod("a"), Some(7)).workload, pod("a"));
    }
}
