//! Writing one event into the ring buffer, in place (no 184-byte copy on
//! the 512-byte BPF stack).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_ns};
use keepalive_common::{AckEvent, Event, EventKind, counter};

use crate::maps::{EVENTS, count};

#[inline(always)]
pub fn emit(kind: EventKind, cookie: u64, fill: impl FnOnce(&mut Event)) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(counter::EVENTS_LOST, 1);
        return;
    };
    let ev = entry.write(Event::zeroed());
    ev.kind = kind as u32;
    ev.cookie = cookie;
    unsafe {
        ev.cpu = bpf_get_smp_processor_id();
        ev.ts_ns = bpf_ktime_get_ns();
        ev.jiffies = bpf_jiffies64();
    }
    fill(ev);
    entry.submit(0);
}

/// A probe's ACK as a compact [`AckEvent`].
#[inline(always)]
pub fn emit_ack(cookie: u64, fill: impl FnOnce(&mut AckEvent)) {
    let Some(mut entry) = EVENTS.reserve::<AckEvent>(0) else {
        count(counter::EVENTS_LOST, 1);
        return;
    };
    let ev = entry.write(AckEvent::default());
    ev.kind = EventKind::ProbeAck as u32;
    ev.cookie = cookie;
    unsafe {
        ev.cpu = bpf_get_smp_processor_id();
        ev.ts_ns = bpf_ktime_get_ns();
        ev.jiffies = bpf_jiffies64();
    }
    fill(ev);
    entry.submit(0);
}
