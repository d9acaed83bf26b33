//! Prometheus metrics (OpenMetrics text), all defined here. Per-socket
//! series would explode cardinality on a fleet, so metrics aggregate by
//! labels a user can bound: the owning workload (Kubernetes namespace, pod,
//! container, or systemd service; capped), service port (capped) and
//! cause; per-socket detail lives in `/sockets`. Network namespaces label
//! only their own gauges (sysctls, conntrack), unless `--netns-label`.

pub mod agent;
mod handles;
mod labels;
mod netns_fold;
mod process;
mod render;
mod runtime;
mod series;
#[cfg(test)]
mod tests;
mod text;

pub use agent::{AgentHealth, Scan};
pub use handles::SeriesKey;
use keepalive_common::KernelCounters;
use labels::PortLabels;
use labels::WorkloadLabels;
pub use labels::{
    HookLabels, Name, NetnsLabel, NetnsOpt, PathLabel, PeerCloseLabels, PortLabel, ResetLabels,
    RiskLabels, RttLabel, Scope, ScopePort, SocketsLabels, TimeoutLabels, Workload,
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
pub use render::Snapshot;
pub use text::to_prometheus_text;

/// A metric of type `M`, registered under `name` with `help`.
fn registered<M>(r: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let m = M::default();
    r.register(name, help, m.clone());
    m
}

/// Like [`registered`], with a unit suffix (`_seconds`).
fn registered_in<M>(r: &mut Registry, name: &str, help: &str, unit: Unit) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let m = M::default();
    r.register_with_unit(name, help, unit, m.clone());
    m
}

pub struct Metrics {
    pub(super) registry: Registry,
    pub probes: Family<ScopePort, Counter>,
    pub acks: Family<ScopePort, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    pub resets: Family<ResetLabels, Counter>,
    pub peer_closes: Family<PeerCloseLabels, Counter>,
    pub resets_sent: Family<ResetLabels, Counter>,
    pub blackholes: Family<ScopePort, Counter>,
    pub(super) path_survived: Family<PathLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) path_fatal: Family<PathLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) path_idle_close: Family<PathLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) idle_close: Family<ScopePort, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub(super) paths_folded: Counter,
    pub(super) last_folded: u64,
    /// Namespaces whose sysctl and conntrack series are folded, counted.
    pub(super) netns_folded: netns_fold::FoldCount,
    pub(super) conntrack_timeout: Family<NetnsLabel, Gauge>,
    pub(super) conntrack_loose: Family<NetnsLabel, Gauge>,
    pub rtt: Family<RttLabel, Histogram>,
    pub(super) sockets: Family<SocketsLabels, Gauge>,
    pub(super) at_risk: Family<RiskLabels, Gauge>,
    pub(super) sysctl_time: Family<NetnsLabel, Gauge>,
    pub(super) sysctl_intvl: Family<NetnsLabel, Gauge>,
    pub(super) sysctl_probes: Family<NetnsLabel, Gauge>,
    /// The agent's own health.
    pub agent: AgentHealth,
    /// Each namespace's series, to drop with it.
    pub(super) series: series::SeriesByNetns,
    pub(super) last_kernel: KernelCounters,
    pub(super) last_refused: u64,
    pub(super) last_evicted: u64,
    pub(super) ports: PortLabels,
    /// Distinct workloads labelled, capped by `--max-workloads`, and the
    /// count of what was folded.
    pub(super) workloads: WorkloadLabels,
    pub(super) runtime: runtime::RuntimeMetrics,
    /// Whether series carry `netns` (`--netns-label`).
    pub netns_label: bool,
    /// Probe and ACK counters by what their labels are made from.
    pub(super) cached: handles::SeriesCache,
}

