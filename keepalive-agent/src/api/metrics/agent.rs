//! The agent's own health, beside the keepalive metrics: hooks, events,
//! kernel counters mirrored, its table, its scans of the node, its HTTP
//! server and its output streams.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{HookLabels, labels::VersionLabel, registered, registered_in};
use crate::api::web::ReloadCounters;

type FloatGauge = Gauge<f64, AtomicU64>;

/// The agent's periodic scans of the node.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Scan {
    /// Namespaces and interfaces, for the TC classifiers.
    Tc,
    /// Every socket, through the iterator.
    Inventory,
    /// Every namespace's keepalive sysctls.
    Sysctl,
    /// The programs of the sockets' owners (`run::recognize`).
    Programs,
}

impl Scan {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scan::Tc => "tc",
            Scan::Programs => "programs",
            Scan::Inventory => "inventory",
            Scan::Sysctl => "sysctl",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    pub scan: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanErrorLabels {
    pub scan: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// What a failed namespace read most likely means, from the I/O error
/// under it: the namespace went away between listing and reading (`gone`,
/// normal churn), the agent lacks a privilege (`permission`), it ran out
/// of descriptors (`descriptors`), or something else.
pub fn error_kind(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(libc::ENOENT | libc::ESRCH) => "gone",
                Some(libc::EACCES | libc::EPERM) => "permission",
                Some(libc::EMFILE | libc::ENFILE) => "descriptors",
                _ => "other",
            };
        }
        cause = c.source();
    }
    "other"
}

/// The kinds [`error_kind`] says.
const ERROR_KINDS: [&str; 4] = ["gone", "permission", "descriptors", "other"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// How a probe of a timer run our timer hooks did not see was counted.
/// What untrusted input was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `go_buildinfo`: a Go build info unlike any toolchain's.
    pub what: &'static str,
}

/// Whether a sent RST had a socket of ours.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketKnownLabels {
    /// `yes` (full, orphaned or time-wait) or `none`.
    pub socket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnhookedLabels {
    /// `wire`: TC egress saw it leave; `probes_out`: a later look at the
    /// socket's `icsk_probes_out` (the probe never reached TC).
    pub seen_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: &'static str,
}

pub struct AgentHealth {
    pub(super) hook_up: Family<HookLabels, Gauge>,
    pub events_read: Counter,
    pub(super) events_lost: Counter,
    pub(super) kernel_probes: Counter,
    pub(super) kernel_probes_unhooked: Family<UnhookedLabels, Counter>,
    pub(super) kernel_timeouts: Counter,
    pub(super) kernel_resets: Counter,
    pub(super) kernel_resets_sent: Family<SocketKnownLabels, Counter>,
    pub(super) kernel_stalls: Counter,
    pub(super) untrusted_refused: Family<RefusedLabels, Counter>,
    pub(super) socket_map_full: Counter,
    pub(super) socket_map_share_refused: Counter,
    pub(super) read_errors: Counter,
    pub(super) sockets_refused: Counter,
    pub(super) sockets_evicted: Counter,
    pub clients_dropped: Counter,
    pub(super) tc_interfaces: Gauge,
    pub(super) tracked: Gauge,
    scan_errors: Family<ScanLabels, Counter>,
    scan_ok: Family<ScanLabels, Gauge>,
    scan_duration: Family<ScanLabels, FloatGauge>,
    scan_last_success: Family<ScanLabels, FloatGauge>,
    scan_namespaces: Family<ScanLabels, Gauge>,
    scan_namespace_errors: Family<ScanErrorLabels, Counter>,
    pub http_tls_handshake_errors: Counter,
    pub http_unauthorized: Counter,
    /// `--web.config.file` reloads.
    pub web_reload: ReloadCounters,
    /// HTTP requests or connections turned away, by reason.
    pub http_refused: Family<ReasonLabels, Counter>,
    pub http_accept_errors: Counter,
    /// Output lines dropped because nobody read the stream fast enough.
    pub(super) output_dropped: Family<StreamLabels, Counter>,
    /// The outlets' drop counts as of the last scrape (stdout, stderr).
    pub(super) output_dropped_seen: [u64; 2],
    /// Sockets found gone by an inventory, their close event lost.
    pub gone_unseen: Counter,
}

impl AgentHealth {
    pub fn register(r: &mut Registry, node: &str) -> Self {
        let health = Self::families(r, node);
        // Every known label set from the start, at 0: a series that appears
        // only with its first event makes rate() and alerts miss that event.
        for scan in [Scan::Tc, Scan::Inventory, Scan::Sysctl] {
            let l = ScanLabels {
                scan: scan.as_str(),
            };
            let _ = health.scan_errors.get_or_create(&l);
        }
        for scan in [Scan::Inventory, Scan::Sysctl] {
            for kind in ERROR_KINDS {
                let _ = health
                    .scan_namespace_errors
                    .get_or_create(&ScanErrorLabels {
                        scan: scan.as_str(),
                        kind,
                    });
            }
        }
        for reason in ["connections", "sockets", "metrics", "advice"] {
            let _ = health.http_refused.get_or_create(&ReasonLabels { reason });
        }
        for stream in ["stdout", "stderr"] {
            let _ = health
                .output_dropped
                .get_or_create(&StreamLabels { stream });
        }
        health
    }

