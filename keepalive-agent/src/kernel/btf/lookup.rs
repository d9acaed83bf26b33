//! Finding members, sizes and enumerators in parsed BTF, with bounded walks.

use std::collections::VecDeque;

use super::{
    Btf, BtfError, MAX_CHAIN, MAX_NESTING, MAX_WORK, Member,
    parse::{Kind, RawMember, malformed, name_bytes, not_found},
};

impl Btf {
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
