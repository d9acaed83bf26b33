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

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, Copy)]
struct RawMember {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug)]
enum Kind {
    /// `bits`/`bit_offset` come from the INT encoding.
    Int {
        size: u32,
        bits: u32,
        bit_offset: u32,
    },
    Ptr,
    Array {
        elem: u32,
        nelems: u32,
    },
    Composite {
        size: u32,
        members: Vec<RawMember>,
    },
    Enum {
        size: u32,
        values: Vec<(u32, i64)>,
    },
    Float {
        size: u32,
    },
    /// TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: size is the target's.
    Modifier(u32),
    /// void, FWD, FUNC, FUNC_PROTO, VAR, DATASEC, DECL_TAG: no size we need.
    Other,
}

/// Parsed kernel BTF: types indexed by type id (0 is void) plus strings.
pub struct Btf {
    types: Vec<Kind>,
    strings: Vec<u8>,
    /// First STRUCT/UNION and first ENUM/ENUM64 with each name.
    composites: HashMap<Vec<u8>, u32>,
    enums: HashMap<Vec<u8>, u32>,
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

fn not_found(ty: &str, member: &str, tried: &[&str]) -> BtfError {
    BtfError::MemberNotFound {
        ty: ty.to_string(),
        member: member.to_string(),
        tried: tried.iter().map(|t| t.to_string()).collect(),
    }
}

fn read_u32(bytes: &[u8], off: usize) -> Result<u32, BtfError> {
    off.checked_add(4)
        .and_then(|end| bytes.get(off..end))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed(format!("truncated: need 4 bytes at offset {off}")))
}

