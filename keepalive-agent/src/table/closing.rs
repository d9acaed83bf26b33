//! Closes of established connections and the RSTs that follow them: the
//! peer's FIN (ESTABLISHED to CLOSE-WAIT, in `tcp_fin`) and our
//! application's (ESTABLISHED to FIN-WAIT-1, in `tcp_close` or
//! `tcp_shutdown`), each with the idle gap before it; and what an RST the
//! kernel sent on one of our sockets was (`tcp_send_reset`).

use keepalive_api::{Record, ResetClass, TcpState};
use keepalive_common::Event;

use super::{SocketTable, entry::Closing};
use crate::model::clock::{Clock, ms};

/// A state change out of ESTABLISHED: the peer's FIN or our close is
/// remembered with the idle gap before it, and the record says it.
pub(super) fn record_close(
    r: &mut Record,
    ev: &Event,
    new: TcpState,
    table: &mut SocketTable,
    clock: &Clock,
) {
    let since_recv = clock.seconds(ev.idle_jiffies);
    let since_send = clock.seconds(ev.since_send_jiffies);
    let at_ns = ev.head.ts_ns;
    match new {
        TcpState::CloseWait => {
            // The peer's idle close counts from its last data to us.
            let closing = Closing {
                at_ns,
                idle_s: since_recv,
            };
            r.idle_before_s = Some(ms(since_recv));
            r.since_send_s = Some(ms(since_send));
            table.update(ev.head.cookie, |e| e.peer_closed = Some(closing));
        }
        TcpState::FinWait1 => {
            // A server's idle timer restarts with each request and reply.
            let idle = since_recv.min(since_send);
            let closing = Closing {
                at_ns,
                idle_s: idle,
            };
            r.idle_before_s = Some(ms(idle));
            r.since_send_s = Some(ms(since_send));
            table.update(ev.head.cookie, |e| e.closed_here = Some(closing));
        }
        _ => {}
    }
}

/// An RST the kernel sent on one of its sockets: on a connection our
/// application closed first (FIN-WAIT, TIME-WAIT: only the first closer
/// gets there), it answers late data; on a live one, it is our abort.
pub(super) fn fill_reset_sent(r: &mut Record, ev: &Event, table: &SocketTable) {
    let state = TcpState::from_kernel(ev.tuple.state);
    let closed_here = table.get(ev.head.cookie).and_then(|e| e.closed_here);
    let class = match state {
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::TimeWait | TcpState::Closing => {
            ResetClass::DataAfterClose
        }
        // tcp_rcv_state_process's abort on data (TCPAbortOnData) has
        // closed the socket already (tcp_done) when the RST goes out.
        TcpState::Close if closed_here.is_some() => ResetClass::DataAfterClose,
        TcpState::Established | TcpState::CloseWait => ResetClass::LocalAbort,
        _ => ResetClass::Other,
    };
    r.class = Some(class);
    if class == ResetClass::DataAfterClose
        && let Some(close) = closed_here.filter(|c| c.at_ns <= ev.head.ts_ns)
    {
        r.idle_before_s = Some(ms(close.idle_s));
        r.closed_for_s = Some(ms((ev.head.ts_ns - close.at_ns) as f64 / 1e9));
    }
}
