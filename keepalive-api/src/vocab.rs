//! The agent's vocabulary: every name it writes for a kind of record, a TCP
//! state, a cause of death, a hook or a hook mode is a variant here, so a
//! new one makes the compiler point at every `match` that must handle it.
//! Each enum knows its wire name (`as_str`, serde, `FromStr`) and lists its
//! variants (`ALL`), which the HTTP filters use for their error messages.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A name that is not in the vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a {}; expected one of {}",
            self.value,
            self.what,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}

/// Defines a vocabulary enum: variants with their wire names, serde by
/// those names, `as_str`, `Display`, `FromStr` and `ALL`/`NAMES`.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $vis:vis enum $name:ident ($what:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const NAMES: &'static [&'static str] = &[$($wire),+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        value: s.to_string(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }
    };
}

vocabulary! {
    /// What a [`crate::Record`] reports (its `event` field).
    pub enum RecordKind ("record kind") {
        /// A keepalive timer run that sent no probe.
        KeepaliveTimer = "keepalive_timer",
        /// A keepalive timer run that sent a probe (`icsk_probes_out` grew).
        ProbeSent = "probe_sent",
        /// A probe-shaped segment seen leaving by the TC egress classifier.
        WireProbe = "wire_probe",
        /// The peer's ACK of a probe, seen by the TC ingress classifier.
        ProbeAck = "probe_ack",
        /// ETIMEDOUT raised by the keepalive timer.
        KeepaliveTimeout = "keepalive_timeout",
        /// ETIMEDOUT raised by any other timer (retransmit, user timeout, SYN).
        ConnectionTimeout = "connection_timeout",
        /// Any other error that killed a connection.
        SocketError = "socket_error",
        /// An in-sequence RST killed the connection (`class` says whether
        /// it answered our first packet after an idle gap).
        ConnectionReset = "connection_reset",
        /// Our first data after an idle gap went unanswered through two
        /// retransmissions: the path dropped the flow silently.
        IdleBlackhole = "idle_blackhole",
        /// A TCP state change other than to CLOSE.
        StateChange = "state_change",
        /// A TCP state change to CLOSE.
        SocketClosed = "socket_closed",
        /// A namespace's keepalive sysctl changed.
        SysctlChanged = "sysctl_changed",
        /// The peer closed an established connection with a FIN
        /// (ESTABLISHED to CLOSE-WAIT), after `idle_before_s` of silence.
        PeerClose = "peer_close",
        /// The kernel sent an RST on one of its connections (`class`:
        /// data_after_close, local_abort or other).
        ResetSent = "reset_sent",
    }
}

vocabulary! {
    /// TCP states as `ss` names them (kernel numbers in `tcp_states.h`).
    pub enum TcpState ("TCP state") {
        Established = "ESTAB",
        SynSent = "SYN-SENT",
        SynRecv = "SYN-RECV",
        FinWait1 = "FIN-WAIT-1",
        FinWait2 = "FIN-WAIT-2",
        TimeWait = "TIME-WAIT",
        /// TCP_CLOSE: `ss` prints it as UNCONN.
        Close = "UNCONN",
        CloseWait = "CLOSE-WAIT",
        LastAck = "LAST-ACK",
        Listen = "LISTEN",
        Closing = "CLOSING",
        NewSynRecv = "NEW-SYN-RECV",
        /// A number this agent does not know (a newer kernel's state).
        Unknown = "UNKNOWN",
    }
}

impl TcpState {
    /// The state of `sk->sk_state` (`TCP_ESTABLISHED` = 1 … `TCP_NEW_SYN_RECV` = 12).
    pub const fn from_kernel(state: u8) -> Self {
        match state {
            1 => Self::Established,
            2 => Self::SynSent,
            3 => Self::SynRecv,
            4 => Self::FinWait1,
            5 => Self::FinWait2,
            6 => Self::TimeWait,
            7 => Self::Close,
            8 => Self::CloseWait,
            9 => Self::LastAck,
            10 => Self::Listen,
            11 => Self::Closing,
            12 => Self::NewSynRecv,
            _ => Self::Unknown,
        }
    }
}

