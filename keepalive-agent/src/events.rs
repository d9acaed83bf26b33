//! Turns raw ring-buffer records into [`Record`]s: names, addresses in `ss`
//! notation, times in seconds, keepalive settings resolved against the
//! namespace sysctls, the owner from the socket table, and the cause of a
//! connection's death.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use keepalive_common::{
    ACK_EVENT_SIZE, AckEvent, Event, EventKind, FLAG_HAS_TUPLE, FLAG_IN_KEEPALIVE_TIMER,
    FLAG_KEEPALIVE_ON, FLAG_WIRE_SEEN, KeepaliveSettings, STATE_EVENT_SIZE, SocketRecord,
    StateEvent, TIMER_KEEPALIVE, TIMER_WRITE,
};
use serde::Serialize;

use crate::sockets::{Owner, SocketTable};

pub const ETIMEDOUT: u32 = 110;
const AF_INET6: u16 = 10;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE: u8 = 7;

/// Bytes every ring-buffer record shares with [`Event`]'s start.
const RECORD_HEAD: usize = 32;
const _: () = assert!(std::mem::offset_of!(Event, cookie) + 8 == RECORD_HEAD);
const _: () = assert!(std::mem::offset_of!(AckEvent, cookie) + 8 == RECORD_HEAD);
const _: () = assert!(std::mem::offset_of!(StateEvent, cookie) + 8 == RECORD_HEAD);

/// Copies a record out of ring-buffer memory (a full [`Event`] or a
/// compact [`AckEvent`] or [`StateEvent`], told apart by kind and length);
/// `None` when it is none of them.
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() >= core::mem::size_of::<Event>() {
        // SAFETY: Event is plain old data and the length was checked.
        return Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) });
    }
    let kind = u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?);
    let compact = match kind {
        k if k == EventKind::ProbeAck as u32 => ACK_EVENT_SIZE,
        k if k == EventKind::StateChange as u32 => STATE_EVENT_SIZE,
        _ => return None,
    };
    if bytes.len() < compact {
        return None;
    }
    let mut ev = Event::zeroed();
    // SAFETY: the compact records begin with Event's first RECORD_HEAD
    // bytes (kind, cpu, ts_ns, jiffies, cookie), and the length was checked.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut ev).cast::<u8>(), RECORD_HEAD)
    };
    if compact == ACK_EVENT_SIZE {
        // SAFETY: AckEvent is plain old data and the length was checked.
        let ack = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AckEvent>()) };
        // The socket's tuple comes from the table (family 0: not carried).
        ev.rtt_ns = ack.rtt_ns;
        ev.seq = ack.seq;
        ev.acks_total = ack.acks_total;
        ev.ifindex = ack.ifindex;
    } else {
        // SAFETY: StateEvent is plain old data and the length was checked.
        let st = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<StateEvent>()) };
        ev.cgroup_id = st.cgroup_id;
        ev.netns = st.netns;
        ev.pid = st.pid;
        ev.family = st.family;
        ev.sport = st.sport;
        ev.dport = st.dport;
        ev.state = st.state;
        ev.old_state = st.old_state;
        ev.saddr = st.saddr;
        ev.daddr = st.daddr;
        ev.comm = st.comm;
        ev.probes_total = st.probes_total;
        ev.acks_total = st.acks_total;
        ev.flags = st.flags;
    }
    Some(ev)
}

/// The events one ring-buffer record stands for, in order: a `ProbeSent`
/// whose probe TC saw leave also stands for that `WireProbe` (folded in the
/// kernel, so that a probe costs the ring buffer one event, not two).
pub fn unfold(ev: Event) -> impl Iterator<Item = Event> {
    let folded = ev.kind == EventKind::ProbeSent as u32 && ev.flags & FLAG_WIRE_SEEN != 0;
    let wire = folded.then_some(Event {
        kind: EventKind::WireProbe as u32,
        flags: FLAG_IN_KEEPALIVE_TIMER,
        ..ev
    });
    wire.into_iter().chain(std::iter::once(ev))
}

