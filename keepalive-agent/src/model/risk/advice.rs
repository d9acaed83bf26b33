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

/// The advice for a path whose idle timeout was learned: the first probe
/// at half the shortest fatal gap, and below 90 % of the longest gap the
/// path was seen to survive (proven safe); interval and count as for a
/// profile of the fatal gap.
pub fn advise_learned(survived_s: Option<f64>, fatal_s: f64) -> Advice {
    let timeout = fatal_s.floor().max(1.0) as u32;
    let base = advise(timeout);
    let time_s = match survived_s {
        // 90 %: a probe timer fires up to a jiffy late, and the gap was
        // measured to the scan, not to the packet.
        Some(s) if s < fatal_s => ((s * 0.9).floor() as u32).clamp(1, base.time_s.max(1)),
        _ => base.time_s,
    };
    Advice {
        time_s,
        detection_s: time_s + base.intvl_s * base.probes,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_advice_stays_below_what_the_path_survived() {
        // Survived 300 s, reset after 360 s: half the fatal gap is below both.
        assert_eq!(advise_learned(Some(300.0), 360.0).time_s, 180);
        // Survived 100 s only: 90 s is below both.
        assert_eq!(advise_learned(Some(100.0), 360.0).time_s, 90);
        assert_eq!(advise_learned(None, 360.0).time_s, 180);
        assert_eq!(advise_learned(Some(2.5), 4.0).time_s, 2);
        assert_eq!(advise_learned(Some(0.5), 4.0).time_s, 1);
    }
}
