//! Minimal reader of the kernel's own BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Our eBPF programs cannot use CO-RE relocations, so the agent looks up
//! struct member offsets/sizes and enum values here at load time and hands
//! them to the programs as constants.
//!
//! What it does: parses raw little-endian BTF (header, type section, string
//! section), finds named structs/unions (the first one with a name wins),
//! resolves dotted member paths through anonymous structs/unions, sizes types
//! through typedef/const/volatile/restrict/type_tag chains and arrays, and
//! reads ENUM/ENUM64 enumerators.
//!
//! What it does not do: no big-endian BTF, no split/module BTF (only
//! vmlinux), no ELF `.BTF` sections, no `.BTF.ext`, no bitfield members (they
//! have no byte offset), no lookups of typedef'd names such as `atomic64_t`,
//! and no full validation of the type graph: malformed input yields an error
//! when it is touched, never a panic.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Where the kernel exposes its BTF when built with CONFIG_DEBUG_INFO_BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_LEN: usize = 12;
/// Bounds on walks so that looping or absurdly deep (malformed) type graphs
/// end in an error instead of hanging or overflowing the stack.
const MAX_CHAIN: usize = 64;
const MAX_NESTING: u32 = 32;
/// Members examined per lookup; shared DAG nodes can otherwise blow up.
const MAX_WORK: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF from {}: {source}; is the kernel built with CONFIG_DEBUG_INFO_BTF and /sys mounted?",
        path.display()
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a BTF blob: magic is {found:#06x}, expected 0xeb9f; wrong file?")]
    BadMagic { found: u16 },
    #[error("BTF is big-endian; only little-endian BTF is supported")]
    WrongEndian,
    #[error("malformed kernel BTF: {0}")]
    Malformed(String),
    #[error(
        "kernel BTF has no struct or union named {0}; kernel too new or too old, or the subsystem is not built in?"
    )]
    TypeNotFound(String),
    #[error(
        "struct {ty} has no member {member} (tried: {}); kernel BTF too new or too old?",
        tried.join(", ")
    )]
    MemberNotFound {
        ty: String,
        member: String,
        tried: Vec<String>,
    },
    #[error("struct {ty}: member {path} is not a struct or union, so the path cannot go deeper")]
    NotComposite { ty: String, path: String },
    #[error("struct {ty}: member {member} is a bitfield and cannot be read at a byte offset")]
    Bitfield { ty: String, member: String },
    #[error("kernel BTF has no enum named {0}; kernel too new or too old?")]
    EnumNotFound(String),
    #[error("enum {enum_name} has no enumerator {enumerator}; kernel too new or too old?")]
    EnumeratorNotFound {
        enum_name: String,
        enumerator: String,
    },
}

/// Where a member sits inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Bytes from the start of the struct.
    pub offset: u32,
    /// Bytes of the member's type after resolving typedef/const/volatile;
    /// for arrays the total size.
    pub size: u32,
}

mod lookup;
mod parse;
#[cfg(test)]
mod tests;

use parse::Kind;

/// Parsed kernel BTF: types indexed by type id (0 is void) plus strings.
pub struct Btf {
    types: Vec<Kind>,
    strings: Vec<u8>,
    /// First STRUCT/UNION and first ENUM/ENUM64 with each name.
    composites: HashMap<Vec<u8>, u32>,
    enums: HashMap<Vec<u8>, u32>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF_PATH))
    }

    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&bytes)
    }
}
