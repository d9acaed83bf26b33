//! `/proc` texts a namespace or process shapes: `net/sockstat` and
//! `sockstat6`, `PID/maps`.
#![no_main]

use keepalive_agent::host::{program, sockstat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (v4, v6) = text.split_once('\0').unwrap_or((&text, ""));
    let _ = sockstat::tcp_sockets_in(v4, Some(v6));
    let _ = sockstat::tcp_sockets_in(v4, None);
    let _ = program::library_in(std::io::Cursor::new(data));
});
