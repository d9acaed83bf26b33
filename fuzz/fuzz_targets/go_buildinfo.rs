//! An executable any user can run: its ELF headers and Go build info.
#![no_main]

use keepalive_agent::host::go_buildinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(Some(v)) = go_buildinfo::version_in(std::io::Cursor::new(data)) {
        assert!(v.len() <= 64, "a version over 64 bytes was kept");
    }
});
