//! Prometheus metrics (OpenMetrics text), all defined here. Per-socket
//! series would explode cardinality on a fleet, so metrics aggregate by
//! labels a user can bound: network namespace, service port (capped) and
//! cause; per-socket detail lives in `/sockets`.

mod labels;
mod render;
#[cfg(test)]
mod tests;
mod text;

use keepalive_common::KernelCounters;
use labels::PortLabels;
pub use labels::{
    HookLabels, NetnsLabel, NetnsPort, PortLabel, RiskLabels, SocketsLabels, TimeoutLabels,
    VersionLabel,
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
pub use render::Snapshot;
pub use text::to_prometheus_text;

pub struct Metrics {
    pub(super) registry: Registry,
    pub probes: Family<NetnsPort, Counter>,
    pub acks: Family<NetnsPort, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    pub rtt: Family<NetnsLabel, Histogram>,
    pub(super) sockets: Family<SocketsLabels, Gauge>,
    pub(super) at_risk: Family<RiskLabels, Gauge>,
    pub(super) sysctl_time: Family<NetnsLabel, Gauge>,
    pub(super) sysctl_intvl: Family<NetnsLabel, Gauge>,
    pub(super) sysctl_probes: Family<NetnsLabel, Gauge>,
    pub(super) hook_up: Family<HookLabels, Gauge>,
    pub events_read: Counter,
    pub(super) events_lost: Counter,
    pub(super) kernel_probes: Counter,
    pub(super) kernel_timeouts: Counter,
    pub(super) socket_map_full: Counter,
    pub(super) read_errors: Counter,
    pub(super) sockets_refused: Counter,
    pub clients_dropped: Counter,
    pub(super) tc_interfaces: Gauge,
    pub(super) tracked: Gauge,
    pub(super) last_kernel: KernelCounters,
    pub(super) last_refused: u64,
    pub(super) ports: PortLabels,
}

impl Metrics {
    pub fn new(max_port_labels: usize) -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let probes = Family::default();
        r.register("keepalive_probes", "Keepalive probes the kernel sent (what TcpExt TCPKeepAlive counts), by network namespace and service port", probes.clone());
        let acks = Family::default();
        r.register("keepalive_probe_acks", "Keepalive probes the peer answered, seen on the wire; probes minus acks are probes into the void", acks.clone());
        let timeouts = Family::default();
        r.register("keepalive_connection_timeouts", "Connections the kernel aborted with ETIMEDOUT, by cause (keepalive, retransmit, user_timeout, syn)", timeouts.clone());
        let rtt = Family::<NetnsLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3,
                250e-3, 1.0,
            ])
        });
        r.register_with_unit(
            "keepalive_probe_rtt",
            "Round-trip time of answered keepalive probes",
            Unit::Seconds,
            rtt.clone(),
        );
        let sockets = Family::default();
        r.register(
            "keepalive_sockets",
            "Established TCP sockets by keepalive on/off",
            sockets.clone(),
        );
        let at_risk = Family::default();
        r.register("keepalive_sockets_at_risk", "Established sockets that can sit idle past the path idle timeout of the configured profile without a probe", at_risk.clone());
        let sysctl_time = Family::default();
        r.register_with_unit(
            "keepalive_sysctl_time",
            "net.ipv4.tcp_keepalive_time of the namespace",
            Unit::Seconds,
            sysctl_time.clone(),
        );
        let sysctl_intvl = Family::default();
        r.register_with_unit(
            "keepalive_sysctl_intvl",
            "net.ipv4.tcp_keepalive_intvl of the namespace",
            Unit::Seconds,
            sysctl_intvl.clone(),
        );
        let sysctl_probes = Family::default();
        r.register(
            "keepalive_sysctl_probes",
            "net.ipv4.tcp_keepalive_probes of the namespace",
            sysctl_probes.clone(),
        );
        // A gauge at 1 rather than an OpenMetrics info: Prometheus' own text
        // parser (promtool, older servers) does not know the info type.
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register("keepalive_agent_build_info", "Agent version", build_info);
        let hook_up = Family::default();
        r.register(
            "keepalive_agent_hook_up",
            "1 when the hook is attached, by the mode in use (fentry, tp_btf, tcx, netlink)",
            hook_up.clone(),
        );
        let events_read = Counter::default();
        r.register(
            "keepalive_agent_events_read",
            "Events read from the kernel ring buffer",
            events_read.clone(),
        );
        let events_lost = Counter::default();
        r.register(
            "keepalive_agent_events_lost",
            "Events the kernel could not queue (ring buffer full); kernel counters stay exact",
            events_lost.clone(),
        );
        let kernel_probes = Counter::default();
        r.register(
            "keepalive_agent_kernel_probes",
            "Probes counted in the kernel (exact even when events are lost)",
            kernel_probes.clone(),
        );
        let kernel_timeouts = Counter::default();
        r.register(
            "keepalive_agent_kernel_keepalive_timeouts",
            "Keepalive ETIMEDOUT kills counted in the kernel",
            kernel_timeouts.clone(),
        );
        let socket_map_full = Counter::default();
        r.register(
            "keepalive_agent_socket_map_full",
            "Sockets the kernel map could not track because it was full",
            socket_map_full.clone(),
        );
        let read_errors = Counter::default();
        r.register(
            "keepalive_agent_kernel_read_errors",
            "Kernel memory reads that failed in the programs",
            read_errors.clone(),
        );
        let sockets_refused = Counter::default();
        r.register(
            "keepalive_agent_sockets_refused",
            "Sockets the agent's table could not track because it was full",
            sockets_refused.clone(),
        );
        let clients_dropped = Counter::default();
        r.register(
            "keepalive_agent_event_clients_dropped",
            "HTTP clients disconnected for reading too slowly (/events streams that fell behind or stopped reading)",
            clients_dropped.clone(),
        );
        let tc_interfaces = Gauge::default();
        r.register(
            "keepalive_agent_tc_interfaces",
            "Interfaces with the TC classifiers attached",
            tc_interfaces.clone(),
        );
        let tracked = Gauge::default();
        r.register(
            "keepalive_agent_tracked_sockets",
            "Sockets in the agent's table",
            tracked.clone(),
        );
        Metrics {
            registry,
            probes,
            acks,
            timeouts,
            rtt,
            sockets,
            at_risk,
            sysctl_time,
            sysctl_intvl,
            sysctl_probes,
            hook_up,
            events_read,
            events_lost,
            kernel_probes,
            kernel_timeouts,
            socket_map_full,
            read_errors,
            sockets_refused,
            clients_dropped,
            tc_interfaces,
            tracked,
            last_kernel: KernelCounters::default(),
            last_refused: 0,
            ports: PortLabels::new(max_port_labels),
        }
    }
}
