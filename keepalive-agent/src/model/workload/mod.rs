//! Sockets grouped by workload (a pod's container, else a systemd
//! service, else a process name) and program, and for each group the fix
//! in that program's own terms (see [`super::knowledge`]): its switch when
//! keepalive is off, its timing knob (or removing it, so the sysctls apply)
//! when a hard-coded idle time is too long for the path, the sysctl lines
//! for the node or the pod when the sysctls' idle time is, and application
//! pings for a layer-7 proxy. Values come from the path's timeout
//! ([`super::risk::advise`]: idle ≤ half of it, interval 10–30 s, count
//! 6–9). Pure: the caller feeds judged rows.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::SocketAddr,
};

use keepalive_api::{
    Evidence, Keepalive, Program, RiskBasis, RiskReason, SocketRow, Source, TcpState,
};
use serde::{Deserialize, Serialize};

use super::{
    idle_close::{Cost, CostKind},
    knowledge::{self, Recommends, Side, Values},
};

/// Destinations and settings listed per workload; the rest are counted.
const LISTED: usize = 8;

/// Who a group of sockets belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Workload {
    /// A Kubernetes pod's container (the pod uid until the runtime named it).
    Pod {
        namespace: Option<String>,
        pod: String,
        container: Option<String>,
    },
    /// A systemd service outside containers.
    Service { service: String },
    /// Any other process, by its name.
    Process { comm: String },
    /// No process holds it (yet): accepted since the last inventory, or
    /// its owner exited.
    Unowned,
}

impl Workload {
    fn of(row: &SocketRow) -> Workload {
        let owner = row.owner.as_ref();
        if let Some(pod) = row.pod.clone().or_else(|| row.pod_uid.clone()) {
            return Workload::Pod {
                namespace: row.namespace.clone(),
                pod,
                container: row.container.clone(),
            };
        }
        if let Some(service) = owner.and_then(|o| o.service.clone()) {
            return Workload::Service { service };
        }
        match owner {
            Some(o) => Workload::Process {
                comm: o.comm.clone(),
            },
            None => Workload::Unowned,
        }
    }

    /// `shop/web-0 (app)`, `postgresql@15-main.service`, `redis-server`.
    pub fn label(&self) -> String {
        match self {
            Workload::Pod {
                namespace,
                pod,
                container,
            } => {
                let ns = namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                let c = container
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                format!("pod {ns}{pod}{c}")
            }
            Workload::Service { service } => format!("service {service}"),
            Workload::Process { comm } => format!("process {comm}"),
            Workload::Unowned => "no owning process".into(),
        }
    }
}

/// What kind of change a fix is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// Keepalive is off: the program's switch, then the sysctls apply.
    SwitchOn,
    /// The idle time is set on the socket and too long: change or remove it.
    SocketTiming,
    /// The idle time is the sysctl's and too long: the sysctl lines.
    SysctlTiming,
    /// A layer-7 proxy: payload, not probes.
    ApplicationPing,
}

/// Where the sysctl lines go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SysctlScope {
    /// The node's own network namespace: `/etc/sysctl.d`.
    Node,
    /// A pod's network namespace: its `securityContext.sysctls`.
    Pod,
    /// Another namespace (`ip netns`, a container outside Kubernetes),
    /// entered through a process in it.
    Netns { inode: u32, pid: Option<u32> },
}

/// The timeout a fix is computed from: the shortest its sockets face.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Faced {
    pub profile: String,
    pub idle_timeout_s: u32,
    pub basis: RiskBasis,
}

/// One change for one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub kind: FixKind,
    pub reason: RiskReason,
    /// The connections this fixes.
    pub connections: usize,
    pub timeout: Faced,
    /// The advised values in the program's terms.
    pub values: Values,
    /// What to write, in the program's terms.
    pub change: Vec<String>,
    /// Why the sockets are as they are, where the program has a known trap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The other way: removing the socket's own timing so the sysctls apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative: Option<String>,
    pub recommends: Recommends,
    /// The sysctl lines the program then follows (empty when it sets its
    /// own timing).
    pub sysctls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl_scope: Option<SysctlScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Effective keepalive settings and how many connections have them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub keepalive: Option<Keepalive>,
    pub connections: usize,
}