/// The section `[start, start+len)` of `bytes`, checked.
fn section<'a>(bytes: &'a [u8], start: u32, len: u32, what: &str) -> Result<&'a [u8], BtfError> {
    let start = start as usize;
    start
        .checked_add(len as usize)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| {
            malformed(format!(
                "{what} section ({len} bytes at {start}) runs past the end of the {}-byte blob",
                bytes.len()
            ))
        })
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

    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let magic = bytes
            .get(..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| malformed("truncated: shorter than the BTF magic"))?;
        if magic == BTF_MAGIC.swap_bytes() {
            return Err(BtfError::WrongEndian);
        }
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic { found: magic });
        }
        if bytes.len() < HEADER_LEN {
            return Err(malformed("truncated: shorter than the BTF header"));
        }
        if bytes[2] != 1 {
            return Err(malformed(format!("unsupported BTF version {}", bytes[2])));
        }
        // hdr_len may exceed 24 on newer kernels; sections are relative to it.
        let hdr_len = read_u32(bytes, 4)?;
        if (hdr_len as usize) < HEADER_LEN || hdr_len as usize > bytes.len() {
            return Err(malformed(format!("bad header length {hdr_len}")));
        }
        let rel = |field: usize| -> Result<u32, BtfError> {
            read_u32(bytes, field)?
                .checked_add(hdr_len)
                .ok_or_else(|| malformed("section offset overflows"))
        };
        let type_sec = section(bytes, rel(8)?, read_u32(bytes, 12)?, "type")?;
        let strings = section(bytes, rel(16)?, read_u32(bytes, 20)?, "string")?.to_vec();

        let mut btf = Btf {
            types: vec![Kind::Other], // type id 0 is void
            strings,
            composites: HashMap::new(),
            enums: HashMap::new(),
        };
        let mut pos = 0;
        while pos < type_sec.len() {
            pos = btf.parse_type(type_sec, pos)?;
        }
        Ok(btf)
    }

    /// Parses the type at `pos`, records it, and returns where the next one starts.
    fn parse_type(&mut self, sec: &[u8], pos: usize) -> Result<usize, BtfError> {
        let id = self.types.len();
        let name_off = read_u32(sec, pos)?;
        let info = read_u32(sec, pos + 4)?;
        let size_or_type = read_u32(sec, pos + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let data = pos + TYPE_LEN;
        // Read the i-th `stride`-byte record of the trailing data, word `w`.
        let word = |i: usize, stride: usize, w: usize| read_u32(sec, data + i * stride + w * 4);

        let (kind, trailing) = match (info >> 24) & 0x1f {
            1 => {
                let enc = read_u32(sec, data)?;
                let (bits, bit_offset) = (enc & 0xff, (enc >> 16) & 0xff);
                let kind = Kind::Int {
                    size: size_or_type,
                    bits,
                    bit_offset,
                };
                (kind, 4)
            }
            2 => (Kind::Ptr, 0),
            3 => (
                Kind::Array {
                    elem: word(0, 12, 0)?,
                    nelems: word(0, 12, 2)?,
                },
                12,
            ),
            4 | 5 => {
                let members = (0..vlen)
                    .map(|i| {
                        let off = word(i, 12, 2)?;
                        // With kind_flag, high 8 bits are the bitfield size.
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        Ok(RawMember {
                            name_off: word(i, 12, 0)?,
                            type_id: word(i, 12, 1)?,
                            bit_offset,
                            bitfield_size,
                        })
                    })
                    .collect::<Result<_, BtfError>>()?;
                (
                    Kind::Composite {
                        size: size_or_type,
                        members,
                    },
                    vlen * 12,
                )
            }
            kind @ (6 | 19) => {
                let stride = if kind == 6 { 8 } else { 12 };
                let values = (0..vlen)
                    .map(|i| {
                        let lo = word(i, stride, 1)?;
                        let v = match (kind, kind_flag) {
                            // ENUM64: keep the bit pattern, also above i64::MAX.
                            (19, _) => ((u64::from(word(i, 12, 2)?) << 32) | u64::from(lo)) as i64,
                            (_, true) => i64::from(lo as i32), // kind_flag: signed
                            _ => i64::from(lo),
                        };
                        Ok((word(i, stride, 0)?, v))
                    })
                    .collect::<Result<_, BtfError>>()?;
                let kind = Kind::Enum {
                    size: size_or_type,
                    values,
                };
                (kind, vlen * stride)
            }
            8..=11 | 18 => (Kind::Modifier(size_or_type), 0),
            16 => (Kind::Float { size: size_or_type }, 0),
            7 | 12 => (Kind::Other, 0),
            13 => (Kind::Other, vlen * 8),
            14 | 17 => (Kind::Other, 4),
            15 => (Kind::Other, vlen * 12),
            k => {
                return Err(malformed(format!(
                    "unknown BTF kind {k} at type id {id}; kernel newer than this agent?"
                )));
            }
        };
        let next = data + trailing;
        if next > sec.len() {
            return Err(malformed(format!(
                "type id {id} runs past the end of the type section"
            )));
        }
        let index = match kind {
            Kind::Composite { .. } => Some(&mut self.composites),
            Kind::Enum { .. } => Some(&mut self.enums),
            _ => None,
        };
        if let Some(index) = index.filter(|_| name_off != 0) {
            let name = name_bytes(&self.strings, name_off)?.to_vec();
            index.entry(name).or_insert(id as u32);
        }
        self.types.push(kind);
        Ok(next)
    }

    fn ty(&self, id: u32) -> Result<&Kind, BtfError> {
        self.types
            .get(id as usize)
            .ok_or_else(|| malformed(format!("reference to missing type id {id}")))
    }

    fn name(&self, off: u32) -> Result<&[u8], BtfError> {
        name_bytes(&self.strings, off)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the real type.
    fn strip(&self, mut id: u32) -> Result<(u32, &Kind), BtfError> {
        for _ in 0..MAX_CHAIN {
            match self.ty(id)? {
                Kind::Modifier(next) => id = *next,
                kind => return Ok((id, kind)),
            }
        }
        Err(malformed(format!(
            "typedef/modifier chain at type id {id} is too long (loop?)"
        )))
    }

    fn size_of(&self, start: u32) -> Result<u32, BtfError> {
        let overflow = || malformed(format!("size of type id {start} overflows"));
        let mut id = start;
        let mut mult: u32 = 1;
        for _ in 0..MAX_CHAIN {
            let size = match self.ty(id)? {
                Kind::Modifier(next) => {
                    id = *next;
                    continue;
                }
                Kind::Array { elem, nelems } => {
                    mult = mult.checked_mul(*nelems).ok_or_else(overflow)?;
                    id = *elem;
                    continue;
                }
                Kind::Ptr => 8, // the agent only runs on 64-bit kernels
                Kind::Int { size, .. }
                | Kind::Composite { size, .. }
                | Kind::Enum { size, .. }
                | Kind::Float { size } => *size,
                Kind::Other => {
                    return Err(malformed(format!(
                        "type id {id} (void, forward declaration or function) has no size"
                    )));
                }
            };
            return size.checked_mul(mult).ok_or_else(overflow);
        }
        Err(malformed(format!(
            "type chain at type id {start} is too long (loop?)"
        )))
    }

    fn composite_id(&self, ty: &str) -> Result<u32, BtfError> {
        self.composites
            .get(ty.as_bytes())
            .copied()
            .ok_or_else(|| BtfError::TypeNotFound(ty.to_string()))
    }

    /// Members of composite `id` as C code sees them: named members, with
    /// anonymous struct/union members flattened in place. Bit offsets are
    /// relative to `id`. Each member examined costs one unit of `budget`.
    fn visible_members(
        &self,
        id: u32,
        budget: &mut usize,
    ) -> Result<Vec<(RawMember, u64)>, BtfError> {
        let mut out = Vec::new();
        self.flatten(id, 0, 0, budget, &mut out)?;
        Ok(out)
    }

    fn flatten(
        &self,
        id: u32,
        base: u64,
        depth: u32,
        budget: &mut usize,
        out: &mut Vec<(RawMember, u64)>,
    ) -> Result<(), BtfError> {
        if depth > MAX_NESTING {
            return Err(malformed(format!(
                "anonymous members nest too deep at type id {id}"
            )));
        }
        let Kind::Composite { members, .. } = self.ty(id)? else {
            return Err(malformed(format!("type id {id} is not a struct or union")));
        };
        for m in members {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                malformed(format!("type id {id}: too many members to walk (loop?)"))
            })?;
            let off = base + u64::from(m.bit_offset);
            if !self.name(m.name_off)?.is_empty() {
                out.push((*m, off));
            } else if let (child, Kind::Composite { .. }) = self.strip(m.type_id)? {
                self.flatten(child, off, depth + 1, budget, out)?;
            } // else: anonymous padding bitfield, not addressable
        }
        Ok(())
    }

    /// Turns a found member into a byte offset and size, refusing bitfields.
    fn finish(&self, ty: &str, member: &str, m: &RawMember, bits: u64) -> Result<Member, BtfError> {
        // Old-style bitfields (no kind_flag) use an INT narrower than its size.
        let narrow_int = match self.strip(m.type_id)?.1 {
            Kind::Int {
                size,
                bits: nr_bits,
                bit_offset,
            } => *bit_offset != 0 || size.checked_mul(8) != Some(*nr_bits),
            _ => false,
        };
        if m.bitfield_size != 0 || !bits.is_multiple_of(8) || narrow_int {
            return Err(BtfError::Bitfield {
                ty: ty.to_string(),
                member: member.to_string(),
            });
        }
        let offset = u32::try_from(bits / 8)
            .map_err(|_| malformed(format!("offset of {ty}.{member} does not fit in 32 bits")))?;
        Ok(Member {
            offset,
            size: self.size_of(m.type_id)?,
        })
    }

    /// Resolve a member by a dotted path inside struct `ty`, e.g.
    /// `member("tcp_sock", "inet_conn.icsk_probes_out")`.
    ///
    /// Each path element is searched through anonymous struct/union members
    /// (the kernel nests many, e.g. sock_common's unions) and through named
    /// members; offsets accumulate. Bitfield members are an error.
    pub fn member(&self, ty: &str, path: &str) -> Result<Member, BtfError> {
        let not_found = || not_found(ty, path, &[path]);
        let mut cur = self.composite_id(ty)?;
        let mut budget = MAX_WORK;
        let mut bits: u64 = 0;
        let mut walked = 0;
        let mut elems = path.split('.').peekable();
        while let Some(elem) = elems.next() {
            walked += elem.len() + 1;
            // An empty element would match anonymous members; refuse it.
            if elem.is_empty() {
                return Err(not_found());
            }
            let mut hit = None;
            for (m, off) in self.visible_members(cur, &mut budget)? {
                if self.name(m.name_off)? == elem.as_bytes() {
                    hit = Some((m, off));
                    break;
                }
            }
            let (m, off) = hit.ok_or_else(not_found)?;
            bits = bits.saturating_add(off);
            if elems.peek().is_none() {
                return self.finish(ty, path, &m, bits);
            }
            match self.strip(m.type_id)? {
                (next, Kind::Composite { .. }) => cur = next,
                _ => {
                    let done = path.get(..walked - 1).unwrap_or(path);
                    return Err(BtfError::NotComposite {
                        ty: ty.to_string(),
                        path: done.to_string(),
                    });
                }
            }
        }
        Err(not_found()) // unreachable: split yields at least one element
    }

    /// Like `member`, but tries each alternative path in order and returns
    /// the first that resolves; the error lists all tried. Used because
    /// members get renamed across kernels.
    pub fn member_any(&self, ty: &str, paths: &[&str]) -> Result<Member, BtfError> {
        let mut first_other = None;
        for path in paths {
            match self.member(ty, path) {
                Ok(m) => return Ok(m),
                // No alternative can help if the struct itself is missing.
                Err(e @ (BtfError::TypeNotFound(_) | BtfError::Malformed(_))) => return Err(e),
                Err(BtfError::MemberNotFound { .. }) => {}
                Err(e) => {
                    first_other.get_or_insert(e);
                }
            }
        }
        // A bitfield or non-struct hit says more than "not found".
        let first = paths.first().copied().unwrap_or_default();
        Err(first_other.unwrap_or_else(|| not_found(ty, first, paths)))
    }

    /// Search a member by name at any depth of nesting, including inside
    /// named embedded structs (e.g. `icsk_probes_out` inside tcp_sock, which
    /// embeds inet_connection_sock as `inet_conn`), breadth-first, returning
    /// the first hit with the accumulated offset. Anonymous members count as
    /// the level they appear in; pointers and arrays are not entered.
    pub fn find_member(&self, ty: &str, name: &str) -> Result<Member, BtfError> {
        let root = self.composite_id(ty)?;
        if !name.is_empty() {
            let mut queue = VecDeque::from([(root, 0u64, 0u32)]);
            let mut budget = MAX_WORK; // also bounds the queue: one push per member
            while let Some((id, base, depth)) = queue.pop_front() {
                if depth > MAX_NESTING {
                    return Err(malformed(format!(
                        "struct {ty} nests too deep or too wide (loop?)"
                    )));
                }
                let members = self.visible_members(id, &mut budget)?;
                for (m, off) in &members {
                    if self.name(m.name_off)? == name.as_bytes() {
                        return self.finish(ty, name, m, base + off);
                    }
                }
                for (m, off) in members {
                    if let (child, Kind::Composite { .. }) = self.strip(m.type_id)? {
                        queue.push_back((child, base + off, depth + 1));
                    }
                }
            }
        }
        Err(not_found(ty, name, &[name]))
    }

    /// Value of an enumerator, e.g. `enum_value("sock_flags", "SOCK_KEEPOPEN") == 3`;
    /// ENUM64 included. Unsigned 64-bit values above `i64::MAX` come back as
    /// their bit pattern (cast to u64 to recover them). An empty `enum_name`
    /// searches every enum, named or anonymous, first hit wins (the kernel
    /// declares e.g. TCP_ESTABLISHED in an anonymous `enum { ... }`).
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Result<i64, BtfError> {
        let found = if enum_name.is_empty() {
            let mut found = None;
            for kind in &self.types {
                found = self.enumerator(kind, enumerator)?;
                if found.is_some() {
                    break;
                }
            }
            found
        } else {
            let id = self.enums.get(enum_name.as_bytes());
            let id = id.ok_or_else(|| BtfError::EnumNotFound(enum_name.to_string()))?;
            self.enumerator(self.ty(*id)?, enumerator)?
        };
        found.ok_or_else(|| BtfError::EnumeratorNotFound {
            enum_name: enum_name.to_string(),
            enumerator: enumerator.to_string(),
        })
    }

    fn enumerator(&self, kind: &Kind, name: &str) -> Result<Option<i64>, BtfError> {
        if let Kind::Enum { values, .. } = kind {
            for (name_off, value) in values {
                if self.name(*name_off)? == name.as_bytes() {
                    return Ok(Some(*value));
                }
            }
        }
        Ok(None)
    }

    /// sizeof(struct ty); used by the layout cross-checks in the tests.
    #[cfg(test)]
    pub fn struct_size(&self, ty: &str) -> Result<u32, BtfError> {
        self.size_of(self.composite_id(ty)?)
    }
}

