//! The query string of `/sockets` and `/events` (any client of the
//! listener sends one).
#![no_main]

use keepalive_agent::api::filters::{Filter, Param};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(&str, &str)> = text
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .collect();
    let _ = Filter::parse(pairs.iter().copied(), &Param::ALL);
});
