//! What the record of a dying or stalling connection says: how long it
//! idled and went unanswered, whether an RST answered our first packet
//! after an idle gap, and which stall reports are new. The kernel gives
//! the timestamps; the judgement is `model::reset`'s and `model::death`'s.

use keepalive_api::{Cause, Record, TcpState};
use keepalive_common::Event;

use super::SocketTable;
use crate::model::{
    clock::{Clock, ms},
    death, reset,
};

/// What a reset or a stall report carries of the socket.
pub(super) fn fill_dying(r: &mut Record, ev: &Event, clock: &Clock) {
    r.probes_out = Some(ev.probes_out);
    r.probes = Some(ev.probes_total);
    r.acks = Some(ev.acks_total);
    r.retransmits = Some(ev.retransmits);
    r.idle_s = Some(clock.seconds(ev.idle_jiffies));
    r.since_send_s = Some(clock.seconds(ev.since_send_jiffies));
    r.rtt_us = (ev.srtt_us != 0).then_some(f64::from(ev.srtt_us));
    r.tcp_retries2 = Some(ev.retries2);
}

/// Seconds since the oldest unacknowledged data was first sent: from the
/// flight's start (`first_tx_mstamp`), else from `retrans_stamp` (which the
/// first RTO sets after resending: short of the truth by the loss probe
/// and the first RTO).
pub(super) fn unanswered_s(ev: &Event, clock: &Clock) -> Option<f64> {
    // One jiffy of slack between the two clocks.
    let max = clock.seconds(ev.idle_jiffies) + clock.seconds(1);
    death::since_first_tx(ev.first_tx_us, ev.head.ts_ns, max)
        .or_else(|| death::since_retrans_stamp(ev.retrans_stamp, ev.head.ts_ns, max))
}

/// A reset's class: did it answer our first packet after an idle gap?
pub(super) fn fill_reset(r: &mut Record, ev: &Event, table: &SocketTable, clock: &Clock) {
    // The probe's send as TC saw it, else as the timer reported it.
    let since_probe_s = (ev.rtt_ns != 0)
        .then(|| ev.rtt_ns as f64 / 1e9)
        .or_else(|| {
            table
                .get(ev.head.cookie)
                .filter(|_| ev.probes_out > 0)
                .and_then(|e| e.first_unanswered_probe_ns)
                .filter(|t| *t <= ev.head.ts_ns)
                .map(|t| (ev.head.ts_ns - t) as f64 / 1e9)
        });
    let peer_closed = table
        .get(ev.head.cookie)
        .and_then(|e| e.peer_closed)
        .filter(|fin| fin.at_ns <= ev.head.ts_ns)
        .map(|fin| reset::PeerClosed {
            since_s: (ev.head.ts_ns - fin.at_ns) as f64 / 1e9,
            idle_before_s: fin.idle_s,
        });
    let facts = reset::ResetFacts {
        state: TcpState::from_kernel(ev.tuple.state),
        idle_s: clock.seconds(ev.idle_jiffies),
        since_send_s: clock.seconds(ev.since_send_jiffies),
        since_probe_s,
        awaiting_answer: ev.probes_out > 0 || ev.retransmits > 0,
        peer_closed,
        srtt_s: f64::from(ev.srtt_us) / 1e6,
    };
    let c = reset::classify(&facts, table.idle_gap_min_s);
    r.class = Some(c.class);
    r.trigger = c.trigger;
    r.idle_before_s = c.gap_s.map(ms);
    r.closed_for_s = c.closed_for_s.map(ms);
}

/// A stall report is kept once per stall (the kernel reports each RTO
/// from the second on), and only after an idle gap.
pub(super) fn new_idle_stall(ev: &Event, table: &mut SocketTable, clock: &Clock) -> bool {
    let Some(unanswered) = unanswered_s(ev, clock) else {
        return false;
    };
    let state = TcpState::from_kernel(ev.tuple.state);
    let idle = clock.seconds(ev.idle_jiffies);
    if reset::stall_gap(state, idle, unanswered, table.idle_gap_min_s).is_none() {
        return false;
    }
    let cookie = ev.head.cookie;
    if table.get(cookie).and_then(|e| e.stall_stamp) == Some(ev.retrans_stamp) {
        return false;
    }
    table.update(cookie, |e| e.stall_stamp = Some(ev.retrans_stamp));
    true
}

/// How long a dead connection idled, and how long it went unanswered:
/// from the first unanswered probe (as the agent saw it) for keepalive,
/// from `tp->retrans_stamp` for the other timers.
pub(super) fn fill_timings(
    r: &mut Record,
    ev: &Event,
    cause: Cause,
    table: &SocketTable,
    clock: &Clock,
) {
    if cause == Cause::Syn {
        // Nothing was ever received: the whole life was unanswered
        // (bounded by what tcp_syn_retries allows, ~2 h at most).
        let s = death::since_retrans_stamp(ev.retrans_stamp, ev.head.ts_ns, 2.0 * 3600.0).map(ms);
        r.idle_s = s;
        r.unanswered_s = s;
        r.idle_before_s = s.map(|_| 0.0);
        return;
    }
    let idle = clock.seconds(ev.idle_jiffies);
    let unanswered = if ev.timer == keepalive_common::TIMER_KEEPALIVE {
        table
            .get(ev.head.cookie)
            .and_then(|e| e.first_unanswered_probe_ns)
            .filter(|t| *t <= ev.head.ts_ns)
            .map(|t| (ev.head.ts_ns - t) as f64 / 1e9)
    } else {
        unanswered_s(ev, clock)
    };
    let s = unanswered.map(ms);
    r.idle_s = Some(idle);
    r.unanswered_s = s;
    r.idle_before_s = s.map(|s| ms((idle - s).max(0.0)));
}
