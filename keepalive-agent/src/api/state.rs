//! The agent's shared state: what the event loop learns and what the HTTP
//! endpoints serve. One mutex, held briefly by each side.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use keepalive_api::{HookStatus, Owner, Record, RecordKind, ResetClass, TcpState};
use keepalive_common::KernelCounters;

use super::{
    metrics::{
        Metrics, PeerCloseLabels, PortLabel, ResetLabels, Scope, ScopePort, SeriesKey, Snapshot,
        TimeoutLabels,
    },
    naming::Naming,
};
use crate::{
    bpf::counters::CounterReader,
    host::sysctl::KeepaliveSysctls,
    model::{
        clock::monotonic_ns,
        idle_close::{Cost, CostKind, CostLedger},
        paths::{Fatal, PathBook, PathKey},
        risk::Rule,
    },
    table::{Credit, Judge, SocketTable, Survival},
};

/// A connection's local and remote addresses.
type Addresses = (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>);

pub struct AgentState {
    pub table: SocketTable,
    pub sysctls: BTreeMap<u64, KeepaliveSysctls>,
    pub hooks: Vec<HookStatus>,
    pub kernel: KernelCounters,
    pub kernel_counters: CounterReader,
    pub rules: Vec<Rule>,
    pub metrics: Metrics,
    pub tc_interfaces: usize,
    /// What each path's idle timeout was learned to be.
    pub paths: PathBook,
    /// The requests servers' idle closes cost, for the advice.
    pub costs: CostLedger,
    /// Active conntracks' established timeouts, by namespace inode (from
    /// `sysctls`).
    pub conntrack: HashMap<u32, u32>,
    /// Who owns what, in Kubernetes terms.
    pub naming: Naming,
}

pub type Shared = Arc<Mutex<AgentState>>;

impl AgentState {
    /// Counts one record into the metrics. Probes and ACKs are credited
    /// from the kernel's per-socket totals the record carries (see
    /// `table::credit`); only when the kernel keeps no totals for the
    /// socket (its map was full) or the table has no entry does the event
    /// count itself.
    pub fn count(&mut self, r: &mut Record) {
        self.metrics.agent.events_read.inc();
        let totals = |v: Option<u32>| v.map(u64::from);
        match r.event {
            RecordKind::ProbeSent => {
                let own = self.table.credit(r.cookie, totals(r.probes), None);
                let event_counts = r.probes.unwrap_or(0) == 0 || own.is_none();
                self.add(own, r, u64::from(event_counts), 0);
            }
            RecordKind::ProbeAck => {
                let own = self.table.credit(r.cookie, None, totals(r.acks));
                let event_counts = r.acks.unwrap_or(0) == 0 || own.is_none();
                self.add(own, r, 0, u64::from(event_counts));
                if let Some(us) = r.rtt_us {
                    let key = self.series_of_record(r);
                    self.metrics.observe_rtt_cached(&key, us / 1e6);
                }
                // An answered probe: the path kept the flow through the
                // idle gap before it.
                if let Some(gap) = r.idle_s {
                    self.survived_by(r, gap);
                }
            }
            RecordKind::ConnectionReset => {
                // The RST's record is the death's: it carries the final totals.
                self.credit_totals(r);
                let class = r.class.unwrap_or(ResetClass::PeerReset);
                let (scope, netns) = self.scope_of(r);
                let labels = ResetLabels {
                    scope,
                    port: self.port_of(r),
                    class: class.as_str(),
                };
                self.metrics.count_reset(netns, &labels);
                match class {
                    ResetClass::IdleReset => self.fatal(r, Fatal::Reset),
                    ResetClass::StaleReuse => self.cost(r, CostKind::StaleReuse),
                    _ => {}
                }
            }
            RecordKind::StateChange => {
                let ours = (r.old_state, r.state)
                    == (Some(TcpState::Established), Some(TcpState::FinWait1));
                if ours {
                    self.learn_own_idle_close(r);
                }
                if r.state == Some(TcpState::SynSent) {
                    self.ask_about_owner(r.cookie);
                }
            }
            RecordKind::PeerClose => {
                let after_idle = r
                    .idle_before_s
                    .is_some_and(|g| g >= self.table.idle_gap_min_s);
                let (scope, netns) = self.scope_of(r);
                let labels = PeerCloseLabels {
                    scope,
                    port: self.port_of(r),
                    after_idle: if after_idle { "true" } else { "false" },
                };
                self.metrics.count_peer_close(netns, &labels);
                if after_idle {
                    self.learn_idle_close(r);
                }
            }
            RecordKind::ResetSent => {
                let (scope, netns) = self.scope_of(r);
                let labels = ResetLabels {
                    scope,
                    port: self.port_of(r),
                    class: r.class.unwrap_or(ResetClass::Other).as_str(),
                };
                self.metrics.count_reset_sent(netns, &labels);
                if r.class == Some(ResetClass::DataAfterClose) {
                    self.cost(r, CostKind::DataAfterClose);
                }
            }
            RecordKind::IdleBlackhole => {
                let (scope, netns) = self.scope_of(r);
                let labels = ScopePort {
                    scope,
                    port: self.port_of(r),
                };
                self.metrics.count_blackhole(netns, &labels);
                self.fatal(r, Fatal::Blackhole);
            }
            RecordKind::KeepaliveTimeout | RecordKind::ConnectionTimeout => {
                self.credit_totals(r);
                let l = r.local.map_or(0, |a| a.port());
                let p = r.remote.map_or(0, |a| a.port());
                let (scope, netns) = self.scope_of(r);
                let labels = TimeoutLabels {
                    scope,
                    port: self.metrics.port_label(l, p),
                    cause: r.cause.map_or("other", |c| c.as_str()),
                };
                self.metrics.count_timeout(netns, &labels);
            }
            // A close and an error carry the socket's final totals.
            RecordKind::SocketClosed | RecordKind::SocketError => self.credit_totals(r),
            RecordKind::KeepaliveTimer | RecordKind::WireProbe | RecordKind::SysctlChanged => {}
        }
    }

