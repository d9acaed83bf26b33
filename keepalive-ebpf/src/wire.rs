//! TC classifiers: the wire view. Egress recognises a probe as a pure ACK
//! with no payload and seq = snd_una - 1 (`tcp_xmit_probe_skb`); the per-CPU
//! timer scratch tells a keepalive probe from a zero-window probe, which
//! looks the same on the wire but comes from another timer. Ingress matches
//! the peer's ACK (ack = probe seq + 1) to the probe in flight and measures
//! the round trip. Observers only: every packet continues unchanged.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_sk_fullsock, bpf_tcp_sock},
    programs::TcContext,
};
use keepalive_common::{
    EventKind, FLAG_IN_KEEPALIVE_TIMER, FlowKey, ProbeInFlight, TIMER_KEEPALIVE, counter,
};

use crate::{
    emit::emit,
    kernel::{AF_INET, AF_INET6, config},
    maps::{IN_FLIGHT, SCRATCH, add, count},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
/// FIN, SYN, RST, PSH, ACK, URG; ECE/CWR do not change what a segment is.
const TCP_FLAGS_MASK: u8 = 0x3f;

struct Segment {
    family: u16,
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: u32,
}

/// The longest frame a probe or a probe's ACK can be: Ethernet, IPv4 with
/// options, TCP with options, no payload. Anything longer (bulk data, GSO
/// super-packets) leaves at once: the classifiers cost nearly nothing on
/// the data path.
const MAX_PROBE_FRAME: u32 = 14 + 60 + 60;

#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Segment> {
    if ctx.len() > MAX_PROBE_FRAME {
        return None;
    }
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    // Devices without a link-layer header (tun, wireguard) start at L3.
    let l3 = match ctx.load::<u16>(12) {
        Ok(t) if u16::from_be(t) == proto => ETH_HLEN,
        _ => 0,
    };
    let mut seg = Segment {
        family: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        flags: 0,
        payload: 0,
    };
    let (l4, ip_payload) = if proto == ETH_P_IP {
        let vihl = ctx.load::<u8>(l3).ok()?;
        if vihl >> 4 != 4 || ctx.load::<u8>(l3 + 9).ok()? != IPPROTO_TCP {
            return None;
        }
        // Later fragments carry no TCP header.
        if u16::from_be(ctx.load::<u16>(l3 + 6).ok()?) & 0x1fff != 0 {
            return None;
        }
        let ihl = ((vihl & 0x0f) as usize) * 4;
        let total = u16::from_be(ctx.load::<u16>(l3 + 2).ok()?) as u32;
        seg.family = AF_INET;
        let s = ctx.load::<[u8; 4]>(l3 + 12).ok()?;
        let d = ctx.load::<[u8; 4]>(l3 + 16).ok()?;
        seg.saddr[..4].copy_from_slice(&s);
        seg.daddr[..4].copy_from_slice(&d);
        (l3 + ihl, total.wrapping_sub(ihl as u32))
    } else if proto == ETH_P_IPV6 {
        // Extension headers are not followed: keepalive probes carry none.
        if ctx.load::<u8>(l3 + 6).ok()? != IPPROTO_TCP {
            return None;
        }
        seg.family = AF_INET6;
        seg.saddr = ctx.load::<[u8; 16]>(l3 + 8).ok()?;
        seg.daddr = ctx.load::<[u8; 16]>(l3 + 24).ok()?;
        (l3 + 40, u16::from_be(ctx.load::<u16>(l3 + 4).ok()?) as u32)
    } else {
        return None;
    };
    seg.sport = u16::from_be(ctx.load::<u16>(l4).ok()?);
    seg.dport = u16::from_be(ctx.load::<u16>(l4 + 2).ok()?);
    seg.seq = u32::from_be(ctx.load::<u32>(l4 + 4).ok()?);
    seg.ack = u32::from_be(ctx.load::<u32>(l4 + 8).ok()?);
    let doff = ((ctx.load::<u8>(l4 + 12).ok()? >> 4) as u32) * 4;
    seg.flags = ctx.load::<u8>(l4 + 13).ok()? & TCP_FLAGS_MASK;
    seg.payload = ip_payload.wrapping_sub(doff);
    Some(seg)
}

