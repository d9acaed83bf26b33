//! The kernel's BTF blob (read from /sys/kernel/btf/vmlinux or a file).
#![no_main]

use keepalive_agent::kernel::btf::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Btf::parse(data);
});