vocabulary! {
    /// Which timer killed a connection.
    pub enum Cause ("cause") {
        /// The keepalive timer gave up (`tcp_keepalive_probes` unanswered).
        Keepalive = "keepalive",
        /// The retransmit timer gave up (`tcp_retries2`).
        Retransmit = "retransmit",
        /// TCP_USER_TIMEOUT expired.
        UserTimeout = "user_timeout",
        /// The SYN was never answered (`tcp_syn_retries`).
        Syn = "syn",
        /// No timer of ours was running.
        Other = "other",
    }
}

vocabulary! {
    /// What an RST that killed a connection was.
    pub enum ResetClass ("reset class") {
        /// It answered our first packet after an idle gap, within a few
        /// round trips: a middlebox that forgot the flow (AWS NLB, Azure
        /// LB with TCP reset, a conntrack reject).
        IdleReset = "idle_reset",
        /// Any other RST: the peer (or a middlebox) reset an active,
        /// closing or connecting socket.
        PeerReset = "peer_reset",
        /// It answered data we wrote after the peer's FIN: a pooled
        /// connection reused after the server closed it for idleness.
        StaleReuse = "stale_reuse",
        /// It came unprompted (nothing of ours unanswered) after an idle
        /// gap: a server or proxy that aborts idle connections (SO_LINGER
        /// 0), or a load balancer that resets both ends at its timeout.
        IdleAbort = "idle_abort",
        /// Sent: data arrived on a connection our application had closed
        /// (`TCPAbortOnData`, or a time-wait socket): the peer reused it.
        DataAfterClose = "data_after_close",
        /// Sent: we reset a live connection (SO_LINGER 0, a close with
        /// unread data, `tcp_abort`).
        LocalAbort = "local_abort",
        /// Sent: any other RST on one of our sockets.
        Other = "other",
    }
}

vocabulary! {
    /// Our first packet after an idle gap, which the path answered with an
    /// RST or dropped.
    pub enum Trigger ("trigger") {
        /// A data segment the application wrote.
        Write = "write",
        /// A keepalive probe.
        KeepaliveProbe = "keepalive_probe",
    }
}

vocabulary! {
    /// Where the path idle timeout a socket is judged against comes from.
    pub enum RiskBasis ("risk basis") {
        /// An `--idle-timeout` rule.
        Configured = "configured",
        /// The shortest fatal idle gap the agent saw on the path.
        Learned = "learned",
        /// The socket's namespace's own conntrack
        /// (`nf_conntrack_tcp_timeout_established`).
        Conntrack = "conntrack",
    }
}

vocabulary! {
    /// The agent's hooks into the kernel, as `/healthz` and `hook_up` name them.
    pub enum Hook ("hook") {
        KeepaliveTimer = "keepalive_timer",
        InetSockSetState = "inet_sock_set_state",
        InetSkErrorReport = "inet_sk_error_report",
        TcpReceiveReset = "tcp_receive_reset",
        TcpSendReset = "tcp_send_reset",
        /// Keepalive options as processes set them (`cgroup/setsockopt`).
        Setsockopt = "setsockopt",
        Tc = "tc",
        SocketInventory = "socket_inventory",
    }
}

vocabulary! {
    /// How a hook is attached.
    pub enum HookMode ("hook mode") {
        Fentry = "fentry",
        TpBtf = "tp_btf",
        /// TC classifiers as TCX links (6.6+).
        Tcx = "tcx",
        /// TC classifiers on a clsact qdisc through netlink.
        Netlink = "netlink",
        /// The `iter/tcp` socket iterator.
        Iter = "iter",
        /// On the cgroup v2 root.
        CgroupSockopt = "cgroup_sockopt",
        /// No timer hook: the TC classifiers count probes alone.
        Wire = "wire",
        /// No setsockopt hook: the inventory finds option changes, every
        /// `--inventory-seconds`.
        Inventory = "inventory",
        /// Off by choice (`--no-tc`).
        None = "none",
    }
}

vocabulary! {
    /// Where an effective keepalive value comes from, as `ss`/`sysctl` users say it.
    pub enum Source ("keepalive source") {
        /// TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT on the socket.
        Socket = "socket",
        /// net.ipv4.tcp_keepalive_* of the socket's namespace.
        Sysctl = "sysctl",
    }
}

