//! The sysctl advice for a path idle timeout.

use serde::Serialize;

/// Recommended `net.ipv4.tcp_keepalive_*` for a path idle timeout: first
/// probe at half the timeout, then probes every 10–30 s, 6–9 of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Advice {
    pub time_s: u32,
    pub intvl_s: u32,
    pub probes: u32,
    /// time + intvl × probes: how long a dead peer goes unnoticed.
    pub detection_s: u32,
}

pub fn advise(idle_timeout_s: u32) -> Advice {
    let time_s = (idle_timeout_s / 2).max(1);
    let intvl_s = (idle_timeout_s / 12).clamp(10, 30);
    let probes = if idle_timeout_s >= 300 { 9 } else { 6 };
    Advice {
        time_s,
        intvl_s,
        probes,
        detection_s: time_s + intvl_s * probes,
    }
}
