//! Prometheus metrics (OpenMetrics text), all defined here. Per-socket
//! series would explode cardinality on a fleet, so metrics aggregate by
//! labels a user can bound: network namespace, service port (capped) and
//! cause; per-socket detail lives in `/sockets`.

use std::collections::{BTreeMap, HashSet};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{
    counters::KernelCounters,
    loader::HookStatus,
    risk::Rule,
    sockets::{self, SocketTable},
    sysctl::KeepaliveSysctls,
};

/// A namespace's inode; empty when unknown. Label values are typed, not
/// strings: the event path counts tens of thousands of probes a second
/// and should not allocate to do it.
pub type NetnsValue = Option<u32>;

/// A service port, or "other" past `--max-port-labels`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PortLabel {
    Port(u16),
    Other,
}

impl EncodeLabelValue for PortLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            PortLabel::Port(p) => EncodeLabelValue::encode(p, encoder),
            PortLabel::Other => EncodeLabelValue::encode(&"other", encoder),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetnsPort {
    pub netns: NetnsValue,
    pub port: PortLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub netns: NetnsValue,
    pub port: PortLabel,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetnsLabel {
    pub netns: NetnsValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketsLabels {
    pub netns: NetnsValue,
    pub keepalive: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RiskLabels {
    pub netns: NetnsValue,
    pub port: PortLabel,
    pub profile: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub probes: Family<NetnsPort, Counter>,
    pub acks: Family<NetnsPort, Counter>,
    pub timeouts: Family<TimeoutLabels, Counter>,
    pub rtt: Family<NetnsLabel, Histogram>,
    sockets: Family<SocketsLabels, Gauge>,
    at_risk: Family<RiskLabels, Gauge>,
    sysctl_time: Family<NetnsLabel, Gauge>,
    sysctl_intvl: Family<NetnsLabel, Gauge>,
    sysctl_probes: Family<NetnsLabel, Gauge>,
    hook_up: Family<HookLabels, Gauge>,
    pub events_read: Counter,
    events_lost: Counter,
    kernel_probes: Counter,
    kernel_timeouts: Counter,
    socket_map_full: Counter,
    read_errors: Counter,
    sockets_refused: Counter,
    pub clients_dropped: Counter,
    tc_interfaces: Gauge,
    tracked: Gauge,
    last_kernel: KernelCounters,
    last_refused: u64,
    ports: PortLabels,
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

    /// The label of a connection's service port: the lower of the two
    /// (servers listen low, clients bind ephemeral ports), capped.
    pub fn port_label(&mut self, local: u16, remote: u16) -> PortLabel {
        self.ports.label(local.min(remote))
    }

    /// Refreshes gauges and kernel-derived counters, then encodes.
    pub fn render(&mut self, s: Snapshot<'_>) -> String {
        self.hook_up.clear();
        for h in s.hooks {
            self.hook_up
                .get_or_create(&HookLabels {
                    hook: h.hook.into(),
                    mode: h.mode.clone(),
                })
                .set(i64::from(h.live));
        }
        let k = s.kernel;
        let last = self.last_kernel;
        self.events_lost
            .inc_by(k.events_lost.saturating_sub(last.events_lost));
        self.kernel_probes
            .inc_by(k.probes.saturating_sub(last.probes));
        self.kernel_timeouts
            .inc_by(k.keepalive_timeouts.saturating_sub(last.keepalive_timeouts));
        self.socket_map_full
            .inc_by(k.socket_map_full.saturating_sub(last.socket_map_full));
        self.read_errors
            .inc_by(k.read_errors.saturating_sub(last.read_errors));
        self.last_kernel = *k;
        self.sockets_refused
            .inc_by(s.table.refused.saturating_sub(self.last_refused));
        self.last_refused = s.table.refused;
        self.tc_interfaces.set(s.tc_interfaces as i64);
        self.tracked.set(s.table.len() as i64);

        self.sysctl_time.clear();
        self.sysctl_intvl.clear();
        self.sysctl_probes.clear();
        for (netns, v) in s.sysctls {
            // Namespace inodes are 32-bit (`ns.inum`).
            let l = NetnsLabel {
                netns: Some(*netns as u32),
            };
            self.sysctl_time.get_or_create(&l).set(v.time_s.into());
            self.sysctl_intvl.get_or_create(&l).set(v.intvl_s.into());
            self.sysctl_probes.get_or_create(&l).set(v.probes.into());
        }

        self.sockets.clear();
        self.at_risk.clear();
        const ESTABLISHED: u8 = 1;
        for (_, e) in s.table.iter() {
            if e.state != ESTABLISHED {
                continue;
            }
            let netns = e.netns;
            let on = e.keepalive.as_ref().is_some_and(|k| k.enabled);
            self.sockets
                .get_or_create(&SocketsLabels {
                    netns,
                    keepalive: if on { "on" } else { "off" },
                })
                .inc();
            if let Some(risk) = sockets::risk_of(e, s.rules) {
                let port = match (e.local, e.remote) {
                    (Some(l), Some(r)) => self.port_label(l.port(), r.port()),
                    _ => PortLabel::Other,
                };
                self.at_risk
                    .get_or_create(&RiskLabels {
                        netns,
                        port,
                        profile: risk.profile.into(),
                        reason: risk.reason.to_string(),
                    })
                    .inc();
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The same metrics in the Prometheus text format 0.0.4, for scrapers
/// that do not ask for OpenMetrics (promtool, curl): counters' HELP/TYPE
/// name the `_total` series, and there are no UNIT or EOF lines.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(meta.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// What a scrape reads from the agent's state.
pub struct Snapshot<'a> {
    pub hooks: &'a [HookStatus],
    pub kernel: &'a KernelCounters,
    pub table: &'a SocketTable,
    pub sysctls: &'a BTreeMap<u64, KeepaliveSysctls>,
    pub rules: &'a [Rule],
    pub tc_interfaces: usize,
}

/// At most `max` distinct port values; later ones read "other".
struct PortLabels {
    seen: HashSet<u16>,
    max: usize,
}

impl PortLabels {
    fn new(max: usize) -> Self {
        PortLabels {
            seen: HashSet::new(),
            max,
        }
    }

    fn label(&mut self, port: u16) -> PortLabel {
        if self.seen.contains(&port) || self.seen.len() < self.max {
            self.seen.insert(port);
            PortLabel::Port(port)
        } else {
            PortLabel::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_prometheus_text() {
        let om = "# HELP a_total x\n# HELP a x\n# TYPE a counter\na_total 1\n# HELP b_seconds y\n# TYPE b_seconds gauge\n# UNIT b_seconds seconds\nb_seconds 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_total x\n# HELP a_total x\n# TYPE a_total counter\na_total 1\n# HELP b_seconds y\n# TYPE b_seconds gauge\nb_seconds 2\n"
        );
    }

    #[test]
    fn port_labels_are_capped() {
        let mut p = PortLabels::new(2);
        assert_eq!(p.label(22), PortLabel::Port(22));
        assert_eq!(p.label(443), PortLabel::Port(443));
        assert_eq!(p.label(5432), PortLabel::Other);
        assert_eq!(p.label(22), PortLabel::Port(22));
    }

    #[test]
    fn renders_openmetrics_with_units_and_eof() {
        let mut m = Metrics::new(8);
        let l = NetnsPort {
            netns: Some(1),
            port: PortLabel::Port(22),
        };
        m.probes.get_or_create(&l).inc();
        let table = SocketTable::new(4);
        let text = m.render(Snapshot {
            hooks: &[],
            kernel: &KernelCounters::default(),
            table: &table,
            sysctls: &BTreeMap::from([(
                1,
                KeepaliveSysctls {
                    time_s: 7200,
                    intvl_s: 75,
                    probes: 9,
                },
            )]),
            rules: &[],
            tc_interfaces: 0,
        });
        assert!(
            text.contains("keepalive_probes_total{netns=\"1\",port=\"22\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("keepalive_sysctl_time_seconds{netns=\"1\"} 7200"),
            "{text}"
        );
        assert!(
            text.contains("keepalive_agent_build_info{version="),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
