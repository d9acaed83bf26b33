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
    /// Anything of ours unanswered: probes out, or retransmissions.
    pub awaiting_answer: bool,
    /// The peer's FIN, if the agent saw it: seconds since it, and the idle
    /// gap before it.
    pub peer_closed: Option<PeerClosed>,
    pub srtt_s: f64,
}

/// The peer's FIN as seen from the RST.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerClosed {
    pub since_s: f64,
    pub idle_before_s: f64,
}

/// A classified reset: its class, and for an idle reset what it answered
/// and the idle gap before that packet; for a stale reuse how long the
/// connection had been closed by the peer when we wrote.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classified {
    pub class: ResetClass,
    pub trigger: Option<Trigger>,
    pub gap_s: Option<f64>,
    pub closed_for_s: Option<f64>,
}

impl Classified {
    fn class(class: ResetClass) -> Self {
        Classified {
            class,
            trigger: None,
            gap_s: None,
            closed_for_s: None,
        }
    }
}

/// The RST's class, from the socket's state and timestamps:
/// - established, within [`answer_window_s`] of our first packet (data or
///   probe) after at least `gap_min_s` of silence from the peer: an idle
///   reset (a middlebox forgot the flow);
/// - established, nothing of ours unanswered, after such a silence: an
///   idle abort (the peer, or a load balancer, aborts idle connections);
/// - CLOSE-WAIT (the peer had closed), within the window of our write: a
///   stale reuse (the tcp_reset in CLOSE-WAIT gives the writer EPIPE);
/// - anything else: a peer reset.
pub fn classify(f: &ResetFacts, gap_min_s: f64) -> Classified {
    let window = answer_window_s(f.srtt_s);
    match f.state {
        TcpState::CloseWait if f.since_send_s <= window => stale_reuse(f),
        TcpState::Established => idle_reset(f, window, gap_min_s)
            .or_else(|| idle_abort(f, window, gap_min_s))
            .unwrap_or(Classified::class(ResetClass::PeerReset)),
        _ => Classified::class(ResetClass::PeerReset),
    }
}

fn idle_reset(f: &ResetFacts, window: f64, gap_min_s: f64) -> Option<Classified> {
    // The data write first: an RST answers the newest packet, and a probe
    // is only sent when nothing is in flight.
    let candidates = [
        (Trigger::Write, Some(f.since_send_s)),
        (Trigger::KeepaliveProbe, f.since_probe_s),
    ];
    candidates.into_iter().find_map(|(trigger, since)| {
        let since = since?;
        let gap = f.idle_s - since;
        (since <= window && gap >= gap_min_s).then_some(Classified {
            trigger: Some(trigger),
            gap_s: Some(gap),
            ..Classified::class(ResetClass::IdleReset)
        })
    })
}

fn idle_abort(f: &ResetFacts, window: f64, gap_min_s: f64) -> Option<Classified> {
    let unprompted = !f.awaiting_answer && f.since_send_s > window;
    (unprompted && f.idle_s >= gap_min_s).then_some(Classified {
        gap_s: Some(f.idle_s),
        ..Classified::class(ResetClass::IdleAbort)
    })
}

fn stale_reuse(f: &ResetFacts) -> Classified {
    let fin = f.peer_closed;
    Classified {
        gap_s: fin.map(|p| p.idle_before_s),
        // Our write came `since_send_s` before the RST, the FIN `since_s`.
        closed_for_s: fin.map(|p| (p.since_s - f.since_send_s).max(0.0)),
        ..Classified::class(ResetClass::StaleReuse)
    }
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
            awaiting_answer: false,
            peer_closed: None,
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
        // Idle, but our probe or data is out unanswered and the RST did
        // not come within the window of it: not unprompted.
        let f = ResetFacts {
            awaiting_answer: true,
            ..facts(30.0, 30.0)
        };
        assert_eq!(classify(&f, 1.0).class, ResetClass::PeerReset);
        // The peer had closed first (CLOSE-WAIT), and we wrote nothing
        // since: its RST is its own.
        let f = ResetFacts {
            state: TcpState::CloseWait,
            ..facts(6.0, 5.0)
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
    fn an_rst_of_our_write_after_the_peers_fin_is_a_stale_reuse() {
        // FIN 3.0 s before the RST, after 2.1 s of silence; our write 2 ms
        // before the RST.
        let f = ResetFacts {
            state: TcpState::CloseWait,
            peer_closed: Some(PeerClosed {
                since_s: 3.0,
                idle_before_s: 2.1,
            }),
            ..facts(3.0, 0.002)
        };
        let c = classify(&f, 1.0);
        assert_eq!(c.class, ResetClass::StaleReuse);
        assert_eq!(c.gap_s, Some(2.1));
        assert!((c.closed_for_s.unwrap() - 2.998).abs() < 1e-9);
        // A FIN the agent did not see: still a stale reuse, times unknown.
        let c = classify(
            &ResetFacts {
                peer_closed: None,
                ..f
            },
            1.0,
        );
        assert_eq!(
            (c.class, c.gap_s, c.closed_for_s),
            (ResetClass::StaleReuse, None, None)
        );
    }

    #[test]
    fn an_unprompted_rst_after_silence_is_an_idle_abort() {
        let c = classify(&facts(2.05, 2.05), 1.0);
        assert_eq!(c.class, ResetClass::IdleAbort);
        assert_eq!((c.gap_s, c.trigger), (Some(2.05), None));
        // Too short a silence: a peer reset.
        assert_eq!(classify(&facts(0.5, 0.5), 1.0).class, ResetClass::PeerReset);
    }

    #[test]
    fn a_stall_counts_only_after_an_idle_gap() {
        assert_eq!(stall_gap(TcpState::Established, 8.6, 0.6, 1.0), Some(8.0));
        assert_eq!(stall_gap(TcpState::Established, 0.7, 0.6, 1.0), None);
    }
}