    /// The series scope of a record's socket, and its namespace: its owner
    /// and namespace as the table knows them (timer context has no
    /// meaningful current task; wire events carry no namespace).
    fn scope_of(&mut self, r: &Record) -> (Scope, Option<u32>) {
        let (owner, netns, _) = self.whose(r);
        let (scope, _) = self
            .metrics
            .scope_of_owner(&mut self.naming, owner.as_deref(), netns);
        (scope, netns)
    }

    /// The series key of a record's socket.
    fn series_of_record(&mut self, r: &Record) -> SeriesKey {
        let (owner, netns, (local, remote)) = self.whose(r);
        self.series(owner, netns, local, remote)
    }

    /// A record's socket's owner, namespace and addresses as the table
    /// knows them, else as the record says.
    fn whose(&self, r: &Record) -> (Option<Arc<Owner>>, Option<u32>, Addresses) {
        let entry = self.table.get(r.cookie);
        (
            entry.and_then(|e| e.owner.clone()),
            entry.and_then(|e| e.netns).or(r.netns),
            (
                entry.and_then(|e| e.local).or(r.local),
                entry.and_then(|e| e.remote).or(r.remote),
            ),
        )
    }

    fn port_of(&mut self, r: &Record) -> PortLabel {
        self.port_label(r.local, r.remote)
    }

    /// The port label of a connection between `local` and `remote`.
    fn port_label(
        &mut self,
        local: Option<std::net::SocketAddr>,
        remote: Option<std::net::SocketAddr>,
    ) -> PortLabel {
        match (local, remote) {
            (Some(l), Some(p)) => self.metrics.port_label(l.port(), p.port()),
            _ => PortLabel::Other,
        }
    }

    fn path_of(&self, r: &Record) -> Option<PathKey> {
        let port = self.table.service_port(self.table.get(r.cookie)?)?;
        PathKey::of(&self.rules, r.remote?, port)
    }

    /// An idle gap that ended in a reset or a blackhole: the record names
    /// its path.
    fn fatal(&mut self, r: &mut Record, why: Fatal) {
        let (Some(key), Some(gap)) = (self.path_of(r), r.idle_before_s) else {
            return;
        };
        r.path = Some(key.label(&self.rules));
        self.paths.fatal(key, gap, why, monotonic_ns());
    }

    /// Our application closed a connection it had accepted after an idle
    /// gap: its own idle close, the shortest kept per workload and port.
    fn learn_own_idle_close(&mut self, r: &Record) {
        let Some(gap) = r.idle_before_s.filter(|g| *g >= self.table.idle_gap_min_s) else {
            return;
        };
        let Some(entry) = self.table.get(r.cookie) else {
            return;
        };
        let accepted = entry
            .local
            .is_some_and(|l| self.table.service_port(entry) == Some(l.port()));
        if !accepted {
            return;
        }
        let (scope, netns) = self.scope_of(r);
        let labels = ScopePort {
            scope,
            port: self.port_of(r),
        };
        self.metrics.observe_idle_close(netns, &labels, gap);
    }

    /// A request a server's idle close cost, for the advice.
    fn cost(&mut self, r: &Record, kind: CostKind) {
        let (owner, netns, (local, remote)) = self.whose(r);
        let (Some(local), Some(remote)) = (local, remote) else {
            return;
        };
        self.costs.add(Cost {
            kind,
            owner,
            netns,
            local,
            remote,
            idle_before_s: r.idle_before_s,
            closed_for_s: r.closed_for_s,
            at_ns: monotonic_ns(),
        });
    }