/// One workload's sockets of one program, and what to change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadAdvice {
    pub workload: Workload,
    pub program: Program,
    pub evidence: Evidence,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub side: Side,
    /// The knowledge table's name for it (`nginx (connections it accepts)`).
    pub title: String,
    /// What the program does when nobody configured it.
    pub default: String,
    pub docs: Vec<String>,
    pub pids: Vec<u32>,
    pub connections: usize,
    pub at_risk: usize,
    pub destinations: Vec<String>,
    /// Connections to further destinations, not listed.
    pub more_destinations: usize,
    pub settings: Vec<Settings>,
    pub fixes: Vec<Fix>,
    /// Fixes for servers' idle closes that cost requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idle_close: Vec<IdleCloseFix>,
}

/// Which (network namespace, port) pairs have a listener: a connection
/// on one of those local ports was accepted, any other was made.
pub type Listening = HashSet<(u32, u16)>;

/// Groups judged rows into workloads as they come (the rows are not kept:
/// memory grows with the workloads, not the sockets), then
/// [`Advisor::finish`].
pub struct Advisor {
    /// The node's own network namespace: sysctl lines there go to
    /// `/etc/sysctl.d`.
    node_netns: Option<u32>,
    listening: Listening,
    groups: BTreeMap<GroupKey, Group>,
}

type GroupKey = (Workload, Program, Side);

#[derive(Default)]
struct Group {
    evidence: Option<Evidence>,
    version: Option<String>,
    pids: BTreeSet<u32>,
    connections: usize,
    destinations: BTreeSet<SocketAddr>,
    /// Connections to destinations past the first [`LISTED`] (counted per
    /// connection: the distinct ones are not kept).
    more_destinations: usize,
    settings: Vec<Settings>,
    /// Sockets at risk by the kind of fix they need.
    fixes: BTreeMap<FixKind, Pending>,
    idle_closes: idle_close::PendingIdleCloses,
}

struct Pending {
    reason: RiskReason,
    connections: usize,
    timeout: Faced,
    netns: Option<u32>,
    pid: Option<u32>,
}

impl Advisor {
    pub fn new(node_netns: Option<u32>, listening: Listening) -> Self {
        Advisor {
            node_netns,
            listening,
            groups: BTreeMap::new(),
        }
    }

    fn side(&self, row: &SocketRow) -> Side {
        let accepted = row
            .netns
            .zip(row.local)
            .is_some_and(|(netns, l)| self.listening.contains(&(netns, l.port())));
        if accepted {
            Side::Inbound
        } else {
            Side::Outbound
        }
    }

    /// A row of any state: only established connections with a peer count.
    pub fn add(&mut self, row: &SocketRow) {
        if row.state != TcpState::Established || row.remote.is_none() {
            return;
        }
        let program = row.owner.as_ref().and_then(|o| o.program.as_ref());
        let program_name = program.map_or(Program::Unknown, |p| p.program);
        // A program with one knob for both sides is one group.
        let side = knowledge::entry(program_name, self.side(row)).side;
        let key = (Workload::of(row), program_name, side);
        let g = self.groups.entry(key).or_default();
        g.evidence = g.evidence.or(program.map(|p| p.evidence));
        if g.version.is_none() {
            g.version = program.and_then(|p| p.version.clone());
        }
        g.pids.extend(row.owner.as_ref().map(|o| o.pid));
        g.connections += 1;
        if let Some(remote) = row.remote {
            if g.destinations.len() < LISTED {
                g.destinations.insert(remote);
            } else if !g.destinations.contains(&remote) {
                g.more_destinations += 1;
            }
        }
        count_settings(&mut g.settings, row.keepalive.as_ref());
        if let Some(kind) = fix_kind(row) {
            pend(g, kind, row);
        }
    }

    /// A request a server's idle close cost (`row` names its socket's
    /// owner): counted against the workload that can fix it, with the
    /// server's idle close learned for its destination.
    pub fn add_cost(&mut self, row: &SocketRow, cost: &Cost, learned_close_s: Option<f64>) {
        let program = row.owner.as_ref().and_then(|o| o.program.as_ref());
        let program_name = program.map_or(Program::Unknown, |p| p.program);
        let side = match cost.kind {
            CostKind::StaleReuse => Side::Outbound,
            CostKind::DataAfterClose => Side::Inbound,
        };
        let side = knowledge::entry(program_name, side).side;
        let g = self
            .groups
            .entry((Workload::of(row), program_name, side))
            .or_default();
        g.evidence = g.evidence.or(program.map(|p| p.evidence));
        if g.version.is_none() {
            g.version = program.and_then(|p| p.version.clone());
        }
        g.pids.extend(row.owner.as_ref().map(|o| o.pid));
        idle_close::pend(&mut g.idle_closes, cost, learned_close_s);
    }

