//! A container runtime's inspect reply (CRI-O, Docker): labels and names
//! a pod's author chose.
#![no_main]

use keepalive_agent::host::runtime::{RuntimeKind, http};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        for kind in [RuntimeKind::Docker, RuntimeKind::Crio] {
            let _ = http::parse(kind, &json);
        }
    }
});
