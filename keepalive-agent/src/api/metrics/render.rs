//! One scrape: gauges refreshed from the state, counters mirrored from the
//! kernel's, then encoded.

use std::collections::{BTreeMap, HashMap};

use keepalive_api::{HookStatus, TcpState};
use keepalive_common::KernelCounters;
use prometheus_client::{encoding::text::encode, metrics::counter::Counter};

use super::agent::{RefusedLabels, SocketKnownLabels, StreamLabels, UnhookedLabels};
use super::{
    HookLabels, Metrics, NetnsLabel, PathLabel, PortLabel, RiskLabels, Scope, SeriesKey,
    SocketsLabels, netns_fold,
};
use crate::{
    api::naming::Naming,
    host::{go_buildinfo, outlet, sysctl::KeepaliveSysctls},
    model::paths::PathBook,
    table::{Judge, SocketTable},
};

/// One of the kernel's counters, by field.
type Field = fn(&KernelCounters) -> u64;

/// What a scrape reads from the agent's state.
pub struct Snapshot<'a> {
    pub hooks: &'a [HookStatus],
    pub kernel: &'a KernelCounters,
    pub table: &'a SocketTable,
    pub sysctls: &'a BTreeMap<u64, KeepaliveSysctls>,
    pub judge: Judge<'a>,
    pub tc_interfaces: usize,
    pub naming: &'a mut Naming,
}

impl Metrics {
    /// The label of a connection's service port: the lower of the two
    /// (servers listen low, clients bind ephemeral ports), capped.
    pub fn port_label(&mut self, local: u16, remote: u16) -> PortLabel {
        self.ports.label(local.min(remote))
    }

