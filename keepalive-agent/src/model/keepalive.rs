//! A socket's effective keepalive settings: the kernel keeps 0 in
//! `tcp_sock.keepalive_*` for "not set on the socket", and then the
//! namespace's sysctl applies (`keepalive_time_when` and friends, tcp.h).

use keepalive_api::{Keepalive, Source};
use keepalive_common::KeepaliveSettings;

use super::clock::Clock;

/// The settings the kernel will use, each with its source.
pub fn effective(s: &KeepaliveSettings, enabled: bool, clock: &Clock) -> Keepalive {
    let pick = |sock: u32, net: u32| {
        if sock != 0 {
            (sock, Source::Socket)
        } else {
            (net, Source::Sysctl)
        }
    };
    let (idle, idle_source) = pick(s.sock_time, s.net_time);
    let (intvl, interval_source) = pick(s.sock_intvl, s.net_intvl);
    let (count, count_source) = pick(s.sock_probes, s.net_probes);
    let idle_s = clock.seconds(idle);
    let interval_s = clock.seconds(intvl);
    Keepalive {
        enabled,
        idle_s,
        idle_source,
        interval_s,
        interval_source,
        count,
        count_source,
        detection_s: idle_s + interval_s * count as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_values_override_the_sysctls() {
        let s = KeepaliveSettings {
            sock_time: 250,
            net_time: 7200 * 250,
            net_intvl: 75 * 250,
            net_probes: 9,
            ..Default::default()
        };
        let k = effective(&s, true, &Clock::new(250));
        assert_eq!((k.idle_s, k.idle_source), (1.0, Source::Socket));
        assert_eq!((k.interval_s, k.interval_source), (75.0, Source::Sysctl));
        assert_eq!((k.count, k.count_source), (9, Source::Sysctl));
        assert_eq!(k.detection_s, 1.0 + 75.0 * 9.0);
    }
}