    /// The workloads, those with the most sockets at risk first.
    pub fn finish(mut self) -> Vec<WorkloadAdvice> {
        let groups = std::mem::take(&mut self.groups);
        let mut out: Vec<WorkloadAdvice> = groups
            .into_iter()
            .map(|(key, g)| self.advice(key, g))
            .collect();
        out.sort_by_key(|w| std::cmp::Reverse(w.at_risk));
        out
    }

    fn advice(&self, (workload, program, side): GroupKey, g: Group) -> WorkloadAdvice {
        let entry = knowledge::entry(program, side);
        let is_pod = matches!(workload, Workload::Pod { .. });
        let fixes: Vec<Fix> = g
            .fixes
            .into_iter()
            .map(|(kind, p)| {
                let scope = self.scope(is_pod, p.netns, p.pid);
                fix::fix(entry, g.version.as_deref(), kind, p, scope)
            })
            .collect();
        let idle_close = g
            .idle_closes
            .into_iter()
            .map(|(key, p)| idle_close::fix(entry, key, p))
            .collect();
        WorkloadAdvice {
            workload,
            program,
            evidence: g.evidence.unwrap_or(Evidence::None),
            version: g.version,
            side: entry.side,
            title: entry.title.clone(),
            default: entry.default.clone(),
            docs: entry.docs.clone(),
            pids: g.pids.into_iter().collect(),
            connections: g.connections,
            at_risk: fixes.iter().map(|f| f.connections).sum(),
            destinations: g.destinations.iter().map(SocketAddr::to_string).collect(),
            more_destinations: g.more_destinations,
            settings: g.settings,
            fixes,
            idle_close,
        }
    }

    fn scope(&self, is_pod: bool, netns: Option<u32>, pid: Option<u32>) -> SysctlScope {
        match netns {
            _ if is_pod => SysctlScope::Pod,
            Some(n) if Some(n) != self.node_netns => SysctlScope::Netns { inode: n, pid },
            _ => SysctlScope::Node,
        }
    }
}

fn count_settings(settings: &mut Vec<Settings>, keepalive: Option<&Keepalive>) {
    if let Some(s) = settings
        .iter_mut()
        .find(|s| s.keepalive.as_ref() == keepalive)
    {
        s.connections += 1;
    } else if settings.len() < LISTED {
        settings.push(Settings {
            keepalive: keepalive.cloned(),
            connections: 1,
        });
    }
}

/// The kind of change an at-risk socket needs; None when it is not at risk.
fn fix_kind(row: &SocketRow) -> Option<FixKind> {
    let risk = row.risk.as_ref()?;
    Some(match risk.reason {
        RiskReason::KeepaliveOff => FixKind::SwitchOn,
        RiskReason::L7NeedsApplicationKeepalive => FixKind::ApplicationPing,
        RiskReason::IdleExceedsTimeout => match row.keepalive.as_ref().map(|k| k.idle_source) {
            Some(Source::Socket) => FixKind::SocketTiming,
            _ => FixKind::SysctlTiming,
        },
    })
}

/// Counts `row` under `kind`, keeping the shortest timeout faced.
fn pend(g: &mut Group, kind: FixKind, row: &SocketRow) {
    let Some(risk) = row.risk.as_ref() else {
        return;
    };
    let faced = Faced {
        profile: risk.profile.clone(),
        idle_timeout_s: risk.idle_timeout_s,
        basis: risk.basis,
    };
    let pid = row.owner.as_ref().map(|o| o.pid);
    let p = g.fixes.entry(kind).or_insert(Pending {
        reason: risk.reason,
        connections: 0,
        timeout: faced.clone(),
        netns: row.netns,
        pid,
    });
    p.connections += 1;
    if faced.idle_timeout_s < p.timeout.idle_timeout_s {
        p.timeout = faced;
    }
}

mod fix;
mod idle_close;
#[cfg(test)]
mod tests;

pub use fix::apply_sysctls;
pub use idle_close::{IdleCloseFix, IdleCloseFixKind};
