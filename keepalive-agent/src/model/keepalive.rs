//! A socket's effective keepalive settings: the kernel keeps 0 in
//! `tcp_sock.keepalive_*` for "not set on the socket", and then the
//! namespace's sysctl applies (`keepalive_time_when` and friends, tcp.h).

use keepalive_api::{Keepalive, Source};
use keepalive_common::{KeepaliveSettings, OptionEvent, option};

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

/// The kernel's bounds (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`,
/// `MAX_TCP_KEEPCNT`, include/net/tcp.h).
const MAX_KEEPIDLE: i32 = 32767;
const MAX_KEEPINTVL: i32 = 32767;
const MAX_KEEPCNT: i32 = 127;

/// `k` after the option `set`, as the kernel applies it (`sk_setsockopt`,
/// `do_tcp_setsockopt`); `None` when the kernel refuses it (EINVAL: an
/// `optlen` under an int, a value out of bounds) and nothing changes.
pub fn with_option(k: &Keepalive, set: &OptionEvent) -> Option<Keepalive> {
    if set.optlen < 4 {
        return None;
    }
    let v = set.value;
    let mut k = k.clone();
    match set.option {
        option::KEEPALIVE => k.enabled = v != 0,
        option::KEEPIDLE if (1..=MAX_KEEPIDLE).contains(&v) => {
            (k.idle_s, k.idle_source) = (f64::from(v), Source::Socket);
        }
        option::KEEPINTVL if (1..=MAX_KEEPINTVL).contains(&v) => {
            (k.interval_s, k.interval_source) = (f64::from(v), Source::Socket);
        }
        option::KEEPCNT if (1..=MAX_KEEPCNT).contains(&v) => {
            (k.count, k.count_source) = (v as u32, Source::Socket);
        }
        _ => return None,
    }
    k.detection_s = k.idle_s + k.interval_s * f64::from(k.count);
    Some(k)
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

    fn set(option: u32, value: i32) -> OptionEvent {
        OptionEvent {
            option,
            value,
            optlen: 4,
            ..Default::default()
        }
    }

    #[test]
    fn options_apply_as_the_kernel_applies_them() {
        let s = KeepaliveSettings {
            net_time: 7200,
            net_intvl: 75,
            net_probes: 9,
            ..Default::default()
        };
        let off = effective(&s, false, &Clock::new(1));
        let on = with_option(&off, &set(option::KEEPALIVE, 1)).unwrap();
        assert!(on.enabled && on.idle_source == Source::Sysctl);
        let k = with_option(&on, &set(option::KEEPIDLE, 30)).unwrap();
        let k = with_option(&k, &set(option::KEEPINTVL, 5)).unwrap();
        let k = with_option(&k, &set(option::KEEPCNT, 3)).unwrap();
        assert_eq!((k.idle_s, k.interval_s, k.count), (30.0, 5.0, 3));
        assert_eq!(k.count_source, Source::Socket);
        assert_eq!(k.detection_s, 45.0);
        assert!(!with_option(&k, &set(option::KEEPALIVE, 0)).unwrap().enabled);
        // EINVAL: nothing changes.
        assert_eq!(with_option(&k, &set(option::KEEPIDLE, 0)), None);
        assert_eq!(with_option(&k, &set(option::KEEPCNT, 128)), None);
        let short = OptionEvent {
            optlen: 2,
            ..set(option::KEEPALIVE, 1)
        };
        assert_eq!(with_option(&off, &short), None);
    }
}
