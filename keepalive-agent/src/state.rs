//! The agent's shared state: what the event loop learns and what the HTTP
//! endpoints serve. One mutex, held briefly by each side.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use crate::{
    counters::{CounterReader, KernelCounters},
    events::Record,
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
    pub kernel_counters: CounterReader,
    pub rules: Vec<Rule>,
    pub metrics: Metrics,
    pub tc_interfaces: usize,
}

pub type Shared = Arc<Mutex<AgentState>>;

impl AgentState {
    /// Counts one record into the metrics.
    pub fn count(&mut self, r: &Record) {
        self.metrics.events_read.inc();
        let netns = r.netns;
        let port = |m: &mut crate::metrics::Metrics| {
            let l = r.local.map_or(0, |a| a.port());
            let p = r.remote.map_or(0, |a| a.port());
            m.port_label(l, p)
        };
        match r.event {
            "probe_sent" => {
                let port = port(&mut self.metrics);
                self.metrics
                    .probes
                    .get_or_create(&NetnsPort { netns, port })
                    .inc();
            }
            "probe_ack" => {
                let port = port(&mut self.metrics);
                // Wire events carry no namespace; the table knows it.
                let netns = self.table.get(r.cookie).and_then(|e| e.netns).or(netns);
                self.metrics
                    .acks
                    .get_or_create(&NetnsPort { netns, port })
                    .inc();
                if let Some(us) = r.rtt_us {
                    self.metrics
                        .rtt
                        .get_or_create(&NetnsLabel { netns })
                        .observe(us / 1e6);
                }
            }
            _ if r.errno == Some(crate::events::ETIMEDOUT) => {
                let port = port(&mut self.metrics);
                let cause = r.cause.unwrap_or("other");
                self.metrics
                    .timeouts
                    .get_or_create(&TimeoutLabels { netns, port, cause })
                    .inc();
            }
            _ => {}
        }
    }

    /// Reads the kernel's counters afresh (a scrape sees them as of now).
    pub fn refresh_kernel(&mut self) -> Result<KernelCounters, aya::maps::MapError> {
        self.kernel = self.kernel_counters.read()?;
        Ok(self.kernel)
    }

    pub fn render_metrics(&mut self) -> String {
        if let Err(e) = self.refresh_kernel() {
            log::warn!("reading kernel counters: {e}");
        }
        let AgentState {
            table,
            sysctls,
            hooks,
            kernel,
            rules,
            metrics,
            tc_interfaces,
            kernel_counters: _,
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
