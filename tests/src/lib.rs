//! Harness for the real-kernel integration tests, one helper per job: the
//! agent as a child process ([`agent`]) or a short command ([`cli`]);
//! network namespaces, veth pairs and nftables rules the tests build and
//! always tear down ([`world`]), a middlebox that forgets idle flows
//! ([`middlebox`]); the kernel's own counters as the oracle
//! ([`netstat`], [`bpf`]); a memory-limited control group ([`cgroup`]); a
//! containerd of the test's own running kubelet-labelled containers ([`containerd`]), pods with keepalive clients in it ([`keepalive_pod`]), a rendered DaemonSet run as a kubelet would ([`kubelet`]) from the built image ([`oci`]); real servers and clients in a namespace ([`daemon`]); one HTTP client ([`http`]), one way to wait
//! ([`wait`]), clients any user can run ([`nobody`]), `/proc` ([`proc`]), metrics text ([`metrics`]), a real
//! Prometheus ([`prometheus`]), sockets as applications make them
//! ([`sock`]) and shared traffic ([`scenario`]).
//!
//! Every helper fails loudly: a test that cannot get root, BPF or a
//! namespace panics with the reason; nothing is skipped silently.

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod cli;
pub mod containerd;
pub mod daemon;
pub mod golang;
pub mod http;
pub mod keepalive_pod;
pub mod kubelet;
pub mod metrics;
pub mod middlebox;
pub mod netstat;
pub mod nobody;
pub mod oci;
pub mod proc;
pub mod prometheus;
pub mod rng;
pub mod scenario;
pub mod sock;
pub mod tls;
pub mod wait;
pub mod world;

/// Panics unless running as root: the tests load BPF programs and build
/// namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "these tests load BPF programs and create network namespaces: run them as root (cargo xtask test)"
        );
    }
}
