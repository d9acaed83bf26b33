//! The loaded kernel object and what the agent does with it: load it with
//! this kernel's offsets ([`loader`]), attach the tracing hooks in the best
//! mode the kernel permits ([`hooks`]), the TC classifiers in every
//! namespace ([`tc`]), walk sockets with the iterator ([`iter`]), decode
//! the ring buffer's records ([`ring`]), follow option changes
//! ([`sockopt`]) and read the exact counters
//! ([`counters`]). Errors keep aya's error; a verifier log is trimmed to
//! its reason when printed ([`error`]).
//!
//! Depends on `kernel` (offsets), `host` (entering namespaces) and the
//! shared types of `keepalive-common`/`keepalive-api`; knows nothing of
//! the socket table or the HTTP API.

pub mod counters;
pub mod error;
pub mod hooks;
pub mod iter;
pub mod loader;
pub mod ring;
pub mod sockopt;
pub mod tc;