    fn families(r: &mut Registry, node: &str) -> Self {
        // A gauge at 1 rather than an OpenMetrics info: Prometheus' own text
        // parser (promtool, older servers) does not know the info type.
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
                revision: env!("KEEPALIVE_GIT_REVISION"),
                rustversion: env!("KEEPALIVE_RUSTC_VERSION"),
                node: node.into(),
            })
            .set(1);
        r.register(
            "keepalive_agent_build_info",
            "Agent version, the git revision and rustc it was built from, and the node it runs on",
            build_info,
        );
        let web_reload = ReloadCounters::default();
        r.register(
            "keepalive_agent_web_config_reloads",
            "Reloads of --web.config.file after a change, by result (success, failure: the configuration in use was kept)",
            web_reload.reloads.clone(),
        );
        r.register(
            "keepalive_agent_web_config_last_reload_successful",
            "0 when the last change of --web.config.file (or a certificate it names) could not be loaded",
            web_reload.last_successful.clone(),
        );
        r.register_with_unit(
            "keepalive_agent_web_config_last_reload_success_timestamp",
            "When the web configuration in use was loaded (Unix time)",
            Unit::Seconds,
            web_reload.last_success_time.clone(),
        );
        AgentHealth {
            hook_up: registered(
                r,
                "keepalive_agent_hook_up",
                "1 when the hook is attached, by the mode in use (fentry, tp_btf, tcx, netlink)",
            ),
            events_read: registered(
                r,
                "keepalive_agent_events_read",
                "Events read from the kernel ring buffer",
            ),
            events_lost: registered(
                r,
                "keepalive_agent_events_lost",
                "Events the kernel could not queue (ring buffer full); kernel counters stay exact",
            ),
            kernel_probes: registered(
                r,
                "keepalive_agent_kernel_probes",
                "Probes counted in the kernel (exact even when events are lost)",
            ),
            kernel_probes_unhooked: registered(
                r,
                "keepalive_agent_kernel_probes_unhooked",
                "Probes (included in keepalive_agent_kernel_probes_total) of keepalive timer runs the kernel ran without invoking the agent's timer programs, by how they were counted instead: seen_by=wire (TC saw the probe leave), probes_out (the socket's icsk_probes_out at its next hooked timer run or when it leaves ESTABLISHED/CLOSE_WAIT)",
            ),
            kernel_timeouts: registered(
                r,
                "keepalive_agent_kernel_keepalive_timeouts",
                "Keepalive ETIMEDOUT kills counted in the kernel",
            ),
            kernel_resets: registered(
                r,
                "keepalive_agent_kernel_resets",
                "Received RSTs that killed a connection (tcp_receive_reset), counted in the kernel",
            ),
            kernel_resets_sent: registered(
                r,
                "keepalive_agent_kernel_resets_sent",
                "RSTs the kernel sent (tcp_send_reset), counted in the kernel; socket=\"none\": for a segment no socket matched (a closed port, an expired time-wait), not reported further",
            ),
            untrusted_refused: registered(
                r,
                "keepalive_agent_untrusted_refused",
                "Input from other processes refused, by what (go_buildinfo: a Go build info whose version is not a toolchain's; tc_interface: an interface not given classifiers because the descriptors it would take are the API's; netns_series: a namespace whose sysctl series are folded into the node's), counted instead of kept",
            ),
            kernel_stalls: registered(
                r,
                "keepalive_agent_kernel_retransmit_stalls",
                "Second unanswered RTO retransmissions counted in the kernel (every stall; the agent reports those after an idle gap as idle_blackhole)",
            ),
            socket_map_full: registered(
                r,
                "keepalive_agent_socket_map_full",
                "Sockets the kernel map could not track because it was full",
            ),
            socket_map_share_refused: registered(
                r,
                "keepalive_agent_socket_map_share_refused",
                "Sockets the kernel map did not track because their user (sk_uid) already held its share of it (three quarters of --max-sockets)",
            ),
            read_errors: registered(
                r,
                "keepalive_agent_kernel_read_errors",
                "Kernel memory reads that failed in the programs",
            ),
            sockets_refused: registered(
                r,
                "keepalive_agent_sockets_refused",
                "Sockets the agent's table did not take in: it was full and their user (sk_uid) held as many sockets of it as any other",
            ),
            sockets_evicted: registered(
                r,
                "keepalive_agent_sockets_evicted",
                "Sockets dropped from the agent's full table to make room for a socket of a user holding fewer (a keepalive-off one of the largest holder first, else its oldest)",
            ),
            clients_dropped: registered(
                r,
                "keepalive_agent_event_clients_dropped",
                "HTTP clients disconnected for reading too slowly (/events streams that fell behind or stopped reading)",
            ),
            tc_interfaces: registered(
                r,
                "keepalive_agent_tc_interfaces",
                "Interfaces with the TC classifiers attached",
            ),
            tracked: registered(
                r,
                "keepalive_agent_tracked_sockets",
                "Sockets in the agent's table",
            ),
            scan_errors: registered(
                r,
                "keepalive_agent_scan_errors",
                "Scans of the node that failed (namespaces could not be listed, out of descriptors): what the agent knew is kept, by scan (tc, inventory, sysctl, programs)",
            ),
            scan_ok: registered(
                r,
                "keepalive_agent_scan_success",
                "1 when the last scan of its kind succeeded, by scan (tc, inventory, sysctl, programs)",
            ),
            scan_duration: registered_in(
                r,
                "keepalive_agent_scan_duration",
                "How long the last scan of its kind took, by scan (tc, inventory, sysctl, programs)",
                Unit::Seconds,
            ),
            scan_last_success: registered_in(
                r,
                "keepalive_agent_scan_last_success_timestamp",
                "When the last successful scan of its kind ended (Unix time), by scan",
                Unit::Seconds,
            ),
            scan_namespaces: registered(
                r,
                "keepalive_agent_scan_namespaces",
                "Network namespaces the last scan of its kind read, by scan (inventory, sysctl)",
            ),
            scan_namespace_errors: registered(
                r,
                "keepalive_agent_scan_namespace_errors",
                "Namespaces a scan could not read, by scan and kind (gone: closed between listing and reading, normal churn; permission; descriptors; other)",
            ),
            http_tls_handshake_errors: registered(
                r,
                "keepalive_agent_http_tls_handshake_errors",
                "TLS handshakes on --listen that failed or timed out (plain HTTP to the TLS port, no or an untrusted client certificate)",
            ),
            http_unauthorized: registered(
                r,
                "keepalive_agent_http_unauthorized",
                "HTTP requests refused with 401: no or wrong basic auth credentials",
            ),
            web_reload,
            http_refused: registered(
                r,
                "keepalive_agent_http_refused",
                "HTTP connections or requests turned away with 503, by reason (connections: past --max-connections; sockets, advice: past the concurrent /sockets and /advice cap; metrics: past --max-metrics-requests)",
            ),
            http_accept_errors: registered(
                r,
                "keepalive_agent_http_accept_errors",
                "Failed accepts of HTTP connections (out of descriptors, most likely); the server backs off",
            ),
            output_dropped_seen: [0; 2],
            gone_unseen: registered(
                r,
                "keepalive_agent_sockets_gone_unseen",
                "Sockets an inventory found closed whose close event was lost (ring buffer full); the final counts of those with probes came through the kernel's map of lost closes",
            ),
            output_dropped: registered(
                r,
                "keepalive_agent_output_lines_dropped",
                "Lines not written to stdout or stderr because the stream was not read fast enough (a full pipe never stalls the agent)",
            ),
        }
    }

    /// `n` more of `what` refused (see `keepalive_agent_untrusted_refused`).
    pub fn refused(&self, what: &'static str, n: u64) {
        self.untrusted_refused
            .get_or_create(&RefusedLabels { what })
            .inc_by(n);
    }

    /// How a scan of `scan`'s kind went, and how long it took.
    pub fn scanned(&self, scan: Scan, ok: bool, took: Duration) {
        let l = ScanLabels {
            scan: scan.as_str(),
        };
        self.scan_ok.get_or_create(&l).set(i64::from(ok));
        self.scan_duration.get_or_create(&l).set(took.as_secs_f64());
        if ok {
            self.scan_last_success
                .get_or_create(&l)
                .set(crate::model::clock::unix_now_s());
        } else {
            self.scan_errors.get_or_create(&l).inc();
        }
    }

    /// The namespaces a scan read, and the errors of those it could not.
    pub fn namespaces_read<'e>(
        &self,
        scan: Scan,
        read: usize,
        errors: impl IntoIterator<Item = &'e (dyn std::error::Error + 'static)>,
    ) {
        let scan = scan.as_str();
        self.scan_namespaces
            .get_or_create(&ScanLabels { scan })
            .set(read as i64);
        for e in errors {
            self.scan_namespace_errors
                .get_or_create(&ScanErrorLabels {
                    scan,
                    kind: error_kind(e),
                })
                .inc();
        }
    }
}
