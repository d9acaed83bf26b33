//! keepalive-agent: loads the kernel programs, follows their events and
//! reports TCP keepalive per socket. The binary (`main.rs`) dispatches the
//! command line; the library holds everything, so that the fuzz targets
//! (`fuzz/`) reach the parsers of untrusted bytes.
//!
//! Layers, each depending only on those listed before it:
//! - [`model`]: pure types and policy (clock, keepalive settings, causes, risk);
//! - [`kernel`]: facts about the running kernel (BTF, offsets, kallsyms, HZ);
//! - [`host`]: the node outside BPF (namespaces, owners, sysctls, capabilities);
//! - [`bpf`]: the loaded object (loader, hooks, TC, iterator, ring, counters);
//! - [`table`]: the socket table and how an event changes it;
//! - [`cli`]: arguments, the HTTP client commands, text output;
//! - [`api`]: HTTP routes, server, filters, metrics, shared state;
//! - [`run`]: the `run` command as named phases.

pub mod api;
pub mod bpf;
pub mod cli;
pub mod host;
pub mod kernel;
pub mod model;
pub mod run;
pub mod table;
