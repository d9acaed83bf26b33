//! How one kernel event changes the socket table, and the record it
//! becomes: names, addresses in `ss` notation, times in seconds, keepalive
//! settings resolved against the namespace sysctls, the owner from the
//! table, and the cause of a connection's death.

use keepalive_api::{Cause, Owner, Record, RecordKind, TcpState, Trigger};
use keepalive_common::{Event, EventKind, flag};

use super::{
    Opened, SocketTable,
    closing::{fill_reset_sent, record_close},
    dying::{fill_dying, fill_reset, fill_timings, new_idle_stall, unanswered_s},
};
use crate::{
    host::owners,
    model::{
        addr,
        clock::{Clock, ms},
        death::{self, ETIMEDOUT},
        keepalive, reset,
    },
};

/// The record kind an event becomes.
fn record_kind(kind: EventKind, ev: &Event, cause: Cause) -> RecordKind {
    match kind {
        EventKind::TimerFired => RecordKind::KeepaliveTimer,
        EventKind::ProbeSent => RecordKind::ProbeSent,
        EventKind::WireProbe => RecordKind::WireProbe,
        EventKind::ProbeAck => RecordKind::ProbeAck,
        EventKind::SocketError => match (ev.err, cause) {
            (ETIMEDOUT, Cause::Keepalive) => RecordKind::KeepaliveTimeout,
            (ETIMEDOUT, _) => RecordKind::ConnectionTimeout,
            _ => RecordKind::SocketError,
        },
        EventKind::StateChange => match (
            TcpState::from_kernel(ev.old_state),
            TcpState::from_kernel(ev.tuple.state),
        ) {
            (_, TcpState::Close) => RecordKind::SocketClosed,
            (TcpState::Established, TcpState::CloseWait) => RecordKind::PeerClose,
            _ => RecordKind::StateChange,
        },
        EventKind::ConnectionReset => RecordKind::ConnectionReset,
        EventKind::Retransmitting => RecordKind::IdleBlackhole,
        EventKind::ResetSent => RecordKind::ResetSent,
    }
}

/// The connecting task, from a state change in its context.
fn owner_of(ev: &Event) -> Owner {
    let end = ev
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(ev.comm.len());
    Owner {
        pid: ev.pid,
        comm: String::from_utf8_lossy(&ev.comm[..end]).into_owned(),
        cgroup_id: ev.cgroup_id,
        ..Owner::default()
    }
}

/// Builds the record for `ev`, updating `table` (tuples, owners, closes);
/// `uid`: the socket's owner, where the ring record carried it.
pub fn to_record(
    ev: &Event,
    uid: Option<u32>,
    table: &mut SocketTable,
    clock: &Clock,
) -> Option<Record> {
    let kind = EventKind::from_u32(ev.head.kind)?;
    if kind == EventKind::Retransmitting && !new_idle_stall(ev, table, clock) {
        // A stall that followed no idle gap, or one already reported.
        return None;
    }
    let state = TcpState::from_kernel(ev.tuple.state);
    let old_state = TcpState::from_kernel(ev.old_state);
    let cause = death::cause(ev.timer, state, old_state, ev.user_timeout_ms);
    let cookie = ev.head.cookie;
    let mut r = Record::new(
        record_kind(kind, ev, cause),
        clock.wall_seconds(ev.head.ts_ns),
        cookie,
    );
    let has_tuple = ev.flags & flag::HAS_TUPLE != 0;
    let carries_tuple = has_tuple || kind == EventKind::WireProbe;
    if carries_tuple || (kind == EventKind::ProbeAck && ev.tuple.family != 0) {
        let (local, remote) = addr::endpoints(&ev.tuple);
        r.local = Some(local);
        r.remote = Some(remote);
    }
    if has_tuple {
        r.netns = Some(ev.tuple.netns);
        r.state = Some(state);
        // A closed socket has released its local port (reads 0): keep the
        // tuple the table knew.
        if ev.tuple.sport != 0 {
            table.set_tuple(cookie, &ev.tuple, uid);
        }
    }
    fill(&mut r, kind, ev, cause, table, clock);
    remember(kind, ev, &r, table);
    if let Some(known) = table.get(cookie) {
        if kind == EventKind::ProbeAck && ev.tuple.family == 0 {
            r.local = known.local;
            r.remote = known.remote;
        }
        if has_tuple && ev.tuple.sport == 0 {
            r.local = known.local.or(r.local);
            r.remote = known.remote.or(r.remote);
        }
    }
    if r.event == RecordKind::SocketClosed {
        table.close(cookie);
    }
    Some(r)
}

