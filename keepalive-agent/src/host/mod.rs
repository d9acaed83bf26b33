//! The node outside BPF: network namespaces and entering them ([`netns`]),
//! which process owns a socket ([`owners`]) read from `/proc` within a byte
//! budget ([`procfs`]), which program that is
//! ([`program`], a Go binary's build info: [`go_buildinfo`]) and who its cgroup names ([`cgroup`]), each namespace's keepalive
//! sysctls ([`sysctl`]), TCP socket count ([`sockstat`]) and conntrack ([`conntrack`]), the agent's own
//! capabilities ([`caps`]), process limits and memory ([`process`]) and
//! its output streams ([`outlet`]), and who a container is, asked of the
//! container runtime ([`runtime`]). Reads `/proc` and `/sys`; depends on nothing of the
//! agent's own.

pub mod caps;
pub mod cgroup;
pub mod conntrack;
pub mod go_buildinfo;
pub mod netns;
pub mod outlet;
pub mod owners;
pub mod process;
pub mod procfs;
pub mod program;
pub mod runtime;
pub mod sockstat;
pub mod sysctl;
