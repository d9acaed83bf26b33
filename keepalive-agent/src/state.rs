//! The agent's shared state: what the event loop learns and what the HTTP
//! endpoints serve. One mutex, held briefly by each side.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use crate::{
    counters::KernelCounters,
    events::Record,
    filters::port_of,
    loader::HookStatus,
    metrics::{Metrics, NetnsLabel, NetnsPort, Snapshot, TimeoutLabels},
    risk::Rule,
    sockets::SocketTable,
    sysctl::KeepaliveSysctls,
};

pub struct AgentState {
    pub table: SocketTable,
    pub sysctls: BTreeMap<u64, KeepaliveSysctls>,
    pub hooks: Vec<HookStatus>,
    pub kernel: KernelCounters,
    pub rules: Vec<Rule>,
    pub metrics: Metrics,
    pub tc_interfaces: usize,
}

pub type Shared = Arc<Mutex<AgentState>>;

impl AgentState {
    /// Counts one record into the metrics.
    pub fn count(&mut self, r: &Record) {
        self.metrics.events_read.inc();
        let netns = r.netns.map(|n| n.to_string()).unwrap_or_default();
        let port = || {
            let l = r.local.as_deref().and_then(port_of).unwrap_or(0);
            let p = r.remote.as_deref().and_then(port_of).unwrap_or(0);
            (l, p)
        };
        match r.event {
            "probe_sent" => {
                let (l, p) = port();
                let port = self.metrics.port_label(l, p);
                self.metrics
                    .probes
                    .get_or_create(&NetnsPort { netns, port })
                    .inc();
            }
            "probe_ack" => {
                let (l, p) = port();
                let port = self.metrics.port_label(l, p);
                // Wire events carry no namespace; the table knows it.
                let netns = self
                    .table
                    .get(r.cookie)
                    .and_then(|e| e.netns)
                    .map(|n| n.to_string())
                    .unwrap_or(netns);
                self.metrics
                    .acks
                    .get_or_create(&NetnsPort {
                        netns: netns.clone(),
                        port,
                    })
                    .inc();
                if let Some(us) = r.rtt_us {
                    self.metrics
                        .rtt
                        .get_or_create(&NetnsLabel { netns })
                        .observe(us / 1e6);
                }
            }
            _ if r.errno == Some(crate::events::ETIMEDOUT) => {
                let (l, p) = port();
                let port = self.metrics.port_label(l, p);
                let cause = r.cause.unwrap_or("other").to_string();
                self.metrics
                    .timeouts
                    .get_or_create(&TimeoutLabels { netns, port, cause })
                    .inc();
            }
            _ => {}
        }
    }

    pub fn render_metrics(&mut self) -> String {
        let AgentState {
            table,
            sysctls,
            hooks,
            kernel,
            rules,
            metrics,
            tc_interfaces,
        } = self;
        metrics.render(Snapshot {
            hooks,
            kernel,
            table,
            sysctls,
            rules,
            tc_interfaces: *tc_interfaces,
        })
    }
}