pub fn on_egress(ctx: &TcContext) -> Result<(), i64> {
    if config!(enabled) == 0 {
        return Ok(());
    }
    let Some(seg) = parse(ctx) else {
        return Ok(());
    };
    if seg.flags != TCP_ACK || seg.payload != 0 {
        return Ok(());
    }
    let sk: *mut bpf_sock = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(());
    }
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return Ok(());
    }
    let tp = unsafe { bpf_tcp_sock(full) };
    if tp.is_null() {
        return Ok(());
    }
    if seg.seq != unsafe { (*tp).snd_una }.wrapping_sub(1) {
        return Ok(());
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
    let now = unsafe { bpf_ktime_get_ns() };
    let mut in_keepalive = false;
    if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
        let scratch = unsafe { &mut *scratch };
        // The scratch cookie is 0 for a socket whose cookie was created just
        // now; the timer callback only transmits for its own socket.
        if scratch.kind == TIMER_KEEPALIVE && (scratch.cookie == cookie || scratch.cookie == 0) {
            in_keepalive = true;
            scratch.cookie = cookie;
            scratch.wire_probe_seen = 1;
        }
    }
    count(
        if in_keepalive {
            counter::WIRE_PROBES
        } else {
            counter::WIRE_ZERO_WINDOW_PROBES
        },
        1,
    );
    if in_keepalive {
        if let Some(c) = crate::maps::SOCKETS.get_ptr_mut(cookie) {
            add(unsafe { &raw mut (*c).wire_probes }, 1);
        }
    }
    if in_keepalive {
        let key = FlowKey {
            family: seg.family,
            sport: seg.sport,
            dport: seg.dport,
            _pad: 0,
            saddr: seg.saddr,
            daddr: seg.daddr,
        };
        let flight = ProbeInFlight {
            cookie,
            sent_ns: now,
            seq: seg.seq,
            _pad: 0,
        };
        if IN_FLIGHT.insert(&key, &flight, 0).is_err() {
            count(counter::IN_FLIGHT_FULL, 1);
        }
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    emit(EventKind::WireProbe, cookie, |ev| {
        if in_keepalive {
            ev.flags = FLAG_IN_KEEPALIVE_TIMER;
        }
        ev.seq = seg.seq;
        ev.ifindex = ifindex;
        ev.family = seg.family;
        ev.sport = seg.sport;
        ev.dport = seg.dport;
        ev.saddr = seg.saddr;
        ev.daddr = seg.daddr;
    });
    Ok(())
}

pub fn on_ingress(ctx: &TcContext) -> Result<(), i64> {
    if config!(enabled) == 0 {
        return Ok(());
    }
    let Some(seg) = parse(ctx) else {
        return Ok(());
    };
    if seg.flags & TCP_ACK == 0 {
        return Ok(());
    }
    // The flow as the probing side sees it.
    let key = FlowKey {
        family: seg.family,
        sport: seg.dport,
        dport: seg.sport,
        _pad: 0,
        saddr: seg.daddr,
        daddr: seg.saddr,
    };
    let Some(flight) = (unsafe { IN_FLIGHT.get(&key) }) else {
        return Ok(());
    };
    if seg.ack != flight.seq.wrapping_add(1) {
        return Ok(());
    }
    let cookie = flight.cookie;
    let rtt = unsafe { bpf_ktime_get_ns() }.wrapping_sub(flight.sent_ns);
    let seq = flight.seq;
    let _ = IN_FLIGHT.remove(&key);
    count(counter::ACKS, 1);
    let mut acks_total = 0u32;
    if let Some(c) = crate::maps::SOCKETS.get_ptr_mut(cookie) {
        add(unsafe { &raw mut (*c).acks }, 1);
        unsafe {
            (*c).last_rtt_ns = rtt;
            acks_total = (*c).acks as u32;
        }
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    emit(EventKind::ProbeAck, cookie, |ev| {
        ev.rtt_ns = rtt;
        ev.seq = seq;
        ev.acks_total = acks_total;
        ev.ifindex = ifindex;
        ev.family = key.family;
        ev.sport = key.sport;
        ev.dport = key.dport;
        ev.saddr = key.saddr;
        ev.daddr = key.daddr;
    });
    Ok(())
}
