//! The JSON keepalive-agent writes, as types: the records on stdout and
//! `/events`, the rows of `/sockets`, the `ready` and `stopped` lines, the
//! kernel's counters and the hooks' status. The agent serialises these; the
//! CLI client, the integration tests and `cargo xtask bench` deserialise
//! the same types, so a renamed field is a compile error everywhere, not a
//! `null` in one reader.
//!
//! Serde only: no kernel, no I/O. The README's schema table describes
//! these types.

mod lifecycle;
mod path;
mod record;
mod socket;
mod vocab;

pub use lifecycle::{HookStatus, KernelCounters, Line, LineError, Ready, Scheme, Stopped};
pub use path::{Gap, IdleCloseRange, PathRow};
pub use record::{Keepalive, Record};
pub use socket::{Owner, ProgramInfo, Risk, SocketRow};
pub use vocab::{
    Cause, Evidence, Hook, HookMode, Program, RecordKind, ResetClass, RiskBasis, RiskReason,
    Source, TcpState, Trigger, UnknownName,
};
