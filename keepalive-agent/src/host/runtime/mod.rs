//! Who a container is, asked of the node's container runtime: the labels
//! the kubelet sets on every container it creates (`io.kubernetes.pod.name`,
//! `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`,
//! `io.kubernetes.container.name`). containerd over its gRPC API
//! ([`containerd`]), CRI-O and Docker over their HTTP APIs on a unix socket
//! ([`http`]), each behind [`ContainerRuntime`]. The agent asks off its
//! event path (see `run::identity`) and keeps answers in
//! [`directory::Directory`].

mod chain;
mod containerd;
pub mod directory;
pub mod http;
mod labels;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
};

pub use labels::PodIdentity;

/// A runtime the agent can ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum RuntimeKind {
    Containerd,
    Crio,
    Docker,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 3] = [
        RuntimeKind::Containerd,
        RuntimeKind::Crio,
        RuntimeKind::Docker,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Containerd => "containerd",
            RuntimeKind::Crio => "crio",
            RuntimeKind::Docker => "docker",
        }
    }

    /// The runtime's own default socket.
    pub fn default_socket(self) -> &'static Path {
        Path::new(match self {
            RuntimeKind::Containerd => "/run/containerd/containerd.sock",
            RuntimeKind::Crio => "/run/crio/crio.sock",
            RuntimeKind::Docker => "/run/docker.sock",
        })
    }

    /// The runtime a socket path names (`crio.sock`, `docker.sock`), else
    /// containerd's.
    pub fn of_socket(path: &Path) -> RuntimeKind {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.contains("crio") {
            RuntimeKind::Crio
        } else if name.contains("docker") {
            RuntimeKind::Docker
        } else {
            RuntimeKind::Containerd
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a runtime says of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub labels: HashMap<String, String>,
    /// The runtime's own name for it (Docker's `--name`), if it has one.
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime} at {socket}: cannot connect: {reason}")]
    Unreachable {
        runtime: RuntimeKind,
        socket: PathBuf,
        reason: String,
    },
    #[error("{runtime}: {reason}")]
    Protocol {
        runtime: RuntimeKind,
        reason: String,
    },
    #[error("{runtime}: no answer within {seconds} s")]
    Timeout { runtime: RuntimeKind, seconds: u64 },
}

pub type Answer<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send + 'a>>;

/// A container runtime: one question, what it knows of a container id
/// (`None`: no such container).
pub trait ContainerRuntime: Send + Sync {
    fn kind(&self) -> RuntimeKind;
    fn container<'a>(&'a self, id: &'a str) -> Answer<'a>;
}

/// Where to find the runtimes: the socket given, else every runtime's
/// default socket that exists (a Docker node runs a containerd too, whose
/// `k8s.io` namespace is empty: each is asked in turn).
pub fn locate(socket: Option<&Path>, kind: Option<RuntimeKind>) -> Vec<(RuntimeKind, PathBuf)> {
    if let Some(path) = socket {
        return vec![(
            kind.unwrap_or_else(|| RuntimeKind::of_socket(path)),
            path.to_owned(),
        )];
    }
    let kinds: &[RuntimeKind] = match &kind {
        Some(k) => std::slice::from_ref(k),
        None => &RuntimeKind::ALL,
    };
    // A socket, not a directory a hostPath mount made in its place.
    let is_socket = |p: &Path| {
        std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    };
    kinds
        .iter()
        .filter(|k| is_socket(k.default_socket()))
        .map(|k| (*k, k.default_socket().to_owned()))
        .collect()
}

/// A client of `kind` at `socket` (it connects when first asked).
fn client(kind: RuntimeKind, socket: PathBuf, namespace: String) -> Box<dyn ContainerRuntime> {
    match kind {
        RuntimeKind::Containerd => Box::new(containerd::Containerd::new(socket, namespace)),
        RuntimeKind::Crio => Box::new(http::HttpRuntime::crio(socket)),
        RuntimeKind::Docker => Box::new(http::HttpRuntime::docker(socket)),
    }
}

/// One client for the runtimes found (None: none), asked in their order.
pub fn clients(
    found: Vec<(RuntimeKind, PathBuf)>,
    containerd_namespace: &str,
) -> Option<Box<dyn ContainerRuntime>> {
    let mut all: Vec<Box<dyn ContainerRuntime>> = found
        .into_iter()
        .map(|(kind, socket)| client(kind, socket, containerd_namespace.to_owned()))
        .collect();
    match all.len() {
        0 => None,
        1 => all.pop(),
        _ => Some(Box::new(chain::Chain::new(all))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_tell_the_runtime() {
        let of = |p: &str| RuntimeKind::of_socket(Path::new(p));
        assert_eq!(
            of("/run/containerd/containerd.sock"),
            RuntimeKind::Containerd
        );
        assert_eq!(of("/var/run/crio/crio.sock"), RuntimeKind::Crio);
        assert_eq!(of("/var/run/docker.sock"), RuntimeKind::Docker);
        assert_eq!(
            of("/run/k3s/containerd/containerd.sock"),
            RuntimeKind::Containerd
        );
        let given = locate(Some(Path::new("/x/docker.sock")), None);
        assert_eq!(
            given,
            [(RuntimeKind::Docker, PathBuf::from("/x/docker.sock"))]
        );
        let forced = locate(
            Some(Path::new("/x/docker.sock")),
            Some(RuntimeKind::Containerd),
        );
        assert_eq!(forced[0].0, RuntimeKind::Containerd);
    }
}