/// Converts kernel clocks to wall-clock seconds and jiffies to seconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns, sampled at start.
    pub offset_ns: i128,
    pub hz: u32,
}

impl Clock {
    pub fn new(hz: u32) -> Self {
        let now = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes into the timespec we pass.
            unsafe { libc::clock_gettime(clock, &mut ts) };
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        Clock {
            offset_ns: now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC),
            hz,
        }
    }

    pub fn wall_seconds(&self, mono_ns: u64) -> f64 {
        (mono_ns as i128 + self.offset_ns) as f64 / 1e9
    }

    pub fn seconds(&self, jiffies: u32) -> f64 {
        jiffies as f64 / self.hz as f64
    }
}

/// Where an effective keepalive value comes from, as `ss`/`sysctl` users say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT on the socket.
    Socket,
    /// net.ipv4.tcp_keepalive_* of the socket's namespace.
    Sysctl,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Keepalive {
    pub enabled: bool,
    pub idle_s: f64,
    pub idle_source: Source,
    pub interval_s: f64,
    pub interval_source: Source,
    pub count: u32,
    pub count_source: Source,
    /// idle + interval × count: how long a dead peer goes unnoticed.
    pub detection_s: f64,
}

impl Keepalive {
    pub fn from_kernel(s: &KeepaliveSettings, enabled: bool, clock: &Clock) -> Self {
        let pick = |sock: u32, net: u32| {
            if sock != 0 {
                (sock, Source::Socket)
            } else {
                (net, Source::Sysctl)
            }
        };
        let (idle, idle_source) = pick(s.sock_time, s.net_time);
        let (intvl, interval_source) = pick(s.sock_intvl, s.net_intvl);
        let (count, count_source) = pick(s.sock_probes, s.net_probes);
        let idle_s = clock.seconds(idle);
        let interval_s = clock.seconds(intvl);
        Keepalive {
            enabled,
            idle_s,
            idle_source,
            interval_s,
            interval_source,
            count,
            count_source,
            detection_s: idle_s + interval_s * count as f64,
        }
    }
}

/// One line of the agent's output (JSON, or text).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// Unix time, seconds.
    pub time: f64,
    pub event: &'static str,
    pub cookie: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    /// `ss` notation (`192.0.2.1:80`, `[2001:db8::1]:80`): serde writes
    /// socket addresses as their display strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// The owner's container, derived from its cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
    /// Unanswered probes outstanding (`icsk_probes_out`, `ss`'s timer retrans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes_out: Option<u32>,
    /// Probes this socket sent since the agent saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<f64>,
    /// Seconds since the socket last received anything (errors: from the
    /// last packet received, or the first SYN, to the abort).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<f64>,
    /// Errors: seconds the connection went unanswered before the abort,
    /// from the first unanswered probe, data segment or SYN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unanswered_s: Option<f64>,
    /// Errors: seconds of idle before the first unanswered probe or
    /// segment (`idle_s - unanswered_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_before_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For errors: keepalive, retransmit, user_timeout, syn or other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_timeout_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// Wire probes: sent by the keepalive timer (false: a zero-window probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_probe: Option<bool>,
    /// Errors: the namespace's net.ipv4.tcp_retries2 / tcp_syn_retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_retries2: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_syn_retries: Option<u8>,
    /// sysctl_changed: which, and from what to what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sysctl: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_value: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_value: Option<u32>,
}

pub fn state_name(state: u8) -> &'static str {
    // Names as `ss` prints them.
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "UNCONN",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW-SYN-RECV",
        _ => "UNKNOWN",
    }
}

pub fn errno_name(errno: u32) -> String {
    match errno {
        110 => "ETIMEDOUT".into(),
        104 => "ECONNRESET".into(),
        111 => "ECONNREFUSED".into(),
        113 => "EHOSTUNREACH".into(),
        101 => "ENETUNREACH".into(),
        32 => "EPIPE".into(),
        n => format!("errno {n}"),
    }
}

/// `ss` notation: 127.0.0.1:22, [::1]:22.
pub fn endpoint_of(addr: SocketAddr) -> String {
    endpoint_parts(addr.ip(), addr.port())
}

