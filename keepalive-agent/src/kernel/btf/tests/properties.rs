//! Properties of the reader against structs the builder writes: whatever
//! layout is written (member names, int sizes, byte offsets, nested
//! structs), each member is read back where it was put.

use proptest::prelude::*;

use super::{Btf, Builder, m};

/// A struct member: its int size (1, 2, 4, 8) and byte offset.
fn members() -> impl Strategy<Value = Vec<(u32, u32)>> {
    prop::collection::vec(
        (prop::sample::select(vec![1u32, 2, 4, 8]), 0u32..4096),
        1..24,
    )
}

proptest! {
    #[test]
    fn every_member_written_is_read_back_where_it_was_put(
        fields in members(),
        nested_at in 0u32..4096,
    ) {
        let mut b = Builder::new();
        let ints: Vec<u32> = [1u32, 2, 4, 8].iter().map(|s| b.int(&format!("u{s}"), *s)).collect();
        let int_of = |size: u32| ints[size.trailing_zeros() as usize];
        let names: Vec<String> = (0..fields.len()).map(|i| format!("f{i}")).collect();
        let inner_members: Vec<(&str, u32, u32, u32)> = fields
            .iter()
            .zip(&names)
            .map(|(&(size, at), name)| (name.as_str(), int_of(size), at * 8, 0))
            .collect();
        let inner = b.strukt("inner", 8192, &inner_members);
        b.strukt("outer", 16384, &[("head", int_of(4), 0, 0), ("in", inner, nested_at * 8, 0)]);
        let btf = Btf::parse(&b.build()).expect("a well-formed blob parses");
        for (&(size, at), name) in fields.iter().zip(&names) {
            prop_assert_eq!(btf.member("inner", name).unwrap(), m(at, size));
            prop_assert_eq!(
                btf.member("outer", &format!("in.{name}")).unwrap(),
                m(nested_at + at, size)
            );
        }
        prop_assert_eq!(btf.struct_size("outer").unwrap(), 16384);
    }
}
