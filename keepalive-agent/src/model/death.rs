//! Why a connection died: the kernel reports only the timer that was
//! running, the socket's state and options and `tp->retrans_stamp`; the
//! cause and the timings are policy, decided here.

use keepalive_api::{Cause, TcpState};
use keepalive_common::{TIMER_KEEPALIVE, TIMER_WRITE};

pub const ETIMEDOUT: u32 = 110;

/// Which timer killed a connection: `timer` is the one running on the CPU
/// when `sk_err` was reported (`TIMER_*`).
pub fn cause(timer: u8, state: TcpState, old_state: TcpState, user_timeout_ms: u32) -> Cause {
    let syn = old_state == TcpState::SynSent || state == TcpState::SynSent;
    match timer {
        TIMER_KEEPALIVE if user_timeout_ms != 0 => Cause::UserTimeout,
        TIMER_KEEPALIVE => Cause::Keepalive,
        TIMER_WRITE if syn => Cause::Syn,
        TIMER_WRITE if user_timeout_ms != 0 => Cause::UserTimeout,
        TIMER_WRITE => Cause::Retransmit,
        _ => Cause::Other,
    }
}

pub fn errno_name(errno: u32) -> String {
    match errno {
        110 => "ETIMEDOUT".into(),
        104 => "ECONNRESET".into(),
        111 => "ECONNREFUSED".into(),
        113 => "EHOSTUNREACH".into(),
        101 => "ENETUNREACH".into(),
        32 => "EPIPE".into(),
        n => format!("errno {n}"),
    }
}

/// Seconds from `tp->retrans_stamp` (the first send of the oldest
/// unacknowledged segment or SYN) to `now_ns`. `retrans_stamp` is in ms,
/// or in µs on routes with usec TCP timestamps: the reading that falls in
/// `0..=max_s` is the one meant; 0 means nothing outstanding.
pub fn since_retrans_stamp(retrans_stamp: u32, now_ns: u64, max_s: f64) -> Option<f64> {
    if retrans_stamp == 0 {
        return None;
    }
    [(1_000_000, 1e3), (1_000, 1e6)]
        .into_iter()
        .map(|(ns_per_unit, units_per_s)| {
            let now = (now_ns / ns_per_unit) as u32;
            now.wrapping_sub(retrans_stamp) as i32 as f64 / units_per_s
        })
        .find(|s| (0.0..=max_s).contains(s))
}

/// Seconds from `tp->first_tx_mstamp` (µs of CLOCK_MONOTONIC: when the
/// outstanding flight's first segment went out, untouched by its
/// retransmissions) to `now_ns`, when it falls in `0..=max_s`.
pub fn since_first_tx(first_tx_us: u64, now_ns: u64, max_s: f64) -> Option<f64> {
    if first_tx_us == 0 {
        return None;
    }
    let s = (now_ns / 1_000) as i128 - first_tx_us as i128;
    Some(s as f64 / 1e6).filter(|s| (0.0..=max_s).contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_time_from_the_flight_start() {
        let now = 5_000_000_000_000;
        assert_eq!(
            since_first_tx(5_000_000_000 - 840_000, now, 9.0),
            Some(0.84)
        );
        assert_eq!(since_first_tx(0, now, 9.0), None);
        // A flight that started before the idle gap is not this one.
        assert_eq!(since_first_tx(1, now, 9.0), None);
    }

    #[test]
    fn unanswered_time_reads_retrans_stamp_in_ms_or_us() {
        let now = 5_000_000_000_000; // 5000 s after boot
        // ms: 6.4 s ago.
        assert_eq!(
            since_retrans_stamp((5_000_000 - 6_400) as u32, now, 7.0),
            Some(6.4)
        );
        // usec TCP timestamps: 6.4 s ago in µs (wrapped to 32 bits).
        let s = since_retrans_stamp((5_000_000_000u64 - 6_400_000) as u32, now, 7.0).unwrap();
        assert!((s - 6.4).abs() < 1e-9, "{s}");
        // Nothing outstanding, or nothing plausible: no figure at all.
        assert_eq!(since_retrans_stamp(0, now, 7.0), None);
        assert_eq!(since_retrans_stamp(1, now, 7.0), None);
    }

    #[test]
    fn causes_follow_the_timer_state_and_options() {
        use TcpState::{Close, Established, SynSent};
        assert_eq!(
            cause(TIMER_KEEPALIVE, Close, Established, 0),
            Cause::Keepalive
        );
        assert_eq!(
            cause(TIMER_KEEPALIVE, Close, Established, 5000),
            Cause::UserTimeout
        );
        assert_eq!(cause(TIMER_WRITE, Close, Established, 0), Cause::Retransmit);
        assert_eq!(
            cause(TIMER_WRITE, Close, Established, 5000),
            Cause::UserTimeout
        );
        assert_eq!(cause(TIMER_WRITE, Close, SynSent, 0), Cause::Syn);
        assert_eq!(cause(TIMER_WRITE, Close, SynSent, 5000), Cause::Syn);
        assert_eq!(cause(0, Close, Established, 0), Cause::Other);
    }
}
