//! What an RST that killed a connection was, and whether a retransmission
//! stall followed an idle gap. The kernel reports the socket's timestamps
//! (`rcv_tstamp`/`icsk_ack.lrcvtime`, `lsndtime`, `retrans_stamp`) and its
//! smoothed RTT; the judgement is here.

use keepalive_api::{ResetClass, TcpState, Trigger};

/// The errno `tcp_reset` gives the application for an RST in `state`.
pub fn reset_errno(state: TcpState) -> u32 {
    match state {
        TcpState::SynSent => 111,  // ECONNREFUSED
        TcpState::CloseWait => 32, // EPIPE
        _ => 104,                  // ECONNRESET
    }
}

/// How long after our packet an RST still answers it: a few round trips
/// (the middlebox that forgot the flow sits nearer than the peer), never
/// less than 200 ms (an RTT sample from before the gap may be stale).
pub fn answer_window_s(srtt_s: f64) -> f64 {
    (4.0 * srtt_s).max(0.2)
}

/// What the kernel and the table know of a socket when an RST arrives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResetFacts {
    /// The state before the RST.
    pub state: TcpState,
    /// Seconds since the socket last received anything.
    pub idle_s: f64,
    /// Seconds since our last data segment.
    pub since_send_s: f64,
    /// Seconds since our first unanswered keepalive probe, if one is out.
    pub since_probe_s: Option<f64>,
    pub srtt_s: f64,
}

/// A classified reset: its class, and for an idle reset what it answered
/// and the idle gap before that packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classified {
    pub class: ResetClass,
    pub trigger: Option<Trigger>,
    pub gap_s: Option<f64>,
}

/// An idle reset is an RST on an established connection that came within
/// [`answer_window_s`] of our first packet (data or probe) after at least
/// `gap_min_s` of silence from the peer; anything else is a peer reset. A
/// socket in CLOSE-WAIT had its peer close first: a reset of our late
/// write there is the peer's, not a middlebox's.
pub fn classify(f: &ResetFacts, gap_min_s: f64) -> Classified {
    let window = answer_window_s(f.srtt_s);
    let peer = Classified {
        class: ResetClass::PeerReset,
        trigger: None,
        gap_s: None,
    };
    if f.state != TcpState::Established {
        return peer;
    }
    // The data write first: an RST answers the newest packet, and a probe
    // is only sent when nothing is in flight.
    let candidates = [
        (Trigger::Write, Some(f.since_send_s)),
        (Trigger::KeepaliveProbe, f.since_probe_s),
    ];
    for (trigger, since) in candidates {
        let Some(since) = since else { continue };
        let gap = f.idle_s - since;
        if since <= window && gap >= gap_min_s {
            return Classified {
                class: ResetClass::IdleReset,
                trigger: Some(trigger),
                gap_s: Some(gap),
            };
        }
    }
    peer
}

/// The idle gap before a stalled retransmission, when it followed one:
/// `unanswered_s` is the time since the oldest unacknowledged segment was
/// first sent (`retrans_stamp`).
pub fn stall_gap(state: TcpState, idle_s: f64, unanswered_s: f64, gap_min_s: f64) -> Option<f64> {
    let gap = idle_s - unanswered_s;
    (state == TcpState::Established && gap >= gap_min_s).then_some(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(idle_s: f64, since_send_s: f64) -> ResetFacts {
        ResetFacts {
            state: TcpState::Established,
            idle_s,
            since_send_s,
            since_probe_s: None,
            srtt_s: 0.001,
        }
    }

    #[test]
    fn an_rst_right_after_the_first_write_after_idle_is_an_idle_reset() {
        let c = classify(&facts(6.002, 0.001), 1.0);
        assert_eq!(c.class, ResetClass::IdleReset);
        assert_eq!(c.trigger, Some(Trigger::Write));
        assert!((c.gap_s.unwrap() - 6.001).abs() < 1e-9);
    }

    #[test]
    fn other_rsts_are_peer_resets() {
        // Active connection: the last write was recent, but no idle gap.
        assert_eq!(
            classify(&facts(0.05, 0.01), 1.0).class,
            ResetClass::PeerReset
        );
        // Idle, but the RST came long after our last write: the peer's own.
        assert_eq!(
            classify(&facts(30.0, 30.0), 1.0).class,
            ResetClass::PeerReset
        );
        // The peer had closed first (CLOSE-WAIT).
        let f = ResetFacts {
            state: TcpState::CloseWait,
            ..facts(6.0, 0.001)
        };
        assert_eq!(classify(&f, 1.0).class, ResetClass::PeerReset);
        assert_eq!(reset_errno(TcpState::CloseWait), 32);
        assert_eq!(reset_errno(TcpState::SynSent), 111);
        assert_eq!(reset_errno(TcpState::Established), 104);
    }

    #[test]
    fn an_rst_answering_a_keepalive_probe_after_idle_is_an_idle_reset() {
        let f = ResetFacts {
            since_probe_s: Some(0.002),
            ..facts(400.0, 400.0)
        };
        let c = classify(&f, 1.0);
        assert_eq!(c.trigger, Some(Trigger::KeepaliveProbe));
        assert!((c.gap_s.unwrap() - 399.998).abs() < 1e-9);
    }

    #[test]
    fn a_stall_counts_only_after_an_idle_gap() {
        assert_eq!(stall_gap(TcpState::Established, 8.6, 0.6, 1.0), Some(8.0));
        assert_eq!(stall_gap(TcpState::Established, 0.7, 0.6, 1.0), None);
    }
}