fn endpoint_parts(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// (local, remote) of an event that read a socket.
pub fn addrs(ev: &Event) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(ip(ev.family, &ev.saddr), ev.sport),
        SocketAddr::new(ip(ev.family, &ev.daddr), ev.dport),
    )
}

/// (local, remote) of an inventory record.
pub fn record_addrs(rec: &SocketRecord) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(ip(rec.family, &rec.saddr), rec.sport),
        SocketAddr::new(ip(rec.family, &rec.daddr), rec.dport),
    )
}

pub fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    }
}

/// Which timer killed a connection (policy: the kernel only reports the
/// timer that was running and the socket's state and options).
pub fn cause(ev: &Event) -> &'static str {
    match ev.timer {
        TIMER_KEEPALIVE if ev.user_timeout_ms != 0 => "user_timeout",
        TIMER_KEEPALIVE => "keepalive",
        TIMER_WRITE if ev.old_state == TCP_SYN_SENT || ev.state == TCP_SYN_SENT => "syn",
        TIMER_WRITE if ev.user_timeout_ms != 0 => "user_timeout",
        TIMER_WRITE => "retransmit",
        _ => "other",
    }
}

/// Seconds from when `ev`'s socket stopped getting answers to the abort:
/// the first unanswered keepalive probe (`first_probe_ns`, as the agent
/// saw it), or `tp->retrans_stamp` (the first send of the oldest
/// unacknowledged segment or SYN). `max_s` bounds what is plausible:
/// retrans_stamp is in ms, or in µs on routes with usec TCP timestamps.
fn unanswered_seconds(ev: &Event, first_probe_ns: Option<u64>, max_s: f64) -> Option<f64> {
    if ev.timer == TIMER_KEEPALIVE {
        return first_probe_ns
            .filter(|t| *t <= ev.ts_ns)
            .map(|t| (ev.ts_ns - t) as f64 / 1e9);
    }
    if ev.retrans_stamp == 0 {
        return None;
    }
    [(1_000_000, 1e3), (1_000, 1e6)]
        .into_iter()
        .map(|(ns_per_unit, units_per_s)| {
            let now = (ev.ts_ns / ns_per_unit) as u32;
            now.wrapping_sub(ev.retrans_stamp) as i32 as f64 / units_per_s
        })
        .find(|s| (0.0..=max_s).contains(s))
}

/// Seconds to the millisecond, as the kernel's clocks give them.
fn ms(s: f64) -> f64 {
    (s * 1e3).round() / 1e3
}

