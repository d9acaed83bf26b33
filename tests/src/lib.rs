//! Harness for the real-kernel integration tests: the agent as a child
//! process, network namespaces and links the tests build and always tear
//! down (Drop guards), and the kernel's own counters as the oracle.
//!
//! Every helper fails loudly: a test that cannot get root, BPF or a
//! namespace panics with the reason; nothing is skipped silently.

pub mod agent;
pub mod daemon;
pub mod metrics;
pub mod netstat;
pub mod prometheus;
pub mod scenario;
pub mod sock;
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