/// The owner the table recorded for the record's socket, copied into it:
/// only for records that go out (printed, or to `/events`), since counting
/// reads the owner from the table and the copies are most of a record's
/// allocations. Timer and softirq context has no meaningful current task.
pub fn add_owner(r: &mut Record, table: &SocketTable) {
    let Some(owner) = table.get(r.cookie).and_then(|e| e.owner.as_deref()) else {
        return;
    };
    r.pid = Some(owner.pid);
    r.comm = Some(owner.comm.clone());
    r.cgroup_id = Some(owner.cgroup_id).filter(|id| *id != 0);
    r.container_id = owner.container_id.clone();
    r.pod_uid = owner.pod_uid.clone();
    r.service = owner.service.clone();
}

/// The fields of each kind.
fn fill(
    r: &mut Record,
    kind: EventKind,
    ev: &Event,
    cause: Cause,
    table: &mut SocketTable,
    clock: &Clock,
) {
    let keepalive_on = ev.flags & flag::KEEPALIVE_ON != 0;
    let settings = || Some(keepalive::effective(&ev.settings, keepalive_on, clock));
    match kind {
        EventKind::TimerFired => {
            r.keepalive = settings();
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.idle_s = Some(clock.seconds(ev.idle_jiffies));
        }
        EventKind::ProbeSent => {
            r.keepalive = settings();
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
            r.seq = Some(ev.seq);
            r.idle_s = Some(clock.seconds(ev.idle_jiffies));
        }
        EventKind::WireProbe => {
            r.seq = Some(ev.seq);
            r.ifindex = Some(ev.ifindex);
            r.keepalive_probe = Some(ev.flags & flag::IN_KEEPALIVE_TIMER != 0);
        }
        EventKind::ProbeAck => {
            r.seq = Some(ev.seq);
            r.rtt_us = Some(ev.rtt_ns as f64 / 1e3);
            r.acks = Some(ev.acks_total);
            r.ifindex = Some(ev.ifindex);
            // The idle gap the answered probe proves the path survived.
            r.idle_s = table.get(ev.head.cookie).and_then(|e| e.probe_idle_s);
        }
        EventKind::SocketError => {
            // What bounded the retransmissions that failed.
            r.tcp_retries2 = Some(ev.retries2);
            r.tcp_syn_retries = Some(ev.syn_retries);
            r.errno = Some(ev.err);
            r.error = Some(death::errno_name(ev.err));
            r.cause = Some(cause);
            r.keepalive = settings();
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
            r.retransmits = Some(ev.retransmits);
            r.user_timeout_ms = Some(ev.user_timeout_ms);
            fill_timings(r, ev, cause, table, clock);
            if ev.old_state != 0 {
                r.old_state = Some(TcpState::from_kernel(ev.old_state));
            }
        }
        EventKind::StateChange => {
            let (old, new) = (
                TcpState::from_kernel(ev.old_state),
                TcpState::from_kernel(ev.tuple.state),
            );
            r.old_state = Some(old);
            if new == TcpState::SynSent {
                record_owner(ev, table);
                table.update(ev.head.cookie, |e| e.opened = Opened::Active);
            } else if new == TcpState::Listen {
                // listen() runs in the owner's context too.
                record_owner(ev, table);
                table.listen(ev.head.cookie, ev.tuple.netns, ev.tuple.sport);
            } else if old == TcpState::SynRecv && new == TcpState::Established {
                table.update(ev.head.cookie, |e| e.opened = Opened::Passive);
                table.inherit_listener_owner(ev.head.cookie, ev.tuple.netns, ev.tuple.sport);
            } else if old == TcpState::Established && new == TcpState::FinWait1 {
                // close() or shutdown() runs in the owner's context: a
                // server's accepted socket is named here if no inventory
                // did before.
                if table.get(ev.head.cookie).is_none_or(|e| e.owner.is_none()) {
                    record_owner(ev, table);
                }
            }
            if old == TcpState::Established {
                record_close(r, ev, new, table, clock);
            }
            // What the connection starts with (`net_time`, a sysctl of at
            // least 1, is 0 where the kernel did not read them).
            if new == TcpState::Established && ev.settings.net_time != 0 {
                r.keepalive = settings();
            }
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
        }
        EventKind::ResetSent => fill_reset_sent(r, ev, table),
        EventKind::ConnectionReset => {
            fill_dying(r, ev, clock);
            r.keepalive = settings();
            let errno = reset::reset_errno(TcpState::from_kernel(ev.tuple.state));
            r.errno = Some(errno);
            r.error = Some(death::errno_name(errno));
            fill_reset(r, ev, table, clock);
        }
        EventKind::Retransmitting => {
            fill_dying(r, ev, clock);
            r.keepalive = settings();
            let idle = clock.seconds(ev.idle_jiffies);
            let unanswered = unanswered_s(ev, clock);
            r.unanswered_s = unanswered.map(ms);
            r.idle_before_s = unanswered.map(|u| ms(idle - u));
            r.trigger = Some(Trigger::Write);
        }
    }
}