    /// A server we connected to closed the connection after an idle gap:
    /// its idle close, learned for its destination group (loopback
    /// included). A close of a connection we accepted is a client's.
    fn learn_idle_close(&mut self, r: &mut Record) {
        let Some(entry) = self.table.get(r.cookie) else {
            return;
        };
        let (Some(remote), Some(gap)) = (entry.remote, r.idle_before_s) else {
            return;
        };
        if self.table.service_port(entry) != Some(remote.port()) {
            return;
        }
        let key = PathKey::of_server(&self.rules, remote);
        r.path = Some(key.label(&self.rules));
        self.paths.peer_closed(key, gap, monotonic_ns());
    }

    fn survived_by(&mut self, r: &Record, gap_s: f64) {
        let key = self.path_of(r);
        self.learn_survival(key, gap_s, monotonic_ns());
    }

    /// Idle gaps an inventory saw connections survive.
    pub fn survived(&mut self, seen: &[Survival]) {
        let now = monotonic_ns();
        for s in seen {
            let key = PathKey::of(&self.rules, s.remote, s.service_port);
            self.learn_survival(key, s.gap_s, now);
        }
    }

    /// A gap survived on `key`'s path, if it was an idle gap at all.
    fn learn_survival(&mut self, key: Option<PathKey>, gap_s: f64, now_ns: u64) {
        if let Some(key) = key.filter(|_| gap_s >= self.table.idle_gap_min_s) {
            self.paths.survived(key, gap_s, now_ns);
        }
    }

    /// What sockets are judged against now.
    pub fn judge(&self) -> Judge<'_> {
        Judge {
            rules: &self.rules,
            paths: &self.paths,
            conntrack: &self.conntrack,
        }
    }

    /// New sysctl readings; the active conntracks follow them.
    pub fn set_sysctls(&mut self, sysctls: BTreeMap<u64, KeepaliveSysctls>) {
        self.conntrack = sysctls
            .iter()
            .filter_map(|(netns, v)| Some((*netns as u32, v.conntrack?.timeout_established_s)))
            .collect();
        self.sysctls = sysctls;
    }

    /// A connect just named the socket's owner: the runtime is asked
    /// about its container now, so that the answer is in before the first
    /// probe is labelled (a record that goes out is named anyway; a quiet
    /// agent's would otherwise ask at the first credit, and label that
    /// one with the cgroup path's fallback).
    fn ask_about_owner(&mut self, cookie: u64) {
        let id = self
            .table
            .get(cookie)
            .and_then(|e| e.owner.as_deref())
            .and_then(|o| o.container_id.as_deref());
        if let Some(id) = id {
            self.naming.ask_about(id);
        }
    }

    fn credit_totals(&mut self, r: &Record) {
        let own = self
            .table
            .credit(r.cookie, r.probes.map(u64::from), r.acks.map(u64::from));
        self.add(own, r, 0, 0);
    }

    /// Adds a socket's credit (or, without one, what the event itself
    /// counts: `probes`, `acks`) to its series.
    fn add(&mut self, credit: Option<Credit>, r: &Record, probes: u64, acks: u64) {
        let c = credit.unwrap_or(Credit {
            netns: r.netns,
            owner: None,
            local: r.local,
            remote: r.remote,
            probes: 0,
            acks: 0,
        });
        self.credit(Credit {
            probes: c.probes.max(probes),
            acks: c.acks.max(acks),
            // The record's namespace when the table knew none.
            netns: c.netns.or(r.netns),
            owner: c.owner,
            local: c.local.or(r.local),
            remote: c.remote.or(r.remote),
        });
    }

    /// Adds credits to the labelled counters: those of the socket's owner,
    /// namespace and port, their labels made once (`metrics::handles`).
    pub fn credit(&mut self, c: Credit) {
        if c.probes + c.acks == 0 {
            return;
        }
        let key = self.series(c.owner.clone(), c.netns, c.local, c.remote);
        self.metrics.add_cached(&key, c.probes, c.acks);
    }

    /// The series key of a socket, its labels made and cached on first use.
    fn series(
        &mut self,
        owner: Option<Arc<Owner>>,
        netns: Option<u32>,
        local: Option<std::net::SocketAddr>,
        remote: Option<std::net::SocketAddr>,
    ) -> SeriesKey {
        let port = self.port_label(local, remote);
        let key = SeriesKey::new(owner, netns, port);
        if self.metrics.use_cached(&key) {
            return key;
        }
        let (scope, folded) =
            self.metrics
                .scope_of_owner(&mut self.naming, key.owner().as_deref(), netns);
        self.metrics
            .cache_series(key.clone(), ScopePort { scope, port }, folded);
        key
    }

    /// Names learned or changed (a runtime's answer, an inventory's
    /// owners): the labels of the next credits are made afresh.
    pub fn names_changed(&mut self) {
        self.metrics.forget_cached_series();
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
            paths,
            conntrack,
            naming,
            kernel_counters: _,
            costs: _,
        } = self;
        metrics.render(Snapshot {
            hooks,
            kernel,
            table,
            sysctls,
            judge: Judge {
                rules,
                paths,
                conntrack,
            },
            tc_interfaces: *tc_interfaces,
            naming,
        })
    }
}
