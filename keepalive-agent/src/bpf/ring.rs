//! The ring buffer's records as the kernel wrote them: a full [`Event`],
//! or a compact [`AckEvent`] or [`StateEvent`], told apart by kind and
//! length, or an [`OptionEvent`] (no event of the socket's: a change of
//! its settings); each begins with a [`Head`](keepalive_common::Head).

use keepalive_common::{
    ACK_EVENT_SIZE, AckEvent, EVENT_SIZE, Event, EventKind, NO_UID, OPTION_EVENT_SIZE,
    OPTION_SET_KIND, OptionEvent, STATE_EVENT_SIZE, StateEvent, flag,
};

/// Copies a record out of ring-buffer memory, widened to an [`Event`];
/// `None` when it is none of the three.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() >= EVENT_SIZE {
        // SAFETY: Event is plain old data and the length was checked.
        return Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) });
    }
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    let mut ev = Event::zeroed();
    match EventKind::from_u32(kind)? {
        EventKind::ProbeAck if bytes.len() >= ACK_EVENT_SIZE => {
            // SAFETY: AckEvent is plain old data and the length was checked.
            let ack = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AckEvent>()) };
            // The socket's tuple comes from the table (family 0: not carried).
            ev.head = ack.head;
            ev.rtt_ns = ack.rtt_ns;
            ev.seq = ack.seq;
            ev.acks_total = ack.acks_total;
            ev.ifindex = ack.ifindex;
        }
        EventKind::StateChange if bytes.len() >= STATE_EVENT_SIZE => {
            // SAFETY: StateEvent is plain old data and the length was checked.
            let st = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<StateEvent>()) };
            ev.head = st.head;
            ev.cgroup_id = st.cgroup_id;
            ev.tuple = st.tuple;
            ev.pid = st.pid;
            ev.comm = st.comm;
            ev.probes_total = st.probes_total;
            ev.acks_total = st.acks_total;
            ev.old_state = st.old_state;
            ev.flags = st.flags;
            ev.idle_jiffies = st.idle_jiffies;
            ev.since_send_jiffies = st.since_send_jiffies;
            ev.settings = st.settings;
            ev.user_timeout_ms = st.user_timeout_ms;
        }
        _ => return None,
    }
    Some(ev)
}

/// A keepalive option set on a known socket, when the record is one.
pub fn decode_option(bytes: &[u8]) -> Option<OptionEvent> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    if kind != OPTION_SET_KIND || bytes.len() < OPTION_EVENT_SIZE {
        return None;
    }
    // SAFETY: OptionEvent is plain old data and the length was checked.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<OptionEvent>()) })
}

/// The socket's owner uid, where the record carries one (a state change).
pub fn owner_uid(bytes: &[u8]) -> Option<u32> {
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    let compact = (STATE_EVENT_SIZE..EVENT_SIZE).contains(&bytes.len());
    if kind != EventKind::StateChange as u32 || !compact {
        return None;
    }
    let at = std::mem::offset_of!(StateEvent, uid);
    let uid = u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
    (uid != NO_UID).then_some(uid)
}

/// The events one ring-buffer record stands for, in order: a `ProbeSent`
/// whose probe TC saw leave also stands for that `WireProbe` (folded in the
/// kernel, so that a probe costs the ring buffer one event, not two).
pub fn unfold(ev: Event) -> impl Iterator<Item = Event> {
    let folded = ev.head.kind == EventKind::ProbeSent as u32 && ev.flags & flag::WIRE_SEEN != 0;
    let mut wire = ev;
    wire.head.kind = EventKind::WireProbe as u32;
    wire.flags = flag::IN_KEEPALIVE_TIMER;
    folded
        .then_some(wire)
        .into_iter()
        .chain(std::iter::once(ev))
}

/// The bytes of a compact ACK of socket `cookie` (seq 41, 81 µs), as the
/// kernel writes them; for tests of what reads them.
#[cfg(test)]
pub fn ack_bytes(cookie: u64) -> [u8; ACK_EVENT_SIZE] {
    let ack = AckEvent {
        head: keepalive_common::Head {
            kind: EventKind::ProbeAck as u32,
            cookie,
            ..Default::default()
        },
        rtt_ns: 81_000,
        seq: 41,
        acks_total: 1,
        ifindex: 3,
        ..AckEvent::default()
    };
    // SAFETY: AckEvent is plain old data.
    unsafe { std::mem::transmute(ack) }
}

#[cfg(test)]
mod tests {
    use keepalive_common::Head;

    use super::*;

    #[test]
    fn probe_seen_on_the_wire_unfolds_into_wire_probe_then_probe_sent() {
        let mut sent = Event::zeroed();
        sent.head.kind = EventKind::ProbeSent as u32;
        sent.flags = flag::KEEPALIVE_ON | flag::WIRE_SEEN;
        sent.ifindex = 7;
        let kinds: Vec<(u32, u8, u32)> = unfold(sent)
            .map(|e| (e.head.kind, e.flags, e.ifindex))
            .collect();
        assert_eq!(
            kinds,
            [
                (EventKind::WireProbe as u32, flag::IN_KEEPALIVE_TIMER, 7),
                (EventKind::ProbeSent as u32, sent.flags, 7)
            ]
        );
        sent.flags = flag::KEEPALIVE_ON;
        assert_eq!(
            unfold(sent).count(),
            1,
            "not seen on the wire: no wire_probe"
        );
    }

    #[test]
    fn compact_records_decode_whole_and_short_ones_are_refused() {
        let bytes = ack_bytes(9);
        let ev = decode(&bytes).expect("a compact ACK decodes");
        assert_eq!((ev.head.cookie, ev.rtt_ns, ev.seq), (9, 81_000, 41));
        assert!(decode(&bytes[..40]).is_none(), "short records are refused");
        let mut st = StateEvent {
            head: Head {
                kind: EventKind::StateChange as u32,
                ts_ns: 5,
                cookie: 9,
                ..Head::default()
            },
            cgroup_id: 77,
            pid: 1234,
            old_state: 2,
            flags: flag::HAS_TUPLE,
            uid: 65534,
            ..StateEvent::default()
        };
        st.tuple.netns = 42;
        st.tuple.sport = 1000;
        st.comm[..4].copy_from_slice(b"curl");
        // SAFETY: StateEvent is plain old data.
        let bytes: [u8; STATE_EVENT_SIZE] = unsafe { std::mem::transmute(st) };
        let ev = decode(&bytes).expect("a compact state change decodes");
        assert_eq!(owner_uid(&bytes), Some(65534));
        assert_eq!(owner_uid(&ack_bytes(9)), None, "an ACK carries no owner");
        st.uid = NO_UID;
        // SAFETY: StateEvent is plain old data.
        let unread: [u8; STATE_EVENT_SIZE] = unsafe { std::mem::transmute(st) };
        assert_eq!(owner_uid(&unread), None);
        assert_eq!((ev.head.ts_ns, ev.pid, ev.cgroup_id), (5, 1234, 77));
        assert_eq!((ev.tuple, ev.comm, ev.old_state), (st.tuple, st.comm, 2));
        assert!(decode(&bytes[..100]).is_none(), "short records are refused");
    }
}
