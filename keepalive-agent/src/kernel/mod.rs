//! Facts about the running kernel, read once at start: struct member
//! offsets and sizes from its BTF ([`btf`], [`offsets`]), the timer
//! callbacks' addresses ([`kallsyms`]) and its tick rate ([`hz`]). Depends
//! on nothing of the agent's own; the result is a
//! [`KernelConfig`](keepalive_common::KernelConfig) for the programs.

pub mod btf;
pub mod hz;
pub mod kallsyms;
pub mod offsets;
