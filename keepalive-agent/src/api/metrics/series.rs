//! The keepalive series of each namespace, remembered so that they can be
//! dropped when the namespace is gone: a dead namespace's series would
//! otherwise stay for ever, and merge into a new namespace that reuses
//! its inode.

use std::collections::{HashMap, HashSet};

use super::{Metrics, NetnsLabel, NetnsPort, ResetLabels, TimeoutLabels};

/// Label sets one namespace has in the keepalive families.
#[derive(Default)]
pub struct NetnsSeries {
    ports: HashSet<NetnsPort>,
    timeouts: HashSet<TimeoutLabels>,
    resets: HashSet<ResetLabels>,
    blackholes: HashSet<NetnsPort>,
}

/// By namespace inode.
pub type SeriesByNetns = HashMap<u32, NetnsSeries>;

impl Metrics {
    fn series_of(&mut self, netns: Option<u32>) -> Option<&mut NetnsSeries> {
        netns.map(|n| self.series.entry(n).or_default())
    }

    pub fn count_probes(&mut self, labels: &NetnsPort, n: u64) {
        if let Some(s) = self.series_of(labels.netns) {
            s.ports.insert(labels.clone());
        }
        self.probes.get_or_create(labels).inc_by(n);
    }

    pub fn count_acks(&mut self, labels: &NetnsPort, n: u64) {
        if let Some(s) = self.series_of(labels.netns) {
            s.ports.insert(labels.clone());
        }
        self.acks.get_or_create(labels).inc_by(n);
    }

    pub fn count_timeout(&mut self, labels: &TimeoutLabels) {
        if let Some(s) = self.series_of(labels.netns) {
            s.timeouts.insert(labels.clone());
        }
        self.timeouts.get_or_create(labels).inc();
    }

    pub fn count_reset(&mut self, labels: &ResetLabels) {
        if let Some(s) = self.series_of(labels.netns) {
            s.resets.insert(labels.clone());
        }
        self.resets.get_or_create(labels).inc();
    }

    pub fn count_blackhole(&mut self, labels: &NetnsPort) {
        if let Some(s) = self.series_of(labels.netns) {
            s.blackholes.insert(labels.clone());
        }
        self.blackholes.get_or_create(labels).inc();
    }

    pub fn observe_rtt(&mut self, netns: Option<u32>, seconds: f64) {
        let _ = self.series_of(netns);
        self.rtt
            .get_or_create(&NetnsLabel { netns })
            .observe(seconds);
    }

    /// Drops every keepalive series of namespace `netns`.
    pub fn forget_netns(&mut self, netns: u32) {
        let Some(s) = self.series.remove(&netns) else {
            return;
        };
        for l in &s.ports {
            self.probes.remove(l);
            self.acks.remove(l);
        }
        for l in &s.timeouts {
            self.timeouts.remove(l);
        }
        for l in &s.resets {
            self.resets.remove(l);
        }
        for l in &s.blackholes {
            self.blackholes.remove(l);
        }
        self.rtt.remove(&NetnsLabel { netns: Some(netns) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::PortLabel;

    #[test]
    fn a_gone_namespace_takes_its_series_along() {
        let mut m = Metrics::new(8);
        let (a, b) = (
            NetnsPort {
                netns: Some(1),
                port: PortLabel::Port(22),
            },
            NetnsPort {
                netns: Some(2),
                port: PortLabel::Port(22),
            },
        );
        m.count_probes(&a, 3);
        m.count_acks(&a, 2);
        m.observe_rtt(Some(1), 0.001);
        m.count_probes(&b, 5);
        m.forget_netns(1);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(!text.contains("netns=\"1\""), "{text}");
        assert!(
            text.contains("keepalive_probes_total{netns=\"2\",port=\"22\"} 5"),
            "{text}"
        );
    }
}
