//! Writing one event into the ring buffer, in place (no 200-byte copy on
//! the 512-byte BPF stack).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns};
use keepalive_common::{
    AckEvent, Event, EventKind, Head, OPTION_SET_KIND, OptionEvent, StateEvent, counter,
};

use crate::maps::{EVENTS, count};

/// A ring-buffer record: [`Event`], or the compact [`AckEvent`] and
/// [`StateEvent`]; each begins with a [`Head`].
trait Record: Copy + 'static {
    fn head(&mut self) -> &mut Head;
}

impl Record for Event {
    #[inline(always)]
    fn head(&mut self) -> &mut Head {
        &mut self.head
    }
}

impl Record for AckEvent {
    #[inline(always)]
    fn head(&mut self) -> &mut Head {
        &mut self.head
    }
}

impl Record for OptionEvent {
    #[inline(always)]
    fn head(&mut self) -> &mut Head {
        &mut self.head
    }
}

impl Record for StateEvent {
    #[inline(always)]
    fn head(&mut self) -> &mut Head {
        &mut self.head
    }
}

/// Reserves a record, stamps its head, lets `fill` write the rest and
/// submits it; a full ring buffer counts the event as lost (false).
#[inline(always)]
fn write<T: Record>(zero: T, kind: u32, cookie: u64, fill: impl FnOnce(&mut T)) -> bool {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(counter!(events_lost), 1);
        return false;
    };
    let ev = entry.write(zero);
    let head = ev.head();
    head.kind = kind;
    head.cookie = cookie;
    // SAFETY: these helpers take no arguments and only read kernel state.
    unsafe {
        head.cpu = bpf_get_smp_processor_id();
        head.ts_ns = bpf_ktime_get_ns();
        head.jiffies = bpf_jiffies64();
    }
    fill(ev);
    entry.submit(0);
    true
}

#[inline(always)]
pub fn emit(kind: EventKind, cookie: u64, fill: impl FnOnce(&mut Event)) {
    write(Event::zeroed(), kind as u32, cookie, fill);
}

/// A state change as a compact [`StateEvent`]; false when it was lost.
#[inline(always)]
pub fn emit_state(cookie: u64, fill: impl FnOnce(&mut StateEvent)) -> bool {
    write(
        StateEvent::default(),
        EventKind::StateChange as u32,
        cookie,
        fill,
    )
}

/// A probe's ACK as a compact [`AckEvent`].
#[inline(always)]
pub fn emit_ack(cookie: u64, fill: impl FnOnce(&mut AckEvent)) {
    write(
        AckEvent::default(),
        EventKind::ProbeAck as u32,
        cookie,
        fill,
    );
}

/// A keepalive option set on a known socket, as a compact [`OptionEvent`].
#[inline(always)]
pub fn emit_option(cookie: u64, fill: impl FnOnce(&mut OptionEvent)) {
    write(OptionEvent::default(), OPTION_SET_KIND, cookie, fill);
}