vocabulary! {
    /// Why a socket is at risk against a path idle timeout.
    pub enum RiskReason ("risk reason") {
        /// SO_KEEPALIVE is off: nothing keeps the path's state alive while idle.
        KeepaliveOff = "keepalive_off",
        /// Keepalive is on, but its first probe comes after the path forgot the flow.
        IdleExceedsTimeout = "idle_exceeds_timeout",
        /// An L7 proxy: keepalive probes carry no payload and do not count.
        L7NeedsApplicationKeepalive = "l7_needs_application_keepalive",
    }
}

vocabulary! {
    /// The program or runtime behind a socket, as far as its keepalive
    /// knobs go: each has its own place to switch keepalive on and to set
    /// its timing (the agent's knowledge table says where).
    pub enum Program ("program") {
        /// The PostgreSQL server (`tcp_keepalives_*` in postgresql.conf).
        Postgres = "postgres",
        /// A client linked with libpq (`psql`, psycopg, …): connection parameters.
        Libpq = "libpq",
        /// `redis-server` or `valkey-server` (`tcp-keepalive` in redis.conf).
        Redis = "redis",
        /// PgBouncer (`tcp_keepalive`, `tcp_keepidle` in pgbouncer.ini).
        Pgbouncer = "pgbouncer",
        /// HAProxy (`option clitcpka` / `srvtcpka`, `clitcpka-idle`, …).
        Haproxy = "haproxy",
        /// nginx (`so_keepalive=` on `listen`, `proxy_socket_keepalive`).
        Nginx = "nginx",
        /// A Go program (`net.Dialer` / `net.ListenConfig`).
        Go = "go",
        /// A JVM (JDK socket options, JDBC URL parameters, pool settings).
        Java = "java",
        /// Elasticsearch or OpenSearch (`transport.tcp.keep_*`).
        Elasticsearch = "elasticsearch",
        /// Node.js (`socket.setKeepAlive`).
        Node = "node",
        /// CPython (`socket.setsockopt`).
        Python = "python",
        /// The OpenSSH client (`TCPKeepAlive`, `ServerAliveInterval`).
        Ssh = "ssh",
        /// The OpenSSH server (`TCPKeepAlive`, `ClientAliveInterval`).
        Sshd = "sshd",
        /// `mysqld` / `mariadbd`.
        MysqlServer = "mysql_server",
        /// The `mysql` / `mariadb` command-line client (libmysqlclient).
        MysqlClient = "mysql_client",
        /// Not recognised, or its process could not be read.
        Unknown = "unknown",
    }
}

vocabulary! {
    /// What a program was recognised by.
    pub enum Evidence ("program evidence") {
        /// The executable's file name (`/proc/PID/exe`).
        Exe = "exe",
        /// The task's name (`/proc/PID/comm`).
        Comm = "comm",
        /// The command line (`/proc/PID/cmdline`), e.g. a JVM's main class.
        Cmdline = "cmdline",
        /// A library in its mappings (`libpq.so`, `libjvm.so`).
        Library = "library",
        /// A Go binary's `.go.buildinfo` section.
        GoBuildInfo = "go_buildinfo",
        /// Nothing matched, or the process could not be read.
        None = "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for kind in RecordKind::ALL {
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<RecordKind>(&json).unwrap(), *kind);
            assert_eq!(kind.as_str().parse::<RecordKind>().unwrap(), *kind);
        }
        assert_eq!(TcpState::NAMES.len(), TcpState::ALL.len());
        assert_eq!(TcpState::from_kernel(1), TcpState::Established);
        assert_eq!(TcpState::from_kernel(7).as_str(), "UNCONN");
        assert_eq!(TcpState::from_kernel(200), TcpState::Unknown);
    }

    #[test]
    fn unknown_names_say_what_was_expected() {
        let e = "probe".parse::<RecordKind>().unwrap_err();
        assert!(e.to_string().contains("probe_sent"), "{e}");
        assert!("ESTABLISHED".parse::<TcpState>().is_err());
    }
}
