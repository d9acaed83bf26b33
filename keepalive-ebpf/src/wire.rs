//! TC classifiers: the wire view. Egress recognises a probe as a pure ACK
//! with no payload and seq = snd_una - 1 (`tcp_xmit_probe_skb`); the per-CPU
//! timer scratch (or, when the timer hook missed a run, the socket's own
//! keepalive timer) tells a keepalive probe from a zero-window probe, which
//! looks the same on the wire but comes from another timer. Ingress matches
//! the peer's ACK (ack = probe seq + 1) to the probe in flight and measures
//! the round trip, looking the flow up only when a probe may be in flight
//! on its ports (`PROBED_PORTS`). Observers only: every packet continues
//! unchanged. Cost is what a fleet pays on every packet: segments leave at
//! the first field that rules them out, addresses are read last.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::{bpf_get_socket_cookie, bpf_jiffies64, bpf_ktime_get_ns, bpf_tcp_sock},
    programs::TcContext,
};
use keepalive_common::{
    Event, EventKind, FlowKey, ProbeInFlight, TIMER_KEEPALIVE, TIMER_NONE, counter, flag,
};

use crate::{
    emit::{emit, emit_ack},
    kernel::{self, AF_INET, AF_INET6, Memory, Probed, config, read},
    maps::{
        IN_FLIGHT, add, count, count_socket_probes, insert_in_flight, maybe_in_flight, port_slot,
        remove_in_flight, scratch,
    },
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;
const IPPROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
/// FIN, SYN, RST, PSH, ACK, URG; ECE/CWR do not change what a segment is.
const TCP_FLAGS_MASK: u8 = 0x3f;

/// A TCP segment's header fields; its addresses are read from the packet
/// only when wanted ([`Segment::addresses`]): most segments leave before.
struct Segment {
    family: u16,
    /// The IP header, bounds-checked for its addresses.
    ip: usize,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: u32,
}

impl Segment {
    /// (source, destination), as the packet has them.
    #[inline(always)]
    fn addresses(&self) -> ([u8; 16], [u8; 16]) {
        let (mut saddr, mut daddr) = ([0u8; 16], [0u8; 16]);
        if self.family == AF_INET {
            saddr[..4].copy_from_slice(&field::<[u8; 4]>(self.ip, 12));
            daddr[..4].copy_from_slice(&field::<[u8; 4]>(self.ip, 16));
        } else {
            saddr = field::<[u8; 16]>(self.ip, 8);
            daddr = field::<[u8; 16]>(self.ip, 24);
        }
        (saddr, daddr)
    }

    /// The flow as this (the sending) side sees it.
    #[inline(always)]
    fn flow(&self) -> FlowKey {
        let (saddr, daddr) = self.addresses();
        FlowKey {
            family: self.family,
            sport: self.sport,
            dport: self.dport,
            _pad: 0,
            saddr,
            daddr,
        }
    }

    /// The flow as the other (the probing) side sees it.
    #[inline(always)]
    fn reverse_flow(&self) -> FlowKey {
        let (saddr, daddr) = self.addresses();
        FlowKey {
            family: self.family,
            sport: self.dport,
            dport: self.sport,
            _pad: 0,
            saddr: daddr,
            daddr: saddr,
        }
    }
}

/// The longest frame a probe or a probe's ACK can be: Ethernet, IPv4 with
/// options, TCP with options, no payload. Anything longer (bulk data, GSO
/// super-packets) leaves at once: the classifiers cost nearly nothing on
/// the data path.
const MAX_PROBE_FRAME: u32 = 14 + 60 + 60;

/// The address of a `len`-byte header at `off` in the packet's linear
/// data, bounds-checked once for the verifier; fields are then read with
/// [`field`]. Direct packet access: one comparison per header instead of a
/// `bpf_skb_load_bytes` call per field. (`len` is a whole header: a 1-byte
/// check is compiled into a form the verifier cannot follow.)
#[inline(always)]
fn header(ctx: &TcContext, off: usize, len: usize) -> Option<usize> {
    let p = ctx.data() + off;
    if p + len > ctx.data_end() {
        return None;
    }
    Some(p)
}

/// A field at `off` within a header from [`header`]; `off + size_of::<T>()`
/// must not exceed the header's checked length.
#[inline(always)]
fn field<T>(header: usize, off: usize) -> T {
    // SAFETY: `header` was bounds-checked against data_end for the whole
    // header, and callers keep `off + size_of::<T>()` inside it.
    unsafe { core::ptr::read_unaligned((header + off) as *const T) }
}

const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;

#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Segment> {
    let len = ctx.len();
    if len > MAX_PROBE_FRAME {
        return None;
    }
    // A frame with bytes outside the linear area carries payload: TCP
    // builds a probe or a pure ACK in the linear head alone
    // (`tcp_xmit_probe_skb`, `__tcp_send_ack`), while written data sits in
    // page fragments (`tcp_sendmsg_locked`), and receiving drivers copy a
    // small frame's headers into the head. Never pulled: TCP's transmitted
    // skbs are clones, and `bpf_skb_pull_data` on a clone copies the whole
    // packet (`pskb_expand_head`) — that was most of a 64-byte segment's
    // classifier cost.
    if ctx.data() + (len as usize) > ctx.data_end() {
        return None;
    }
    // SAFETY: the skb of a TC program's context is always valid.
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    // Devices without a link-layer header (tun, wireguard) start at L3.
    let l3 = match header(ctx, 0, ETH_HLEN) {
        Some(eth) if u16::from_be(field::<u16>(eth, 12)) == proto => ETH_HLEN,
        _ => 0,
    };
    let (family, ip, l4, ip_payload) = if proto == ETH_P_IP {
        let ip = header(ctx, l3, IPV4_HLEN)?;
        let vihl = field::<u8>(ip, 0);
        if vihl >> 4 != 4 || field::<u8>(ip, 9) != IPPROTO_TCP {
            return None;
        }
        // Later fragments carry no TCP header.
        if u16::from_be(field::<u16>(ip, 6)) & 0x1fff != 0 {
            return None;
        }
        let ihl = ((vihl & 0x0f) as usize) * 4;
        let total = u16::from_be(field::<u16>(ip, 2)) as u32;
        (AF_INET, ip, l3 + ihl, total.wrapping_sub(ihl as u32))
    } else if proto == ETH_P_IPV6 {
        let ip = header(ctx, l3, IPV6_HLEN)?;
        // Extension headers are not followed: keepalive probes carry none.
        if field::<u8>(ip, 6) != IPPROTO_TCP {
            return None;
        }
        let payload = u16::from_be(field::<u16>(ip, 4)) as u32;
        (AF_INET6, ip, l3 + IPV6_HLEN, payload)
    } else {
        return None;
    };
    let tcp = header(ctx, l4, TCP_HLEN)?;
    let doff = ((field::<u8>(tcp, 12) >> 4) as u32) * 4;
    Some(Segment {
        family,
        ip,
        sport: u16::from_be(field::<u16>(tcp, 0)),
        dport: u16::from_be(field::<u16>(tcp, 2)),
        seq: u32::from_be(field::<u32>(tcp, 4)),
        ack: u32::from_be(field::<u32>(tcp, 8)),
        flags: field::<u8>(tcp, 13) & TCP_FLAGS_MASK,
        payload: ip_payload.wrapping_sub(doff),
    })
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
    // SAFETY: the skb of a TC program's context is always valid; the
    // verifier checks each socket pointer below for null before its use.
    let sk: *mut bpf_sock = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(());
    }
    // One helper, not two: bpf_tcp_sock is NULL for anything but a full
    // TCP socket (`bpf_tcp_sock` in net/core/filter.c checks sk_fullsock).
    // SAFETY: `sk` is the skb's socket, checked non-null.
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return Ok(());
    }
    // SAFETY: `tp` checked non-null.
    if seg.seq != unsafe { (*tp).snd_una }.wrapping_sub(1) {
        return Ok(());
    }
    // SAFETY: the context's skb; the helpers take no other input.
    let (cookie, now, ifindex) = unsafe {
        (
            bpf_get_socket_cookie(ctx.skb.skb as *mut _),
            bpf_ktime_get_ns(),
            (*ctx.skb.skb).ifindex,
        )
    };
    let mut in_timer = false;
    let mut timer_running = false;
    if let Some(scratch) = scratch() {
        timer_running = scratch.kind != TIMER_NONE;
        // The scratch cookie is 0 for a socket whose cookie was created just
        // now; the timer callback only transmits for its own socket.
        if scratch.kind == TIMER_KEEPALIVE && (scratch.cookie == cookie || scratch.cookie == 0) {
            in_timer = true;
            scratch.cookie = cookie;
            scratch.wire_ifindex = ifindex;
        }
    }
    let sk = address_of(tp.cast());
    let wire_only = !in_timer && !timer_running && sk != 0 && in_keepalive_callback(sk);
    if !in_timer && !wire_only {
        count(counter!(wire_zero_window_probes), 1);
        emit(EventKind::WireProbe, cookie, |ev| {
            ev.seq = seg.seq;
            ev.ifindex = ifindex;
            fill_tuple(&seg, ev);
        });
        return Ok(());
    }
    count(counter!(wire_probes), 1);
    if wire_only {
        // The timer hook missed this run: count the probe and report it
        // here, as the timer's exit would have.
        count(counter!(probes), 1);
        count(counter!(probes_wire_only), 1);
        // The callback counts the probe once this send returns.
        let probes_out = Probed::probes_out(sk).unwrap_or(0).saturating_add(1);
        let (probes_total, acks_total) = count_socket_probes(sk, cookie, 1, 1, now, probes_out);
        // SAFETY: no arguments; reads the kernel's jiffies.
        let now_jiffies = unsafe { bpf_jiffies64() } as u32;
        emit(EventKind::ProbeSent, cookie, |ev| {
            ev.timer = TIMER_KEEPALIVE;
            ev.flags = flag::KEEPALIVE_ON | flag::WIRE_ONLY | flag::WIRE_SEEN;
            ev.ifindex = ifindex;
            ev.seq = seg.seq;
            ev.probes_total = probes_total;
            ev.acks_total = acks_total;
            ev.probes_out = probes_out.into();
            kernel::fill_keepalive(ev, sk, now_jiffies);
        });
    } else if let Some(c) = crate::maps::SOCKETS.get_ptr_mut(cookie) {
        // The timer's exit reports this probe with flag::WIRE_SEEN.
        // SAFETY: `c` points at a live map value.
        add(unsafe { &raw mut (*c).wire_probes }, 1);
    }
    let flight = ProbeInFlight {
        cookie,
        sent_ns: now,
        seq: seg.seq,
        _pad: 0,
    };
    insert_in_flight(&seg.flow(), &flight);
    Ok(())
}