/// What the metrics are configured with (flags).
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    pub max_port_labels: usize,
    pub max_workloads: usize,
    /// Label keepalive series by network namespace inode too.
    pub netns_label: bool,
    pub node: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_port_labels: 64,
            max_workloads: 2000,
            netns_label: false,
            node: String::new(),
        }
    }
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let r = &mut registry;
        let rtt = Family::<RttLabel, Histogram>::new_with_constructor(|| {
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
        let workloads_folded = registered(
            r,
            "keepalive_agent_workloads_folded",
            "Observations labelled namespace/pod/container=\"other\" because --max-workloads distinct workloads were labelled already",
        );
        Metrics {
            probes: registered(
                r,
                "keepalive_probes",
                "Keepalive probes the kernel sent (what TcpExt TCPKeepAlive counts), by Kubernetes namespace, pod and container (or systemd service) and service port",
            ),
            acks: registered(
                r,
                "keepalive_probe_acks",
                "Keepalive probes the peer answered, seen on the wire; probes minus acks are probes into the void",
            ),
            timeouts: registered(
                r,
                "keepalive_connection_timeouts",
                "Connections the kernel aborted with ETIMEDOUT, by cause (keepalive, retransmit, user_timeout, syn)",
            ),
            resets: registered(
                r,
                "keepalive_connection_resets",
                "Connections killed by a received RST, by class: idle_reset (it answered our first packet after an idle gap: a middlebox forgot the flow), stale_reuse (it answered our write after the peer's FIN: a pooled connection reused after the server closed it), idle_abort (unprompted, after an idle gap: the peer or a load balancer aborts idle connections) or peer_reset",
            ),
            peer_closes: registered(
                r,
                "keepalive_peer_closes",
                "Established connections the peer closed with a FIN (ESTABLISHED to CLOSE-WAIT); after_idle=\"true\" when the peer had been silent for at least --idle-gap-seconds: a server's idle close",
            ),
            resets_sent: registered(
                r,
                "keepalive_resets_sent",
                "RSTs the kernel sent on our connections, by class: data_after_close (data arrived after our application closed the connection: its client reused it), local_abort (we reset a live connection) or other",
            ),
            blackholes: registered(
                r,
                "keepalive_idle_blackholes",
                "Connections whose first data after an idle gap went unanswered through two retransmissions: a middlebox dropped the flow silently",
            ),
            path_survived: registered_in(
                r,
                "keepalive_path_idle_survived",
                "Longest idle gap a connection on the path survived (a lower bound of its idle timeout; max across the fleet)",
                Unit::Seconds,
            ),
            path_fatal: registered_in(
                r,
                "keepalive_path_idle_fatal",
                "Shortest idle gap on the path that ended in an idle reset or blackhole (an upper bound of its idle timeout; min across the fleet)",
                Unit::Seconds,
            ),
            path_idle_close: registered_in(
                r,
                "keepalive_peer_idle_close",
                "Shortest idle gap after which a server of the destination group closed a connection we opened (its FIN after silence: the server's idle timeout; a client pool's idle eviction must stay below it; min across the fleet)",
                Unit::Seconds,
            ),
            idle_close: registered_in(
                r,
                "keepalive_idle_close",
                "Shortest idle gap after which the workload's application closed a connection it had accepted (its own idle timeout: its clients' pools must evict idle connections sooner), by workload and port",
                Unit::Seconds,
            ),
            paths_folded: registered(
                r,
                "keepalive_agent_paths_folded",
                "Path observations folded into path=\"other\" because --max-paths groups were full",
            ),
            last_folded: 0,
            netns_folded: netns_fold::FoldCount::default(),
            conntrack_timeout: registered_in(
                r,
                "keepalive_conntrack_tcp_timeout_established",
                "net.netfilter.nf_conntrack_tcp_timeout_established of a namespace whose conntrack tracks flows",
                Unit::Seconds,
            ),
            conntrack_loose: registered(
                r,
                "keepalive_conntrack_tcp_loose",
                "net.netfilter.nf_conntrack_tcp_loose of a namespace whose conntrack tracks flows (0: an expired flow's next packet is invalid)",
            ),
            rtt,
            sockets: registered(
                r,
                "keepalive_sockets",
                "Established TCP sockets by keepalive on/off",
            ),
            at_risk: registered(
                r,
                "keepalive_sockets_at_risk",
                "Established sockets that can sit idle past the path idle timeout of the configured profile without a probe",
            ),
            sysctl_time: registered_in(
                r,
                "keepalive_sysctl_time",
                "net.ipv4.tcp_keepalive_time of the namespace",
                Unit::Seconds,
            ),
            sysctl_intvl: registered_in(
                r,
                "keepalive_sysctl_intvl",
                "net.ipv4.tcp_keepalive_intvl of the namespace",
                Unit::Seconds,
            ),
            sysctl_probes: registered(
                r,
                "keepalive_sysctl_probes",
                "net.ipv4.tcp_keepalive_probes of the namespace",
            ),
            agent: AgentHealth::register(r, &config.node),
            runtime: runtime::RuntimeMetrics::register(r),
            registry,
            series: Default::default(),
            last_kernel: KernelCounters::default(),
            last_refused: 0,
            last_evicted: 0,
            ports: PortLabels::new(config.max_port_labels),
            workloads: WorkloadLabels::new(config.max_workloads, workloads_folded),
            netns_label: config.netns_label,
            cached: Default::default(),
        }
    }

    /// Names learned or changed: cached series labels are made afresh.
    pub fn forget_cached_series(&mut self) {
        self.cached.clear();
    }
}
