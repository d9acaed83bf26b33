//! The BTF reader against hand-made blobs, corrupted bytes and this machine's own kernel BTF.

mod builder;
mod properties;

use std::path::Path;

use super::parse::read_u32;
use super::*;
use builder::{Builder, sample};

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