/// The addresses into a wire event (no namespace or state: the agent knows
/// those from the socket's other events).
#[inline(always)]
fn fill_tuple(seg: &Segment, ev: &mut Event) {
    let (saddr, daddr) = seg.addresses();
    ev.tuple.family = seg.family;
    ev.tuple.sport = seg.sport;
    ev.tuple.dport = seg.dport;
    ev.tuple.saddr = saddr;
    ev.tuple.daddr = daddr;
}

/// The kernel address of a socket, as a number: the verifier forbids
/// arithmetic on a `bpf_sock` pointer, so the pointer is copied off the
/// stack with `bpf_probe_read_kernel`, which yields a plain scalar.
#[inline(always)]
fn address_of(sk: *mut bpf_sock) -> u64 {
    let slot = sk as u64;
    // SAFETY: reads our own stack slot; the helper checks the address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(&raw const slot) }.unwrap_or(0)
}

/// A probe leaves with no timer of ours running on this CPU: the timer
/// hook was not invoked for this run (seen under heavy timer load). It is
/// a keepalive probe when the socket has SO_KEEPALIVE and its keepalive
/// timer is not pending: the timer is detached while its callback runs, and
/// `tcp_keepalive_timer` sends before it re-arms, while a zero-window probe
/// comes from the write timer with the keepalive timer armed. (Read through
/// `bpf_probe_read_kernel`: TC sees the socket only as a `bpf_sock`.)
#[inline(always)]
fn in_keepalive_callback(sk: u64) -> bool {
    let timer = sk + config!(sock_keepalive_timer) as u64;
    Probed::keepalive_on(sk).unwrap_or(false)
        && read::<u64>(timer, config!(timer_pending_link)).is_ok_and(|pprev| pprev == 0)
}

