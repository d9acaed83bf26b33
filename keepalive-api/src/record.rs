//! One record of the event stream (stdout, `/events`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::vocab::{Cause, RecordKind, ResetClass, Source, TcpState, Trigger};

/// A socket's effective keepalive settings, each with where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keepalive {
    /// SO_KEEPALIVE is set.
    pub enabled: bool,
    pub idle_s: f64,
    pub idle_source: Source,
    pub interval_s: f64,
    pub interval_source: Source,
    pub count: u32,
    pub count_source: Source,
    /// idle + interval × count: how long a dead peer goes unnoticed.
    pub detection_s: f64,
}

impl Keepalive {
    /// Set on the socket with `setsockopt` (`ss`-style `*` in tables).
    pub fn idle_from_socket(&self) -> bool {
        self.idle_source == Source::Socket
    }
}

/// One line of the agent's output. The fields a kind does not carry are
/// absent (never `null`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time, seconds.
    pub time: f64,
    pub event: RecordKind,
    /// The socket cookie, as `ss -e` shows `sk:` (0 for namespace events).
    pub cookie: u64,
    /// Network namespace inode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// `ss` notation (`192.0.2.1:80`, `[2001:db8::1]:80`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TcpState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_state: Option<TcpState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The owner's container, derived from its cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The owner's pod uid and systemd unit, from its cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The owner's Kubernetes pod, its namespace and the container's name,
    /// from the container runtime's labels (`io.kubernetes.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
    /// Unanswered probes outstanding (`icsk_probes_out`, `ss`'s timer retrans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_out: Option<u32>,
    /// Probes this socket sent since the agent saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<f64>,
    /// Seconds since the socket last received anything (errors: from the
    /// last packet received, or the first SYN, to the abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<f64>,
    /// Errors, idle_blackhole: seconds the connection went unanswered
    /// before the abort (or the stall report), from the first unanswered
    /// probe, data segment (its first send, `first_tx_mstamp`) or SYN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered_s: Option<f64>,
    /// Errors: seconds of idle before the first unanswered probe or
    /// segment (`idle_s - unanswered_s`). peer_close: seconds from the
    /// last data received to the peer's FIN; reset_sent
    /// (data_after_close): from the last data either way to our
    /// application's close; connection_reset (stale_reuse): the peer
    /// close's, (idle_abort) the silence before the RST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_before_s: Option<f64>,
    /// connection_reset, idle_blackhole, peer_close: seconds from our last
    /// data segment sent (`lsndtime`) to the RST, the stall report or the
    /// peer's FIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_send_s: Option<f64>,
    /// connection_reset (stale_reuse): seconds from the peer's FIN to our
    /// write its RST answered; reset_sent (data_after_close): from our
    /// application's close to the late data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_for_s: Option<f64>,
    /// connection_reset, reset_sent: what the RST was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ResetClass>,
    /// connection_reset (idle_reset), idle_blackhole: what our first packet
    /// after the idle gap was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The destination group whose idle timeout the record teaches
    /// (`/paths`): configured destination, remote /24 or /64 and service
    /// port, or `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    /// The errno's name (`ETIMEDOUT`, `ECONNRESET`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_timeout_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// Wire probes: sent by the keepalive timer (false: a zero-window probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_probe: Option<bool>,
    /// Errors: the namespace's net.ipv4.tcp_retries2 / tcp_syn_retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retries2: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syn_retries: Option<u8>,
    /// sysctl_changed: which, and from what to what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_value: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<u32>,
}

impl Record {
    /// A record of `event` with nothing but its time and socket.
    pub fn new(event: RecordKind, time: f64, cookie: u64) -> Record {
        Record {
            time,
            event,
            cookie,
            netns: None,
            local: None,
            remote: None,
            state: None,
            old_state: None,
            pid: None,
            comm: None,
            cgroup_id: None,
            container_id: None,
            pod_uid: None,
            service: None,
            pod: None,
            namespace: None,
            container: None,
            keepalive: None,
            probes_out: None,
            probes: None,
            acks: None,
            seq: None,
            rtt_us: None,
            idle_s: None,
            unanswered_s: None,
            idle_before_s: None,
            since_send_s: None,
            closed_for_s: None,
            class: None,
            trigger: None,
            path: None,
            errno: None,
            error: None,
            cause: None,
            retransmits: None,
            user_timeout_ms: None,
            ifindex: None,
            keepalive_probe: None,
            tcp_retries2: None,
            tcp_syn_retries: None,
            sysctl: None,
            old_value: None,
            new_value: None,
        }
    }

    /// Either endpoint has this port.
    pub fn has_port(&self, port: u16) -> bool {
        [self.local, self.remote]
            .into_iter()
            .flatten()
            .any(|a| a.port() == port)
    }
}