/// Builds the record for `ev`, updating `table` (tuples, owners, closes).
pub fn to_record(ev: &Event, table: &mut SocketTable, clock: &Clock) -> Option<Record> {
    let kind = EventKind::from_u32(ev.kind)?;
    let mut r = Record {
        time: clock.wall_seconds(ev.ts_ns),
        cookie: ev.cookie,
        ..Default::default()
    };
    let has_tuple = ev.flags & FLAG_HAS_TUPLE != 0;
    let carries_tuple = has_tuple || kind == EventKind::WireProbe;
    if carries_tuple || (kind == EventKind::ProbeAck && ev.family != 0) {
        let (local, remote) = addrs(ev);
        r.local = Some(local);
        r.remote = Some(remote);
    }
    if has_tuple {
        r.netns = Some(ev.netns);
        r.state = Some(state_name(ev.state));
        // A closed socket has released its local port (reads 0): keep the
        // tuple the table knew.
        if ev.sport != 0 {
            table.set_tuple(ev.cookie, ev);
        }
    }
    let keepalive_on = ev.flags & FLAG_KEEPALIVE_ON != 0;
    match kind {
        EventKind::TimerFired => {
            r.event = "keepalive_timer";
            r.keepalive = Some(Keepalive::from_kernel(&ev.settings, keepalive_on, clock));
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.idle_s = Some(clock.seconds(ev.idle_jiffies));
        }
        EventKind::ProbeSent => {
            r.event = "probe_sent";
            r.keepalive = Some(Keepalive::from_kernel(&ev.settings, keepalive_on, clock));
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
            r.seq = Some(ev.seq);
        }
        EventKind::WireProbe => {
            r.event = "wire_probe";
            r.seq = Some(ev.seq);
            r.ifindex = Some(ev.ifindex);
            r.keepalive_probe = Some(ev.flags & FLAG_IN_KEEPALIVE_TIMER != 0);
        }
        EventKind::ProbeAck => {
            r.event = "probe_ack";
            r.seq = Some(ev.seq);
            r.rtt_us = Some(ev.rtt_ns as f64 / 1e3);
            r.acks = Some(ev.acks_total);
            r.ifindex = Some(ev.ifindex);
        }
        EventKind::SocketError => {
            let cause = cause(ev);
            r.event = match (ev.err, cause) {
                (ETIMEDOUT, "keepalive") => "keepalive_timeout",
                (ETIMEDOUT, _) => "connection_timeout",
                _ => "socket_error",
            };
            // What bounded the retransmissions that failed.
            r.tcp_retries2 = Some(ev.retries2);
            r.tcp_syn_retries = Some(ev.syn_retries);
            r.errno = Some(ev.err);
            r.error = Some(errno_name(ev.err));
            r.cause = Some(cause);
            r.keepalive = Some(Keepalive::from_kernel(&ev.settings, keepalive_on, clock));
            r.probes_out = Some(ev.probes_out);
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
            r.retransmits = Some(ev.retransmits);
            r.user_timeout_ms = Some(ev.user_timeout_ms);
            let first_probe = table
                .get(ev.cookie)
                .and_then(|e| e.first_unanswered_probe_ns);
            if cause == "syn" {
                // Nothing was ever received: the whole life was unanswered
                // (bounded by what tcp_syn_retries allows, ~2 h at most).
                let s = unanswered_seconds(ev, None, 2.0 * 3600.0).map(ms);
                r.idle_s = s;
                r.unanswered_s = s;
                r.idle_before_s = s.map(|_| 0.0);
            } else {
                let idle = clock.seconds(ev.idle_jiffies);
                // One jiffy of slack between the two clocks.
                let max = idle + clock.seconds(1);
                let s = unanswered_seconds(ev, first_probe, max).map(ms);
                r.idle_s = Some(idle);
                r.unanswered_s = s;
                r.idle_before_s = s.map(|s| ms((idle - s).max(0.0)));
            }
            if ev.old_state != 0 {
                r.old_state = Some(state_name(ev.old_state));
            }
        }
        EventKind::StateChange => {
            r.event = if ev.state == TCP_CLOSE {
                "socket_closed"
            } else {
                "state_change"
            };
            r.old_state = Some(state_name(ev.old_state));
            if ev.state == TCP_SYN_SENT {
                // connect() runs in the owner's context: the only reliable
                // moment to learn who owns an outgoing connection.
                let owner = Owner::from_event(ev);
                // A process opening thousands of connections is looked up
                // in /proc once: same pid, comm and cgroup, same owner.
                match table.known_owner(&owner) {
                    Some(known) => table.set_shared_owner(ev.cookie, known),
                    None => {
                        let mut owner = owner;
                        // The connecting process is alive now: its cgroup
                        // names the container, for every later event.
                        if let Some((cgroup, container)) = crate::owners::cgroup_of(owner.pid) {
                            owner.cgroup = Some(cgroup);
                            owner.container_id = container;
                        }
                        table.set_owner(ev.cookie, owner);
                    }
                }
            }
            r.probes = Some(ev.probes_total);
            r.acks = Some(ev.acks_total);
        }
    }
    table.update(ev.cookie, |e| match kind {
        EventKind::TimerFired | EventKind::ProbeSent => {
            if kind == EventKind::ProbeSent && ev.probes_out == 1 {
                e.first_unanswered_probe_ns = Some(ev.ts_ns);
            }
            e.keepalive = r.keepalive.clone();
            e.probes_out = ev.probes_out;
            e.probes = e.probes.max(ev.probes_total.into());
        }
        EventKind::ProbeAck => {
            e.acks = e.acks.max(ev.acks_total.into());
            e.probes_out = 0;
            e.first_unanswered_probe_ns = None;
            e.last_rtt_us = r.rtt_us;
        }
        _ => {}
    });
    if let Some(known) = table.get(ev.cookie) {
        if kind == EventKind::ProbeAck && ev.family == 0 {
            r.local = known.local;
            r.remote = known.remote;
        }
        if has_tuple && ev.sport == 0 {
            r.local = known.local.or(r.local);
            r.remote = known.remote.or(r.remote);
        }
        // Timer and softirq context has no meaningful current task: the
        // owner is the one recorded for the socket.
        if let Some(owner) = &known.owner {
            r.pid = Some(owner.pid);
            r.comm = Some(owner.comm.clone());
            r.cgroup_id = Some(owner.cgroup_id).filter(|id| *id != 0);
            r.container_id = owner.container_id.clone();
        }
    }
    if kind == EventKind::StateChange && ev.state == TCP_CLOSE {
        table.close(ev.cookie);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepalive_common::ACK_EVENT_SIZE;

    #[test]
    fn probe_seen_on_the_wire_unfolds_into_wire_probe_then_probe_sent() {
        let mut sent = Event::zeroed();
        sent.kind = EventKind::ProbeSent as u32;
        sent.flags = FLAG_KEEPALIVE_ON | FLAG_WIRE_SEEN;
        sent.ifindex = 7;
        let kinds: Vec<(u32, u8, u32)> =
            unfold(sent).map(|e| (e.kind, e.flags, e.ifindex)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::WireProbe as u32, FLAG_IN_KEEPALIVE_TIMER, 7),
                (EventKind::ProbeSent as u32, sent.flags, 7)
            ]
        );
        sent.flags = FLAG_KEEPALIVE_ON;
        assert_eq!(
            unfold(sent).count(),
            1,
            "not seen on the wire: no wire_probe"
        );
    }

    /// An event of socket 9, 192.0.2.1:1000 -> 192.0.2.2:2000, ESTABLISHED.
    fn socket_event(kind: EventKind, flags: u8) -> Event {
        let mut ev = Event::zeroed();
        ev.kind = kind as u32;
        ev.cookie = 9;
        ev.flags = flags;
        ev.family = 2;
        ev.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        ev.daddr[..4].copy_from_slice(&[192, 0, 2, 2]);
        ev.sport = 1000;
        ev.dport = 2000;
        ev.state = 1;
        ev
    }

    /// A compact ACK record decodes into an ACK whose tuple comes from the
    /// socket the table knows.
    #[test]
    fn compact_ack_takes_its_tuple_from_the_table() {
        let clock = Clock::new(250);
        let mut table = crate::sockets::SocketTable::new(10);
        let sent = socket_event(EventKind::ProbeSent, FLAG_KEEPALIVE_ON | FLAG_HAS_TUPLE);
        to_record(&sent, &mut table, &clock).unwrap();
        let ack = AckEvent {
            kind: EventKind::ProbeAck as u32,
            cookie: 9,
            rtt_ns: 81_000,
            seq: 41,
            acks_total: 1,
            ifindex: 3,
            ..Default::default()
        };
        // SAFETY: AckEvent is plain old data.
        let bytes: [u8; ACK_EVENT_SIZE] = unsafe { std::mem::transmute(ack) };
        let ev = decode(&bytes).expect("a compact ACK decodes");
        let r = to_record(&ev, &mut table, &clock).unwrap();
        assert_eq!(r.event, "probe_ack");
        assert_eq!(r.rtt_us, Some(81.0));
        assert_eq!(r.seq, Some(41));
        assert_eq!(
            r.local.map(|a| a.to_string()).as_deref(),
            Some("192.0.2.1:1000")
        );
        assert_eq!(
            r.remote.map(|a| a.to_string()).as_deref(),
            Some("192.0.2.2:2000")
        );
        assert!(decode(&bytes[..40]).is_none(), "short records are refused");
    }

    /// A compact state-change record decodes into the full event, tuple
    /// and owner included.
    #[test]
    fn compact_state_change_decodes_whole() {
        let mut st = StateEvent {
            kind: EventKind::StateChange as u32,
            ts_ns: 5,
            cookie: 9,
            cgroup_id: 77,
            netns: 42,
            pid: 1234,
            family: 2,
            sport: 1000,
            dport: 2000,
            state: 1,
            old_state: 2,
            probes_total: 3,
            flags: FLAG_HAS_TUPLE,
            ..Default::default()
        };
        st.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
        st.daddr[..4].copy_from_slice(&[192, 0, 2, 2]);
        st.comm[..4].copy_from_slice(b"curl");
        // SAFETY: StateEvent is plain old data.
        let bytes: [u8; STATE_EVENT_SIZE] = unsafe { std::mem::transmute(st) };
        let ev = decode(&bytes).expect("a compact state change decodes");
        assert_eq!((ev.kind, ev.ts_ns, ev.cookie), (st.kind, 5, 9));
        assert_eq!((ev.pid, ev.cgroup_id, ev.comm), (1234, 77, st.comm));
        let mut table = crate::sockets::SocketTable::new(10);
        let r = to_record(&ev, &mut table, &Clock::new(250)).unwrap();
        assert_eq!(r.event, "state_change");
        assert_eq!(r.netns, Some(42));
        assert_eq!(
            r.local.map(|a| a.to_string()).as_deref(),
            Some("192.0.2.1:1000")
        );
        assert_eq!(r.old_state, Some("SYN-SENT"));
        assert!(decode(&bytes[..100]).is_none(), "short records are refused");
    }

    fn ev(timer: u8, old_state: u8, user_timeout_ms: u32) -> Event {
        let mut e = Event::zeroed();
        e.timer = timer;
        e.old_state = old_state;
        e.state = TCP_CLOSE;
        e.user_timeout_ms = user_timeout_ms;
        e
    }

    #[test]
    fn unanswered_time_reads_retrans_stamp_in_ms_or_us() {
        let mut e = ev(TIMER_WRITE, 1, 0);
        e.ts_ns = 5_000_000_000_000; // 5000 s after boot
        e.retrans_stamp = (5_000_000 - 6_400) as u32; // ms: 6.4 s ago
        assert_eq!(unanswered_seconds(&e, None, 7.0), Some(6.4));
        // usec TCP timestamps: 6.4 s ago in µs (wrapped to 32 bits).
        e.retrans_stamp = (5_000_000_000u64 - 6_400_000) as u32;
        let s = unanswered_seconds(&e, None, 7.0).unwrap();
        assert!((s - 6.4).abs() < 1e-9, "{s}");
        // Nothing outstanding, or nothing plausible: no figure at all.
        e.retrans_stamp = 0;
        assert_eq!(unanswered_seconds(&e, None, 7.0), None);
        e.retrans_stamp = 1;
        assert_eq!(unanswered_seconds(&e, None, 7.0), None);
        // Keepalive: from the first unanswered probe the agent saw.
        e.timer = TIMER_KEEPALIVE;
        assert_eq!(
            unanswered_seconds(&e, Some(4_997_000_000_000), 7.0),
            Some(3.0)
        );
    }

    #[test]
    fn causes_follow_the_timer_state_and_options() {
        const ESTABLISHED: u8 = 1;
        assert_eq!(cause(&ev(TIMER_KEEPALIVE, ESTABLISHED, 0)), "keepalive");
        assert_eq!(
            cause(&ev(TIMER_KEEPALIVE, ESTABLISHED, 5000)),
            "user_timeout"
        );
        assert_eq!(cause(&ev(TIMER_WRITE, ESTABLISHED, 0)), "retransmit");
        assert_eq!(cause(&ev(TIMER_WRITE, ESTABLISHED, 5000)), "user_timeout");
        assert_eq!(cause(&ev(TIMER_WRITE, TCP_SYN_SENT, 0)), "syn");
        assert_eq!(cause(&ev(TIMER_WRITE, TCP_SYN_SENT, 5000)), "syn");
        assert_eq!(cause(&ev(0, ESTABLISHED, 0)), "other");
    }
}
