//! Small BTF blobs made by hand, for the parser tests.

/// Builds small BTF blobs; type ids are handed out in call order from 1.
pub struct Builder {
    pub types: Vec<u8>,
    pub strings: Vec<u8>,
    next_id: u32,
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    pub fn s(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    pub fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub fn ty(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, size_or_type: u32) -> u32 {
        let name = self.s(name);
        let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
        self.words(&[name, info, size_or_type]);
        self.next_id += 1;
        self.next_id - 1
    }

    pub fn int(&mut self, name: &str, size: u32) -> u32 {
        let id = self.ty(name, 1, false, 0, size);
        self.words(&[size * 8]);
        id
    }

    pub fn ptr(&mut self, target: u32) -> u32 {
        self.ty("", 2, false, 0, target)
    }

    pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.ty("", 3, false, 0, 0);
        self.words(&[elem, index, n]);
        id
    }

    /// Members are (name, type, bit offset, bitfield size); any nonzero
    /// bitfield size switches on kind_flag for the whole struct.
    pub fn composite(
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

    pub fn strukt(&mut self, name: &str, size: u32, m: &[(&str, u32, u32, u32)]) -> u32 {
        self.composite(4, name, size, m)
    }

    pub fn union(&mut self, name: &str, size: u32, m: &[(&str, u32, u32, u32)]) -> u32 {
        self.composite(5, name, size, m)
    }

    pub fn modifier(&mut self, kind: u32, name: &str, target: u32) -> u32 {
        self.ty(name, kind, false, 0, target)
    }

    pub fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> u32 {
        let id = self.ty(name, 6, signed, vals.len() as u32, 4);
        for &(n, v) in vals {
            let n = self.s(n);
            self.words(&[n, v as u32]);
        }
        id
    }

    pub fn enum64(&mut self, name: &str, vals: &[(&str, u64)]) -> u32 {
        let id = self.ty(name, 19, false, vals.len() as u32, 8);
        for &(n, v) in vals {
            let n = self.s(n);
            self.words(&[n, v as u32, (v >> 32) as u32]);
        }
        id
    }

    /// One of every kind that carries nothing we use, to test skipping.
    pub fn noise(&mut self, int: u32) {
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

    pub fn build(&self) -> Vec<u8> {
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
pub fn sample() -> Vec<u8> {
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
