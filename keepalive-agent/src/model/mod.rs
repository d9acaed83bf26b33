//! Pure types and policy: no I/O, no kernel access. Everything above this
//! layer (`table`, `api`, `run`, `cli`) builds on it; it depends on nothing
//! of the agent's own.
//!
//! - [`clock`]: kernel clocks (monotonic ns, jiffies) to seconds.
//! - [`keepalive`]: a socket's effective keepalive settings and their sources.
//! - [`death`]: why a connection died (cause, errno names, unanswered time).
//! - [`addr`]: socket addresses out of the kernel's byte arrays.
//! - [`risk`]: path idle timeouts, which sockets they endanger, the advice.
//! - [`reset`]: whether an RST or a stall followed an idle gap.
//! - [`paths`]: each destination group's idle timeout, learned.
//! - [`idle_close`]: the requests servers' idle closes cost, for the advice.
//! - [`knowledge`]: where each program sets its keepalive (`programs.yaml`).
//! - [`workload`]: sockets grouped by workload, and the fix in its program's terms.
//!
//! The vocabulary itself (record kinds, TCP states, causes, hook modes)
//! lives in `keepalive-api`, shared with every reader of the agent's JSON.

pub mod addr;
pub mod clock;
pub mod death;
pub mod idle_close;
pub mod keepalive;
pub mod knowledge;
pub mod paths;
pub mod reset;
pub mod risk;
pub mod workload;