/// connect() runs in the owner's context: the only reliable moment to
/// learn who owns an outgoing connection.
fn record_owner(ev: &Event, table: &mut SocketTable) {
    let owner = owner_of(ev);
    // A process opening thousands of connections is looked up in /proc
    // once: same pid, comm and cgroup, same owner.
    if let Some(known) = table.known_owner(&owner) {
        table.set_shared_owner(ev.head.cookie, known);
        return;
    }
    let mut owner = owner;
    // The connecting process is alive now: its cgroup names the
    // container, pod or service, for every later event.
    owners::read_cgroup(&mut owner);
    table.set_owner(ev.head.cookie, owner);
}

/// What the table keeps from a record for the socket's later ones.
fn remember(kind: EventKind, ev: &Event, r: &Record, table: &mut SocketTable) {
    table.update(ev.head.cookie, |e| match kind {
        EventKind::TimerFired | EventKind::ProbeSent => {
            if kind == EventKind::ProbeSent && ev.probes_out == 1 {
                e.first_unanswered_probe_ns = Some(ev.head.ts_ns);
            }
            e.keepalive = r.keepalive.clone();
            e.probes_out = ev.probes_out;
            e.probes = e.probes.max(ev.probes_total.into());
            if kind == EventKind::ProbeSent {
                e.probe_idle_s = r.idle_s;
            }
        }
        EventKind::ProbeAck => {
            e.probe_idle_s = None;
            e.acks = e.acks.max(ev.acks_total.into());
            e.probes_out = 0;
            e.first_unanswered_probe_ns = None;
            e.last_rtt_us = r.rtt_us;
        }
        EventKind::StateChange => {
            if r.keepalive.is_some() {
                e.keepalive = r.keepalive.clone();
            }
        }
        EventKind::WireProbe
        | EventKind::SocketError
        | EventKind::ConnectionReset
        | EventKind::Retransmitting
        | EventKind::ResetSent => {}
    });
}

#[cfg(test)]
mod tests {
    use keepalive_api::Source;

    use super::*;
    use crate::bpf::ring::{ack_bytes, decode};

    /// An event of socket 9, 192.0.2.1:1000 -> 192.0.2.2:2000, ESTABLISHED.
    fn socket_event(kind: EventKind, flags: u8) -> Event {
        let mut ev = Event::zeroed();
        ev.head.kind = kind as u32;
        ev.head.cookie = 9;
        ev.flags = flags;
        ev.tuple.family = 2;
        ev.tuple.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        ev.tuple.daddr[..4].copy_from_slice(&[192, 0, 2, 2]);
        ev.tuple.sport = 1000;
        ev.tuple.dport = 2000;
        ev.tuple.state = 1;
        ev
    }