/// The NUL-terminated string at `off` in the string section.
fn name_bytes(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
    if off == 0 {
        return Ok(b""); // offset 0 is the empty name even if the section is empty
    }
    let tail = strings
        .get(off as usize..)
        .ok_or_else(|| malformed(format!("name offset {off} is past the string section")))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| malformed(format!("name at offset {off} is not NUL-terminated")))?;
    Ok(&tail[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds small BTF blobs; type ids are handed out in call order from 1.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn s(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn ty(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, size_or_type: u32) -> u32 {
            let name = self.s(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            self.words(&[name, info, size_or_type]);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, 1, false, 0, size);
            self.words(&[size * 8]);
            id
        }

        fn ptr(&mut self, target: u32) -> u32 {
            self.ty("", 2, false, 0, target)
        }

        fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.ty("", 3, false, 0, 0);
            self.words(&[elem, index, n]);
            id
        }

        /// Members are (name, type, bit offset, bitfield size); any nonzero
        /// bitfield size switches on kind_flag for the whole struct.
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            m: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let kflag = m.iter().any(|x| x.3 != 0);
            let id = self.ty(name, kind, kflag, m.len() as u32, size);
            for &(n, t, off, bf) in m {
                let n = self.s(n);
                let off = if kflag { (bf << 24) | off } else { off };
                self.words(&[n, t, off]);
            }
            id
        }

        fn strukt(&mut self, name: &str, size: u32, m: &[(&str, u32, u32, u32)]) -> u32 {
            self.composite(4, name, size, m)
        }

        fn union(&mut self, name: &str, size: u32, m: &[(&str, u32, u32, u32)]) -> u32 {
            self.composite(5, name, size, m)
        }

        fn modifier(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.ty(name, kind, false, 0, target)
        }

        fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> u32 {
            let id = self.ty(name, 6, signed, vals.len() as u32, 4);
            for &(n, v) in vals {
                let n = self.s(n);
                self.words(&[n, v as u32]);
            }
            id
        }

        fn enum64(&mut self, name: &str, vals: &[(&str, u64)]) -> u32 {
            let id = self.ty(name, 19, false, vals.len() as u32, 8);
            for &(n, v) in vals {
                let n = self.s(n);
                self.words(&[n, v as u32, (v >> 32) as u32]);
            }
            id
        }

        /// One of every kind that carries nothing we use, to test skipping.
        fn noise(&mut self, int: u32) {
            self.ty("fwd_decl", 7, false, 0, 0);
            let proto = self.ty("", 13, false, 2, int);
            let (a, b) = (self.s("a"), self.s("b"));
            self.words(&[a, int, b, int]);
            self.ty("some_func", 12, false, 0, proto);
            let var = self.ty("some_var", 14, false, 0, int);
            self.words(&[1]);
            self.ty(".data", 15, false, 1, 8);
            self.words(&[var, 0, 4]);
            self.ty("tag", 17, false, 0, var);
            self.words(&[u32::MAX]);
            self.ty("double", 16, false, 0, 8);
            self.modifier(18, "user", int);
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let t = self.types.len() as u32;
            let s = self.strings.len() as u32;
            for w in [24, 0, t, t, s] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// struct inner { int x; char y; };
    /// typedef const volatile my_int_t_inner my_int_t;  (chain to int)
    /// struct outer {
    ///     int a;                       // 0
    ///     union {                      // 4
    ///         struct { char b; int c; };   // b@4 c@8
    ///         long d;                  // 4
    ///     };
    ///     struct inner named;          // 16
    ///     my_int_t arr[3];             // 24, 12 bytes
    ///     struct inner *p;             // 40
    ///     unsigned flag:1;             // 48, bitfield
    ///     unsigned char after;         // 49
    /// };
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let ch = b.int("char", 1); // 2
        let long = b.int("long", 8); // 3
        b.noise(int);
        let inner = b.strukt("inner", 8, &[("x", int, 0, 0), ("y", ch, 32, 0)]);
        let td1 = b.modifier(8, "my_int_t_inner", int);
        let vol = b.modifier(9, "", td1);
        let cst = b.modifier(10, "", vol);
        let restrict = b.modifier(11, "", cst);
        let td2 = b.modifier(8, "my_int_t", restrict);
        let anon_s = b.strukt("", 8, &[("b", ch, 0, 0), ("c", int, 32, 0)]);
        let anon_u = b.union("", 8, &[("", anon_s, 0, 0), ("d", long, 0, 0)]);
        let arr = b.array(td2, int, 3);
        let p = b.ptr(inner);
        b.strukt(
            "outer",
            56,
            &[
                ("a", int, 0, 0),
                ("", anon_u, 32, 0),
                ("named", inner, 128, 0),
                ("arr", arr, 192, 0),
                ("p", p, 320, 0),
                ("", int, 384, 3), // anonymous padding bitfield
                ("flag", int, 387, 1),
                ("after", ch, 392, 0),
            ],
        );
        // A later struct with the same name must not win.
        b.strukt("inner", 99, &[]);
        b.enum32("colors", false, &[("RED", 0), ("BLUE", 7)]);
        b.enum32("signs", true, &[("NEG", -5)]);
        b.enum32("", false, &[("ANON_CONST", 42)]);
        b.enum64("big", &[("SMALL", 1), ("HUGE", 0xbb67_ae85_84ca_a73b)]);
        b.build()
    }

    fn m(offset: u32, size: u32) -> Member {
        Member { offset, size }
    }

    #[test]
    fn anonymous_nesting_and_paths() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member("outer", "a").unwrap(), m(0, 4));
        assert_eq!(btf.member("outer", "b").unwrap(), m(4, 1));
        assert_eq!(btf.member("outer", "c").unwrap(), m(8, 4));
        assert_eq!(btf.member("outer", "d").unwrap(), m(4, 8));
        assert_eq!(btf.member("outer", "named").unwrap(), m(16, 8));
        assert_eq!(btf.member("outer", "named.y").unwrap(), m(20, 1));
        assert_eq!(btf.member("outer", "p").unwrap(), m(40, 8));
        assert_eq!(btf.member("outer", "after").unwrap(), m(49, 1));
        assert_eq!(btf.struct_size("outer").unwrap(), 56);
        assert_eq!(btf.struct_size("inner").unwrap(), 8, "first struct wins");
    }

    #[test]
    fn find_member_breadth_first() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.find_member("outer", "y").unwrap(), m(20, 1));
        assert_eq!(btf.find_member("outer", "c").unwrap(), m(8, 4));
        // Pointers are not followed.
        assert!(matches!(
            btf.find_member("outer", "nope"),
            Err(BtfError::MemberNotFound { .. })
        ));
        assert!(matches!(
            btf.find_member("outer", ""),
            Err(BtfError::MemberNotFound { .. })
        ));
    }

    #[test]
    fn typedef_chain_and_arrays() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.member("outer", "arr").unwrap(), m(24, 12));
    }

    #[test]
    fn modifier_loop_is_an_error() {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        b.modifier(8, "a", 3); // 2 -> 3
        b.modifier(8, "b", 2); // 3 -> 2
        b.strukt("s", 4, &[("x", 2, 0, 0), ("y", int, 0, 0)]);
        let btf = Btf::parse(&b.build()).expect("parse");
        assert!(matches!(btf.member("s", "x"), Err(BtfError::Malformed(_))));
        assert_eq!(btf.member("s", "y").unwrap(), m(0, 4));
    }

    #[test]
    fn bitfields_are_refused() {
        let btf = Btf::parse(&sample()).expect("parse");
        let err = btf.member("outer", "flag").unwrap_err();
        assert!(matches!(err, BtfError::Bitfield { .. }), "{err}");
        assert!(matches!(
            btf.find_member("outer", "flag"),
            Err(BtfError::Bitfield { .. })
        ));

        // Old-style bitfield: no kind_flag, INT narrower than its size.
        let mut b = Builder::new();
        let bit = b.ty("u3", 1, false, 0, 4);
        b.words(&[3]);
        b.strukt("old", 4, &[("f", bit, 0, 0), ("g", bit, 3, 0)]);
        let btf = Btf::parse(&b.build()).expect("parse");
        assert!(matches!(
            btf.member("old", "f"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member("old", "g"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    #[test]
    fn path_errors() {
        let btf = Btf::parse(&sample()).expect("parse");
        let err = btf.member("outer", "a.b").unwrap_err();
        assert!(
            matches!(&err, BtfError::NotComposite { path, .. } if path == "a"),
            "{err}"
        );
        for bad in ["", ".", "named.", ".a", "named..y", "named.zz"] {
            assert!(
                matches!(
                    btf.member("outer", bad),
                    Err(BtfError::MemberNotFound { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            btf.member("nosuch", "a"),
            Err(BtfError::TypeNotFound(_))
        ));
        // Only structs/unions are looked up by name.
        assert!(matches!(
            btf.member("my_int_t", "a"),
            Err(BtfError::TypeNotFound(_))
        ));
    }

    #[test]
    fn member_any_tries_in_order() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(
            btf.member_any("outer", &["gone", "named.y", "c"]).unwrap(),
            m(20, 1)
        );
        let err = btf.member_any("outer", &["gone", "also_gone"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "struct outer has no member gone (tried: gone, also_gone); kernel BTF too new or too old?"
        );
        assert!(matches!(
            btf.member_any("outer", &["flag", "gone"]),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            btf.member_any("nosuch", &["a"]),
            Err(BtfError::TypeNotFound(_))
        ));
        assert!(matches!(
            btf.member_any("outer", &[]),
            Err(BtfError::MemberNotFound { .. })
        ));
    }

    #[test]
    fn enums() {
        let btf = Btf::parse(&sample()).expect("parse");
        assert_eq!(btf.enum_value("colors", "BLUE").unwrap(), 7);
        assert_eq!(btf.enum_value("signs", "NEG").unwrap(), -5);
        assert_eq!(btf.enum_value("big", "SMALL").unwrap(), 1);
        assert_eq!(
            btf.enum_value("big", "HUGE").unwrap() as u64,
            0xbb67_ae85_84ca_a73b
        );
        assert_eq!(btf.enum_value("", "ANON_CONST").unwrap(), 42);
        assert!(matches!(
            btf.enum_value("nosuch", "RED"),
            Err(BtfError::EnumNotFound(_))
        ));
        assert!(matches!(
            btf.enum_value("colors", "GREEN"),
            Err(BtfError::EnumeratorNotFound { .. })
        ));
    }

    #[test]
    fn wrong_magic_and_endianness() {
        let mut blob = sample();
        blob[0] = 0x00;
        assert!(matches!(
            Btf::parse(&blob),
            Err(BtfError::BadMagic { found: 0xeb00 })
        ));
        blob[0] = 0xeb;
        blob[1] = 0x9f;
        assert!(matches!(Btf::parse(&blob), Err(BtfError::WrongEndian)));
        assert!(Btf::parse(b"\x7fELF").is_err());
    }

    #[test]
    fn unknown_kind_and_version() {
        let mut b = Builder::new();
        b.ty("future", 20, false, 0, 0);
        let err = Btf::parse(&b.build()).err().expect("must fail");
        assert!(err.to_string().contains("unknown BTF kind 20"), "{err}");
        let mut blob = sample();
        blob[2] = 2;
        assert!(matches!(Btf::parse(&blob), Err(BtfError::Malformed(_))));
    }

    /// Exercise every lookup; only panics matter here.
    fn poke(btf: &Btf) {
        for path in [
            "a", "b", "c", "d", "named.y", "arr", "p", "flag", "after", "x",
        ] {
            let _ = btf.member("outer", path);
            let _ = btf.find_member("outer", path);
        }
        let _ = btf.member_any("outer", &["zz", "named.x"]);
        let _ = btf.struct_size("outer");
        let _ = btf.struct_size("inner");
        for (e, v) in [
            ("colors", "BLUE"),
            ("signs", "NEG"),
            ("big", "HUGE"),
            ("", "X"),
        ] {
            let _ = btf.enum_value(e, v);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(
                Btf::parse(&blob[..len]).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        poke(&Btf::parse(&blob).expect("full blob parses"));
    }

    /// Cuts the type section mid-type while keeping the header consistent,
    /// so the type walker itself meets the truncation.
    #[test]
    fn truncated_type_section_is_an_error() {
        let blob = sample();
        let type_len = read_u32(&blob, 12).expect("type_len") as usize;
        let (types, strings) = blob[24..].split_at(type_len);
        for cut in 1..type_len {
            let mut b = Builder::new();
            b.types = types[..cut].to_vec();
            b.strings = strings.to_vec();
            // Cuts on a type boundary may parse; the point is that none panics.
            let _ = Btf::parse(&b.build());
        }
        let mut b = Builder::new();
        b.types = types[..type_len - 1].to_vec();
        b.strings = strings.to_vec();
        assert!(Btf::parse(&b.build()).is_err());
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let blob = sample();
        for i in 0..blob.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[i] ^= x;
                if let Ok(btf) = Btf::parse(&bad) {
                    poke(&btf);
                }
            }
        }
    }

    /// The BTF of the machine running the tests, if it has one.
    fn vmlinux() -> Option<Btf> {
        if !Path::new(VMLINUX_BTF_PATH).exists() {
            eprintln!("skipping: no {VMLINUX_BTF_PATH}");
            return None;
        }
        Some(Btf::from_sys_fs().expect("kernel BTF parses"))
    }

    #[test]
    fn io_error_names_the_path() {
        let err = Btf::from_path(Path::new("/nonexistent/btf"))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/btf"), "{err}");
    }

    #[test]
    fn kernel_members() {
        let Some(btf) = vmlinux() else { return };
        let timer = btf.member("sock", "sk_timer").unwrap();
        assert_eq!(timer.size, btf.struct_size("timer_list").unwrap());
        assert_eq!(
            btf.member_any("sock", &["sk_keepalive_timer_does_not_exist", "sk_timer"])
                .unwrap(),
            timer
        );
        let probes = btf.find_member("tcp_sock", "icsk_probes_out").unwrap();
        assert_eq!(probes.size, 1);
        assert_eq!(
            btf.member("tcp_sock", "inet_conn.icsk_probes_out").unwrap(),
            probes
        );
        assert_eq!(
            btf.find_member("tcp_sock", "keepalive_probes")
                .unwrap()
                .size,
            1
        );
        assert_eq!(
            btf.find_member("tcp_sock", "keepalive_time").unwrap().size,
            4
        );
        assert_eq!(btf.member("sock_common", "skc_cookie").unwrap().size, 8);
        assert_eq!(btf.member("timer_list", "function").unwrap().size, 8);
        assert_eq!(btf.member("ns_common", "inum").unwrap().size, 4);
        assert_eq!(btf.enum_value("sock_flags", "SOCK_KEEPOPEN").unwrap(), 3);
        assert_eq!(
            btf.enum_value("sk_rst_reason", "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT")
                .unwrap(),
            15
        );
        // sock starts with sock_common, so its anonymous-union members are
        // reachable from sock too, at the same offset.
        let cookie = btf.member("sock_common", "skc_cookie").unwrap();
        assert_eq!(btf.find_member("sock", "skc_cookie").unwrap(), cookie);
        assert_eq!(
            btf.member("sock", "__sk_common.skc_cookie").unwrap(),
            cookie
        );
        let err = btf.member("sock", "sk_no_such_member").unwrap_err();
        assert!(matches!(err, BtfError::MemberNotFound { .. }), "{err}");
    }

    /// Cross-checks every top-level, non-bitfield member of every struct
    /// against `bpftool btf dump` (raw format); skipped without bpftool.
    #[test]
    fn kernel_offsets_match_bpftool() {
        let Some(btf) = vmlinux() else { return };
        let out = std::process::Command::new("bpftool")
            .args(["btf", "dump", "file", VMLINUX_BTF_PATH])
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out.stdout,
            _ => {
                eprintln!("skipping: bpftool unavailable");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out);
        let mut seen = std::collections::HashSet::new();
        let mut current: Option<String> = None;
        let (mut structs, mut members) = (0, 0);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix('\t') {
                let Some(ty) = &current else { continue };
                // 'name' type_id=N bits_offset=M [bitfield_size=K]
                let mut f = rest.split_whitespace();
                let name = f.next().unwrap_or_default().trim_matches('\'');
                let bits: u32 = f
                    .find_map(|w| w.strip_prefix("bits_offset="))
                    .and_then(|v| v.parse().ok())
                    .expect("bits_offset");
                if name == "(anon)" || rest.contains("bitfield_size=") {
                    continue;
                }
                let got = btf
                    .member(ty, name)
                    .unwrap_or_else(|e| panic!("{ty}.{name}: {e}"));
                assert_eq!(got.offset, bits / 8, "{ty}.{name}");
                members += 1;
                continue;
            }
            current = None;
            // [id] STRUCT 'name' size=N vlen=M
            let mut f = line.split_whitespace().skip(1);
            if !matches!(f.next(), Some("STRUCT" | "UNION")) {
                continue;
            }
            let name = f.next().unwrap_or_default().trim_matches('\'');
            if name == "(anon)" || !seen.insert(name.to_string()) {
                continue; // anonymous, or not the first with this name
            }
            let size: u32 = f
                .next()
                .and_then(|w| w.strip_prefix("size="))
                .and_then(|v| v.parse().ok())
                .expect("size");
            assert_eq!(btf.struct_size(name).unwrap(), size, "sizeof {name}");
            structs += 1;
            current = Some(name.to_string());
        }
        eprintln!("checked {structs} structs, {members} members against bpftool");
        assert!(structs > 1000 && members > 10_000);
    }
}