pub fn on_ingress(ctx: &TcContext) -> Result<(), i64> {
    if config!(enabled) == 0 {
        return Ok(());
    }
    let Some(seg) = parse(ctx) else {
        return Ok(());
    };
    if seg.flags & TCP_ACK == 0 || !maybe_in_flight(port_slot(seg.dport, seg.sport)) {
        return Ok(());
    }
    let key = seg.reverse_flow();
    // SAFETY: the value is copied out at once.
    let Some(flight) = (unsafe { IN_FLIGHT.get(key) }) else {
        return Ok(());
    };
    if seg.ack != flight.seq.wrapping_add(1) {
        return Ok(());
    }
    let cookie = flight.cookie;
    // SAFETY: no arguments; reads CLOCK_MONOTONIC.
    let rtt = unsafe { bpf_ktime_get_ns() }.wrapping_sub(flight.sent_ns);
    let seq = flight.seq;
    remove_in_flight(&key);
    count(counter!(acks), 1);
    let mut acks_total = 0u32;
    if let Some(c) = crate::maps::SOCKETS.get_ptr_mut(cookie) {
        // SAFETY: `c` points at a live map value.
        add(unsafe { &raw mut (*c).acks }, 1);
        // SAFETY: as above.
        unsafe {
            // tcp_ack is about to reset icsk_probes_out.
            (*c).probes_out_seen = 0;
            (*c).last_rtt_ns = rtt;
            acks_total = (*c).acks as u32;
        }
    }
    // SAFETY: the skb of a TC program's context is always valid.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    emit_ack(cookie, |ev| {
        ev.rtt_ns = rtt;
        ev.seq = seq;
        ev.acks_total = acks_total;
        ev.ifindex = ifindex;
    });
    Ok(())
}
