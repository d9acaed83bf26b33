//! Parsing a raw BTF blob: header, type section, string section.

use std::collections::HashMap;

use super::{BTF_MAGIC, Btf, BtfError, HEADER_LEN, TYPE_LEN};

#[derive(Debug, Clone, Copy)]
pub(super) struct RawMember {
    pub(super) name_off: u32,
    pub(super) type_id: u32,
    pub(super) bit_offset: u32,
    pub(super) bitfield_size: u32,
}

#[derive(Debug)]
pub(super) enum Kind {
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

pub(super) fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

pub(super) fn not_found(ty: &str, member: &str, tried: &[&str]) -> BtfError {
    BtfError::MemberNotFound {
        ty: ty.to_string(),
        member: member.to_string(),
        tried: tried.iter().map(|t| t.to_string()).collect(),
    }
}

pub(super) fn read_u32(bytes: &[u8], off: usize) -> Result<u32, BtfError> {
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
}

/// The NUL-terminated string at `off` in the string section.
pub(super) fn name_bytes(strings: &[u8], off: u32) -> Result<&[u8], BtfError> {
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