    /// Refreshes gauges and kernel-derived counters, then encodes.
    pub fn render(&mut self, s: Snapshot<'_>) -> String {
        self.agent.hook_up.clear();
        for h in s.hooks {
            self.agent
                .hook_up
                .get_or_create(&HookLabels {
                    hook: h.hook.as_str(),
                    mode: h.mode.as_str(),
                })
                .set(i64::from(h.live));
        }
        // Counters that mirror the kernel's: each grows by what the kernel's
        // grew since the last scrape.
        let (k, last) = (s.kernel, self.last_kernel);
        let a = &self.agent;
        let mirrored: [(&Counter, Field); 8] = [
            (&a.events_lost, |c| c.events_lost),
            (&a.kernel_probes, |c| c.probes),
            (&a.kernel_timeouts, |c| c.keepalive_timeouts),
            (&a.kernel_resets, |c| c.resets),
            (&a.kernel_stalls, |c| c.retransmit_stalls),
            (&a.socket_map_full, |c| c.socket_map_full),
            (&a.socket_map_share_refused, |c| c.socket_share_refused),
            (&a.read_errors, |c| c.read_errors),
        ];
        for (counter, field) in mirrored {
            counter.inc_by(field(k).saturating_sub(field(&last)));
        }
        let sent: [(&str, Field); 2] = [
            ("yes", |c| c.resets_sent),
            ("none", |c| c.resets_sent_no_socket),
        ];
        for (socket, field) in sent {
            a.kernel_resets_sent
                .get_or_create(&SocketKnownLabels { socket })
                .inc_by(field(k).saturating_sub(field(&last)));
        }
        // A process-wide count (the recognisers have no metrics handle):
        // the counter follows it.
        {
            let refused = go_buildinfo::REFUSED.load(std::sync::atomic::Ordering::Relaxed);
            let go = a.untrusted_refused.get_or_create(&RefusedLabels {
                what: "go_buildinfo",
            });
            go.inc_by(refused.saturating_sub(go.get()));
        }
        let unhooked: [(&str, Field); 2] = [
            ("wire", |c| c.probes_wire_only),
            ("probes_out", |c| c.probes_recovered),
        ];
        for (seen_by, field) in unhooked {
            a.kernel_probes_unhooked
                .get_or_create(&UnhookedLabels { seen_by })
                .inc_by(field(k).saturating_sub(field(&last)));
        }
        self.last_kernel = *k;
        self.agent
            .sockets_refused
            .inc_by(s.table.refused.saturating_sub(self.last_refused));
        self.last_refused = s.table.refused;
        self.agent
            .sockets_evicted
            .inc_by(s.table.evicted.saturating_sub(self.last_evicted));
        self.last_evicted = s.table.evicted;
        self.agent.tc_interfaces.set(s.tc_interfaces as i64);
        let streams = [("stdout", outlet::stdout()), ("stderr", outlet::stderr())];
        for (i, (stream, outlet)) in streams.into_iter().enumerate() {
            let now = outlet.dropped();
            let seen = &mut self.agent.output_dropped_seen[i];
            self.agent
                .output_dropped
                .get_or_create(&StreamLabels { stream })
                .inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
        self.agent.tracked.set(s.table.len() as i64);

        self.sysctl_time.clear();
        self.sysctl_intvl.clear();
        self.sysctl_probes.clear();
        let node = node_netns();
        let fold = netns_fold::fold(s.sysctls, node, |n| {
            let (_, pod) = s.naming.pod_of_netns(n as u32);
            pod.0.is_some_and(|p| !p.is_empty())
        });
        let newly = self.netns_folded.newly(&fold.folded, s.sysctls);
        self.agent.refused("netns_series", newly);
        let shown: BTreeMap<u64, KeepaliveSysctls> = s
            .sysctls
            .iter()
            .filter(|(n, _)| fold.shown.contains(n))
            .map(|(n, v)| (*n, *v))
            .collect();
        for (netns, v) in &shown {
            let l = netns_label(s.naming, *netns);
            self.sysctl_time.get_or_create(&l).set(v.time_s.into());
            self.sysctl_intvl.get_or_create(&l).set(v.intvl_s.into());
            self.sysctl_probes.get_or_create(&l).set(v.probes.into());
        }
        self.render_conntrack(&shown, s.naming);
        self.runtime.render(&s.naming.directory);
        self.render_paths(s.judge);

        self.render_sockets(s.table, s.naming, s.judge);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The established sockets by workload and keepalive, and those at
    /// risk. Counted first by what their labels are made from (owner,
    /// namespace, port), then labelled once per distinct key: 250k sockets
    /// are a few hundred label sets, and making a workload's labels is
    /// most of a socket's cost (#15: /metrics at 250k sockets).
    fn render_sockets(&mut self, table: &SocketTable, naming: &mut Naming, judge: Judge<'_>) {
        type Counts<K> = HashMap<K, i64, foldhash::fast::RandomState>;
        let mut open: Counts<(SeriesKey, bool)> = Counts::default();
        let mut risky: Counts<(SeriesKey, String, &'static str)> = Counts::default();
        for (_, e) in table.iter() {
            if e.state != TcpState::Established {
                continue;
            }
            let on = e.keepalive.as_ref().is_some_and(|k| k.enabled);
            let whose = SeriesKey::new(e.owner.clone(), e.netns, PortLabel::Other);
            *open.entry((whose, on)).or_default() += 1;
            if let Some(risk) = table.risk_of(e, judge) {
                let port = match (e.local, e.remote) {
                    (Some(l), Some(r)) => self.port_label(l.port(), r.port()),
                    _ => PortLabel::Other,
                };
                let key = SeriesKey::new(e.owner.clone(), e.netns, port);
                *risky
                    .entry((key, risk.profile, risk.reason.as_str()))
                    .or_default() += 1;
            }
        }
        self.sockets.clear();
        self.at_risk.clear();
        for ((key, on), n) in open {
            let scope = self.scope_of_sockets(naming, &key, n);
            self.sockets
                .get_or_create(&SocketsLabels {
                    scope,
                    keepalive: if on { "on" } else { "off" },
                })
                .inc_by(n);
        }
        for ((key, profile, reason), n) in risky {
            let scope = self.scope_of_sockets(naming, &key, n);
            self.at_risk
                .get_or_create(&RiskLabels {
                    scope,
                    port: key.port(),
                    profile,
                    reason,
                })
                .inc_by(n);
        }
    }

    /// The scope of `n` sockets of `key`, a fold by the workload cap
    /// counted for each (as when they were labelled one by one).
    fn scope_of_sockets(&mut self, naming: &mut Naming, key: &SeriesKey, n: i64) -> Scope {
        let (scope, folded) = self.scope_of_owner(naming, key.owner().as_deref(), key.netns());
        if folded {
            for _ in 1..n {
                self.workloads.fold_again();
            }
        }
        scope
    }

    /// Each active conntrack's timeouts, by namespace.
    fn render_conntrack(&mut self, sysctls: &BTreeMap<u64, KeepaliveSysctls>, naming: &mut Naming) {
        self.conntrack_timeout.clear();
        self.conntrack_loose.clear();
        for (netns, v) in sysctls {
            let Some(ct) = v.conntrack else { continue };
            let l = netns_label(naming, *netns);
            self.conntrack_timeout
                .get_or_create(&l)
                .set(ct.timeout_established_s.into());
            self.conntrack_loose
                .get_or_create(&l)
                .set(i64::from(ct.loose));
        }
    }

    /// Each path's learned bounds, the ones it still remembers.
    fn render_paths(&mut self, judge: Judge<'_>) {
        self.path_survived.clear();
        self.path_fatal.clear();
        self.path_idle_close.clear();
        let book: &PathBook = judge.paths;
        for (key, b) in book.iter() {
            let l = PathLabel {
                path: key.label(judge.rules),
            };
            if let Some(s) = b.survived {
                self.path_survived.get_or_create(&l).set(s.gap_s);
            }
            if let Some(c) = b.idle_closes {
                self.path_idle_close.get_or_create(&l).set(c.min_s);
            }
            if let Some(f) = b.fatal {
                self.path_fatal.get_or_create(&l).set(f.gap_s);
            }
        }
        self.paths_folded
            .inc_by(book.folded.saturating_sub(self.last_folded));
        self.last_folded = book.folded;
    }
}

/// The agent's own network namespace (the node's, with host network).
fn node_netns() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino())
}

/// A namespace's gauges' labels: its inode and the pod owning it.
fn netns_label(naming: &mut Naming, netns: u64) -> NetnsLabel {
    // Namespace inodes are 32-bit (`ns.inum`).
    let netns = netns as u32;
    let (namespace, pod) = naming.pod_of_netns(netns);
    NetnsLabel {
        netns: Some(netns),
        namespace,
        pod,
    }
}
