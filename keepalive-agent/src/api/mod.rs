//! What the agent serves: the HTTP routes ([`routes`]) on a server that
//! bounds slow clients ([`server`]), strict query filters ([`filters`]),
//! the Prometheus metrics ([`metrics`]), the learned paths ([`paths`]), each
//! workload's advice ([`advice`]) and the state they all read
//! ([`state`]). Depends on `table`, `model`, `host` (sysctls) and `bpf`
//! (the kernel's counters); `run` builds it and feeds it events.

pub mod advice;
pub mod filters;
pub mod listing;
pub mod metrics;
pub mod naming;
pub mod paths;
pub mod routes;
pub mod server;
pub mod state;
pub mod web;