    /// A compact ACK record becomes an ACK whose tuple comes from the
    /// socket the table knows.
    #[test]
    fn compact_ack_takes_its_tuple_from_the_table() {
        let clock = Clock::new(250);
        let mut table = SocketTable::new(10);
        let mut sent = socket_event(EventKind::ProbeSent, flag::KEEPALIVE_ON | flag::HAS_TUPLE);
        sent.settings.sock_time = 250;
        let r = to_record(&sent, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::ProbeSent);
        assert_eq!(r.keepalive.unwrap().idle_source, Source::Socket);
        let r = to_record(&decode(&ack_bytes(9)).unwrap(), None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::ProbeAck);
        assert_eq!((r.rtt_us, r.seq), (Some(81.0), Some(41)));
        assert_eq!(r.local.unwrap().to_string(), "192.0.2.1:1000");
        assert_eq!(r.remote.unwrap().to_string(), "192.0.2.2:2000");
    }

    /// Counting needs no owner in the record; a record that goes out gets
    /// the one the table recorded, also after its socket closed.
    #[test]
    fn the_owner_is_copied_only_when_asked() {
        let clock = Clock::new(250);
        let mut table = SocketTable::new(10);
        let sent = socket_event(EventKind::ProbeSent, flag::KEEPALIVE_ON | flag::HAS_TUPLE);
        to_record(&sent, None, &mut table, &clock).unwrap();
        table.set_owner(
            9,
            Owner {
                pid: 77,
                comm: "redis-server".into(),
                container_id: Some("c0ffee".into()),
                ..Owner::default()
            },
        );
        let mut r = to_record(&sent, None, &mut table, &clock).unwrap();
        assert_eq!((r.pid, r.comm.as_deref()), (None, None));
        add_owner(&mut r, &table);
        assert_eq!((r.pid, r.comm.as_deref()), (Some(77), Some("redis-server")));
        assert_eq!(r.container_id.as_deref(), Some("c0ffee"));
        table.close(9);
        let mut closed = to_record(&sent, None, &mut table, &clock).unwrap();
        add_owner(&mut closed, &table);
        assert_eq!(closed.pid, Some(77));
    }

    /// A state change names its states as `ss` does, and a close to CLOSE
    /// is `socket_closed`, keeping the socket findable for its error.
    #[test]
    fn state_changes_and_closes() {
        let clock = Clock::new(250);
        let mut table = SocketTable::new(10);
        let mut ev = socket_event(EventKind::StateChange, flag::HAS_TUPLE);
        ev.old_state = 2;
        ev.tuple.netns = 42;
        let r = to_record(&ev, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::StateChange);
        assert_eq!((r.netns, r.state), (Some(42), Some(TcpState::Established)));
        assert_eq!(r.old_state, Some(TcpState::SynSent));
        ev.old_state = 1;
        ev.tuple.state = 7;
        let r = to_record(&ev, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::SocketClosed);
        assert!(!table.is_live(9) && table.get(9).is_some());
    }

    #[test]
    fn a_keepalive_etimedout_is_a_keepalive_timeout() {
        let clock = Clock::new(250);
        let mut table = SocketTable::new(10);
        let mut ev = socket_event(EventKind::SocketError, flag::HAS_TUPLE);
        ev.err = ETIMEDOUT;
        ev.timer = keepalive_common::TIMER_KEEPALIVE;
        let r = to_record(&ev, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::KeepaliveTimeout);
        assert_eq!(r.cause, Some(Cause::Keepalive));
        assert_eq!(r.error.as_deref(), Some("ETIMEDOUT"));
        ev.timer = keepalive_common::TIMER_WRITE;
        let r = to_record(&ev, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::ConnectionTimeout);
        ev.err = 104;
        let r = to_record(&ev, None, &mut table, &clock).unwrap();
        assert_eq!(r.event, RecordKind::SocketError);
    }
}
