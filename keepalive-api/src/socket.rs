//! One row of `/sockets`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{
    record::Keepalive,
    vocab::{Evidence, Program, RiskBasis, RiskReason, TcpState},
};

/// The program behind a socket's owner, recognised once per process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    pub program: Program,
    pub evidence: Evidence,
    /// The runtime's version where the binary says it (Go: `go1.22.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ProgramInfo {
    pub const UNKNOWN: ProgramInfo = ProgramInfo {
        program: Program::Unknown,
        evidence: Evidence::None,
        version: None,
    };
}

/// The process that owns a socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    /// 0 when the owner was found through `/proc` rather than at `connect()`.
    pub cgroup_id: u64,
    /// The cgroup v2 path, as the agent's cgroup namespace sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The Kubernetes pod uid the cgroup path names (kubelet layouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The systemd unit of a process in no container
    /// (`postgresql@15-main.service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The Kubernetes pod, its namespace and the container's name, from
    /// the container runtime's labels; absent outside Kubernetes or while
    /// the runtime has not answered (then `pod_uid` still names the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The program, once the agent's inventory recognised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramInfo>,
}

/// A socket that can sit idle past its path's idle timeout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// The profile (`aws-nlb`, …, or `custom`) the socket is judged against.
    pub profile: String,
    pub idle_timeout_s: u32,
    pub reason: RiskReason,
    /// Where the timeout comes from: a rule, the path's learned bound or
    /// the namespace's conntrack.
    #[serde(default = "configured")]
    pub basis: RiskBasis,
}

fn configured() -> RiskBasis {
    RiskBasis::Configured
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SocketRow {
    pub cookie: u64,
    pub netns: Option<u32>,
    pub state: TcpState,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The Kubernetes pod, namespace and container of the owner, else of
    /// the pod that owns the socket's network namespace (no container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    pub uid: u32,
    pub inode: u64,
    pub keepalive: Option<Keepalive>,
    /// Seconds since the socket last received anything, at the last scan.
    pub idle_s: Option<f64>,
    pub probes_out: u32,
    pub probes: u64,
    pub acks: u64,
    pub last_rtt_us: Option<f64>,
    /// If the peer vanished now, seconds until the kernel declares the
    /// connection dead (next timer + remaining probes × interval).
    pub dead_after_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

impl SocketRow {
    /// Either endpoint has this port.
    pub fn has_port(&self, port: u16) -> bool {
        [self.local, self.remote]
            .into_iter()
            .flatten()
            .any(|a| a.port() == port)
    }
}
