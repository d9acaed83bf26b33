//! keepalive-agent's kernel programs: thin wrappers (`programs`) around the
//! `try`-style handlers in the modules below. Every handler error is already
//! counted (`READ_ERRORS`, `EVENTS_LOST`, …); the wrappers only map it to the
//! program's return value. All policy lives in the agent.
//!
//! The programs exist for BPF only (keepalive-agent's build.rs builds them
//! for `bpfel`); a workspace-wide build for the host (`cargo clippy
//! --workspace`) sees an empty program.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// BPF has atomic add but core's Atomic types do not expose it for this target.
#![cfg_attr(
    target_arch = "bpf",
    expect(internal_features, reason = "atomic_xadd is unstable"),
    feature(core_intrinsics)
)]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod inventory;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod sockopt;
#[cfg(target_arch = "bpf")]
mod timer;
#[cfg(target_arch = "bpf")]
mod wire;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
