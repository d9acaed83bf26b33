//! The agent's shared state: what the event loop learns and what the HTTP
//! endpoints serve. One mutex, held briefly by each side.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use keepalive_api::{HookStatus, Record, RecordKind};
use keepalive_common::KernelCounters;

use super::metrics::{Metrics, NetnsLabel, NetnsPort, Snapshot, TimeoutLabels};
use crate::{
    bpf::counters::CounterReader, host::sysctl::KeepaliveSysctls, model::risk::Rule,
    table::SocketTable,
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
        let port = |m: &mut Metrics| {
            let l = r.local.map_or(0, |a| a.port());
            let p = r.remote.map_or(0, |a| a.port());
            m.port_label(l, p)
        };
        match r.event {
            RecordKind::ProbeSent => {
                let port = port(&mut self.metrics);
                let netns = r.netns;
                self.metrics
                    .probes
                    .get_or_create(&NetnsPort { netns, port })
                    .inc();
            }
            RecordKind::ProbeAck => {
                let port = port(&mut self.metrics);
                // Wire events carry no namespace; the table knows it.
                let netns = self.table.get(r.cookie).and_then(|e| e.netns).or(r.netns);
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
            RecordKind::KeepaliveTimeout | RecordKind::ConnectionTimeout => {
                let port = port(&mut self.metrics);
                let labels = TimeoutLabels {
                    netns: r.netns,
                    port,
                    cause: r.cause.map_or("other", |c| c.as_str()),
                };
                self.metrics.timeouts.get_or_create(&labels).inc();
            }
            RecordKind::KeepaliveTimer
            | RecordKind::WireProbe
            | RecordKind::SocketError
            | RecordKind::StateChange
            | RecordKind::SocketClosed
            | RecordKind::SysctlChanged => {}
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
