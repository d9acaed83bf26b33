//! Types shared by the kernel programs and the agent: the load-time
//! configuration (kernel struct offsets resolved from BTF), the ring-buffer
//! event, the per-socket counters kept in a kernel map and the indices of the
//! global counters.
//!
//! Everything here is `#[repr(C)]`, fixed-size and explicitly padded, because
//! the same bytes are written by BPF code and read by userspace.
#![no_std]

/// Offsets (bytes from the start of `struct sock`, or of the struct named in
/// the field's comment) and addresses the kernel programs need. The agent
/// fills this from the running kernel's BTF and `/proc/kallsyms` and passes
/// it as a read-only global; a zeroed config (`enabled == 0`) makes every
/// program a no-op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Address of `tcp_keepalive_timer`, the callback of the socket's keepalive timer.
    pub keepalive_timer_fn: u64,
    /// Address of `tcp_write_timer`, the callback of the retransmit timer.
    pub write_timer_fn: u64,
    /// `struct sock`: the keepalive `timer_list` (`sk_timer`, renamed in newer kernels).
    pub sock_keepalive_timer: u32,
    /// `struct inet_connection_sock`: `icsk_retransmit_timer`.
    pub icsk_retransmit_timer: u32,
    /// `struct timer_list`: `function`.
    pub timer_function: u32,
    pub skc_cookie: u32,
    pub skc_net: u32,
    /// `struct net`: `ns.inum`.
    pub net_ns_inum: u32,
    /// `struct net`: `ipv4.sysctl_tcp_keepalive_time` / `_intvl` / `_probes`.
    pub net_keepalive_time: u32,
    pub net_keepalive_intvl: u32,
    pub net_keepalive_probes: u32,
    /// `struct net`: `ipv4.sysctl_tcp_retries2` / `_syn_retries`.
    pub net_retries2: u32,
    pub net_syn_retries: u32,
    /// `struct sock`: `sk_socket`; `struct socket_alloc`: `vfs_inode`;
    /// `struct inode`: `i_ino` — the socket's inode, as `ss -e` shows it.
    pub sk_socket: u32,
    pub socket_alloc_inode: u32,
    pub inode_ino: u32,
    /// `struct timer_list`: `expires`, and `entry.pprev` (set while the
    /// timer is pending in a timer wheel).
    pub timer_expires: u32,
    pub timer_pending_link: u32,
    pub skc_state: u32,
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_flags: u32,
    pub sk_err: u32,
    pub sk_protocol: u32,
    pub icsk_probes_out: u32,
    pub icsk_retransmits: u32,
    pub icsk_user_timeout: u32,
    pub icsk_ack_lrcvtime: u32,
    pub tp_keepalive_time: u32,
    pub tp_keepalive_intvl: u32,
    pub tp_keepalive_probes: u32,
    pub tp_snd_una: u32,
    pub tp_rcv_tstamp: u32,
    pub tp_retrans_stamp: u32,
    /// `tcp_sock.lsndtime`: jiffies of the last data segment sent
    /// (`tcp_event_data_sent`; pure ACKs and probes leave it alone).
    pub tp_lsndtime: u32,
    /// `tcp_sock.srtt_us`: smoothed RTT, µs << 3.
    pub tp_srtt_us: u32,
    /// `tcp_sock.first_tx_mstamp` (u64, µs of CLOCK_MONOTONIC): when the
    /// flight now outstanding started (`tcp_rate_skb_sent` sets it only
    /// when nothing was in flight, so retransmissions leave it alone).
    pub tp_first_tx_mstamp: u32,
    /// `struct sock`: `sk_uid` (kuid_t): the socket's owner, `uid:` in
    /// `ss -e`; an accepted socket has its listener's (`sk_clone_lock`).
    pub sk_uid: u32,
    /// `struct bpf_sockopt_kern`: `sk`, the socket a `cgroup/setsockopt`
    /// program's context stands for (read from the context as a plain
    /// address: the verifier forbids arithmetic on its `bpf_sock`);
    /// [`NOT_RESOLVED`] where the kernel's BTF lacks it.
    pub sockopt_kern_sk: u32,
    /// Sizes in bytes (1 or 4) of members whose type changed across kernels.
    pub tp_keepalive_probes_size: u8,
    pub net_keepalive_probes_size: u8,
    pub icsk_retransmits_size: u8,
    pub net_retries2_size: u8,
    pub net_syn_retries_size: u8,
    /// Bit number of `SOCK_KEEPOPEN` in `skc_flags`.
    pub sock_keepopen_bit: u8,
    /// 0 until the agent has filled the struct.
    pub enabled: u8,
    pub _pad: [u8; 1],
    /// The most `SOCKETS` entries the sockets of one user (`sk_uid`) may
    /// hold, so that one user filling the map does not blind the agent to
    /// the others; 0: no limit.
    pub socket_share: u32,
}

/// What a ring-buffer record reports ([`Head::kind`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The keepalive timer of a socket with SO_KEEPALIVE fired.
    TimerFired = 1,
    /// The keepalive timer sent a probe (`icsk_probes_out` grew).
    ProbeSent = 2,
    /// A TC egress classifier saw a probe-shaped segment on the wire.
    WireProbe = 3,
    /// A TC ingress classifier saw the peer's ACK of a probe.
    ProbeAck = 4,
    /// `sk_err` was reported on a socket (ETIMEDOUT and others).
    SocketError = 5,
    /// A TCP state change (`inet_sock_set_state`).
    StateChange = 6,
    /// An in-sequence RST was received (`tcp_receive_reset`): the
    /// connection dies of it.
    ConnectionReset = 7,
    /// The retransmit timer retransmitted for the second time with nothing
    /// answered (`icsk_retransmits` reached 2): a silent drop, early.
    Retransmitting = 8,
    /// The kernel sent an RST on one of its sockets (`tcp_send_reset`;
    /// full, orphaned or time-wait): late data on a connection our
    /// application closed, or an abort of a live one.
    ResetSent = 9,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::TimerFired,
            2 => Self::ProbeSent,
            3 => Self::WireProbe,
            4 => Self::ProbeAck,
            5 => Self::SocketError,
            6 => Self::StateChange,
            7 => Self::ConnectionReset,
            8 => Self::Retransmitting,
            9 => Self::ResetSent,
            _ => return None,
        })
    }
}

/// Which kernel timer was running on this CPU when an event happened; lets
/// userspace tell a keepalive kill from a retransmission kill.
pub const TIMER_NONE: u8 = 0;
pub const TIMER_KEEPALIVE: u8 = 1;
pub const TIMER_WRITE: u8 = 2;

/// Every `flags` bit of [`Event`], [`StateEvent`] and [`SocketRecord`].
pub mod flag {
    /// SO_KEEPALIVE was set on the socket.
    pub const KEEPALIVE_ON: u8 = 1;
    /// A wire probe seen while this socket's keepalive timer ran on this
    /// CPU (a keepalive probe, not a zero-window probe).
    pub const IN_KEEPALIVE_TIMER: u8 = 2;
    /// The record's [`Tuple`](super::Tuple) is filled.
    pub const HAS_TUPLE: u8 = 4;
    /// [`SocketRecord`](super::SocketRecord): the tcp_sock fields were read
    /// (not for TIME-WAIT/NEW-SYN-RECV sockets).
    pub const FULL_SOCK: u8 = 8;
    /// A `ProbeSent` reported by the TC classifier because the timer hook
    /// missed the run (see `KernelCounters::probes_wire_only`).
    pub const WIRE_ONLY: u8 = 16;
    /// A `ProbeSent` whose probe TC saw leave (at `ifindex`) during the
    /// timer run: it stands for the `WireProbe` event too, so a probe costs
    /// the ring buffer one event, not two.
    pub const WIRE_SEEN: u8 = 32;
    /// [`SocketRecord`](super::SocketRecord): carries the socket's kernel counters.
    pub const COUNTERS: u8 = 64;
    /// A `ProbeSent` that counts probes of earlier runs the kernel ran
    /// without the timer hooks, found from `icsk_probes_out` (see
    /// `KernelCounters::probes_recovered`).
    pub const RECOVERED: u8 = 128;
}

/// Keepalive settings as the kernel holds them. Socket values of 0 mean
/// "not set on the socket: use the namespace's sysctl".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// `tcp_sock.keepalive_time` (jiffies), 0 = sysctl.
    pub sock_time: u32,
    /// `tcp_sock.keepalive_intvl` (jiffies), 0 = sysctl.
    pub sock_intvl: u32,
    /// `tcp_sock.keepalive_probes`, 0 = sysctl.
    pub sock_probes: u32,
    /// The namespace's `net.ipv4.tcp_keepalive_time` (jiffies).
    pub net_time: u32,
    pub net_intvl: u32,
    pub net_probes: u32,
}

/// Where a socket is: the `sock_common` part every socket kind has (full,
/// time-wait and request sockets alike). Embedded in every record that
/// carries a socket's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    /// Addresses in network byte order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network namespace inode (as in `/proc/<pid>/ns/net`).
    pub netns: u32,
    /// AF_INET or AF_INET6.
    pub family: u16,
    /// Local and remote port, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// TCP state (as in `ss`: 1 ESTABLISHED … 7 CLOSE).
    pub state: u8,
    pub _pad: u8,
}

/// The start of every ring-buffer record: what it is, where and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// An [`EventKind`].
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// `bpf_jiffies64`, to convert jiffies fields to time.
    pub jiffies: u64,
    pub cookie: u64,
}

/// The ring buffer's full record. The fields a kind does not use are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub head: Head,
    pub cgroup_id: u64,
    pub tuple: Tuple,
    /// tgid of the current task (meaningful in process context only).
    pub pid: u32,
    pub comm: [u8; 16],
    pub settings: KeepaliveSettings,
    /// `icsk_probes_out` at the event.
    pub probes_out: u32,
    /// Probe sequence number (snd_una - 1), or the ACK number for acks.
    pub seq: u32,
    /// Probe round-trip time (ProbeAck); ConnectionReset: ns since the
    /// keepalive probe still unanswered left (seen by TC), 0 when none.
    pub rtt_ns: u64,
    /// Jiffies since the last segment was received (timer events).
    pub idle_jiffies: u32,
    /// `sk_err` (SocketError).
    pub err: u32,
    pub user_timeout_ms: u32,
    pub retransmits: u32,
    /// Interface index (TC events).
    pub ifindex: u32,
    /// Probes counted for this socket in the kernel map so far.
    pub probes_total: u32,
    pub acks_total: u32,
    /// StateChange: the previous state. SocketError: the state when the
    /// timer that raised the error started (the socket is CLOSE by then).
    pub old_state: u8,
    /// One of `TIMER_*`: the timer running on this CPU when the event fired.
    pub timer: u8,
    /// [`flag`] bits.
    pub flags: u8,
    /// The namespace's `net.ipv4.tcp_retries2` and `tcp_syn_retries`
    /// (SocketError): what bounded the retransmission that failed.
    pub retries2: u8,
    pub syn_retries: u8,
    pub _pad: [u8; 3],
    /// `tp->retrans_stamp` (SocketError): when the oldest unacknowledged
    /// segment (or the SYN) was first sent, in ms of CLOCK_MONOTONIC
    /// (µs where the route uses usec TCP timestamps); 0 when none.
    pub retrans_stamp: u32,
    /// Jiffies since the last data segment sent (`lsndtime`;
    /// ConnectionReset, Retransmitting).
    pub since_send_jiffies: u32,
    /// Smoothed RTT in µs (ConnectionReset, Retransmitting).
    pub srtt_us: u32,
    /// `tp->first_tx_mstamp`: µs of CLOCK_MONOTONIC when the outstanding
    /// flight's first segment was sent (SocketError, Retransmitting): the
    /// first unanswered data, before any retransmission of it.
    pub first_tx_us: u64,
}

/// The ring buffer's compact record for a probe's ACK, the one event per
/// probe that needs no socket details (the agent knows the socket from its
/// `ProbeSent`): 56 bytes instead of 200, so bursts of probes fit three
/// times as many ACKs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AckEvent {
    pub head: Head,
    pub rtt_ns: u64,
    pub seq: u32,
    pub acks_total: u32,
    pub ifindex: u32,
    pub _pad: u32,
}

/// The ring buffer's compact record for a state change, the bulk of
/// events on a node that opens connections fast (four per connection):
/// the socket and its owner, without the keepalive and error fields of
/// [`Event`] (120 bytes instead of 200).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StateEvent {
    pub head: Head,
    pub cgroup_id: u64,
    pub tuple: Tuple,
    pub pid: u32,
    pub comm: [u8; 16],
    pub probes_total: u32,
    pub acks_total: u32,
    pub old_state: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// The socket's owner (`sk_uid`); [`NO_UID`] when not read.
    pub uid: u32,
    /// Leaving ESTABLISHED only (a close by either end): jiffies since the
    /// last data received (`icsk_ack.lrcvtime`, which the FIN's own ACK
    /// processing leaves alone, unlike `rcv_tstamp`) and since the last
    /// data sent (`lsndtime`).
    pub idle_jiffies: u32,
    pub since_send_jiffies: u32,
    /// Entering ESTABLISHED only: the keepalive settings the connection
    /// starts with (`flag::KEEPALIVE_ON` says whether SO_KEEPALIVE is set),
    /// so that no inventory is needed to know them. Not read: all zero
    /// (`net_time`, a sysctl whose minimum is 1, tells).
    pub settings: KeepaliveSettings,
    pub user_timeout_ms: u32,
    pub _pad2: u32,
}

/// The ring buffer's record of a keepalive option a process sets on a
/// socket the agent already knows (`cgroup/setsockopt`), as asked: the
/// hook runs before the kernel applies (or refuses) it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OptionEvent {
    /// `head.kind` is [`OPTION_SET_KIND`].
    pub head: Head,
    /// One of [`option`].
    pub option: u32,
    /// The `int` the caller passed (its first 4 bytes when `optlen` is
    /// larger, as the kernel reads it).
    pub value: i32,
    /// The caller's `optlen`: under 4 the kernel refuses the call (EINVAL).
    pub optlen: u32,
    pub _pad: u32,
}

/// [`Head::kind`] of an [`OptionEvent`]; not an [`EventKind`]: it changes
/// the table, it is no event of the socket's.
pub const OPTION_SET_KIND: u32 = 10;

pub const OPTION_EVENT_SIZE: usize = 48;
const _: () = assert!(core::mem::size_of::<OptionEvent>() == OPTION_EVENT_SIZE);

/// The socket options [`OptionEvent`] reports.
pub mod option {
    /// `SOL_SOCKET`/`SO_KEEPALIVE`.
    pub const KEEPALIVE: u32 = 1;
    /// `IPPROTO_TCP`/`TCP_KEEPIDLE` (seconds).
    pub const KEEPIDLE: u32 = 2;
    /// `IPPROTO_TCP`/`TCP_KEEPINTVL` (seconds).
    pub const KEEPINTVL: u32 = 3;
    /// `IPPROTO_TCP`/`TCP_KEEPCNT`.
    pub const KEEPCNT: u32 = 4;
}

/// A [`KernelConfig`] offset the kernel's BTF does not have: the programs
/// that need it do nothing.
pub const NOT_RESOLVED: u32 = u32::MAX;

/// [`StateEvent::uid`] not read (the kernel's own `INVALID_UID`).
pub const NO_UID: u32 = u32::MAX;

pub const STATE_EVENT_SIZE: usize = 160;
const _: () = assert!(core::mem::size_of::<StateEvent>() == STATE_EVENT_SIZE);

pub const ACK_EVENT_SIZE: usize = 56;
const _: () = assert!(core::mem::size_of::<AckEvent>() == ACK_EVENT_SIZE);

pub const EVENT_SIZE: usize = 200;
const _: () = assert!(core::mem::size_of::<Event>() == EVENT_SIZE);
const _: () = assert!(core::mem::size_of::<KernelConfig>() == 200);

/// One socket from the `iter/tcp` inventory: every TCP socket of the
/// namespace the iterator was created in, with what only the kernel knows
/// (SO_KEEPALIVE and the per-socket TCP_KEEP* options).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketRecord {
    pub cookie: u64,
    pub inode: u64,
    /// `bpf_jiffies64` when read, and when the keepalive timer expires next
    /// (0: not pending).
    pub jiffies: u64,
    pub timer_expires: u64,
    pub tuple: Tuple,
    pub uid: u32,
    pub settings: KeepaliveSettings,
    pub probes_out: u32,
    pub idle_jiffies: u32,
    pub user_timeout_ms: u32,
    /// [`flag`] bits: `KEEPALIVE_ON`, `HAS_TUPLE`, `FULL_SOCK`, `COUNTERS`.
    pub flags: u8,
    pub _pad: [u8; 3],
    /// The socket's [`SocketCounters`] (`flag::COUNTERS`): read here, the
    /// agent needs no walk of the map.
    pub probes: u64,
    pub acks: u64,
    pub last_rtt_ns: u64,
}

pub const SOCKET_RECORD_SIZE: usize = 144;
const _: () = assert!(core::mem::size_of::<SocketRecord>() == SOCKET_RECORD_SIZE);

/// Exact per-socket counters, kept in the `SOCKETS` hash map keyed by socket
/// cookie; created at the first keepalive timer run, removed at close.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounters {
    pub timer_fires: u64,
    pub probes: u64,
    pub wire_probes: u64,
    pub acks: u64,
    pub last_probe_ns: u64,
    pub last_rtt_ns: u64,
    /// `icsk_probes_out` as the hooks last saw it (timer entry and exit, TC
    /// egress, ACK, state change): a later look that finds it higher counts the probes of runs
    /// the kernel ran without our timer hooks.
    pub probes_out_seen: u64,
    /// The socket's owner (`sk_uid`), whose share of the map it takes.
    pub uid: u32,
    pub _pad: u32,
}

/// Key of the probes in flight, as the local side sees the flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl FlowKey {
    pub fn of(t: &Tuple) -> Self {
        FlowKey {
            family: t.family,
            sport: t.sport,
            dport: t.dport,
            _pad: 0,
            saddr: t.saddr,
            daddr: t.daddr,
        }
    }
}

/// The final counts of a socket whose close event the ring buffer could
/// not take (kept in the `CLOSED` map until the agent reads them), so that
/// no probe counted in the kernel is missing from the labelled counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedCounts {
    pub tuple: Tuple,
    pub _pad: u32,
    pub probes: u64,
    pub acks: u64,
}

pub const CLOSED_COUNTS_SIZE: usize = 64;
const _: () = assert!(core::mem::size_of::<ClosedCounts>() == CLOSED_COUNTS_SIZE);

/// A probe seen on egress, waiting for its ACK on ingress.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeInFlight {
    pub cookie: u64,
    pub sent_ns: u64,
    pub seq: u32,
    pub _pad: u32,
}

/// The kernel programs' exact global counters: the one table of them.
/// Each field is one slot of the per-CPU `COUNTERS` array, in field order
/// ([`counter!`] names a slot by its field); userspace sums the slots over
/// CPUs into this struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KernelCounters {
    /// Keepalive timer runs of sockets with SO_KEEPALIVE.
    pub timer_fires: u64,
    /// Keepalive probes sent: what TcpExt `TCPKeepAlive` counts.
    pub probes: u64,
    /// Keepalive probes seen leaving by TC egress.
    pub wire_probes: u64,
    /// Zero-window probes seen by TC egress (probe-shaped, not keepalive).
    pub wire_zero_window_probes: u64,
    pub acks: u64,
    /// Keepalive ETIMEDOUT kills.
    pub keepalive_timeouts: u64,
    /// Ring-buffer reservations that failed: events lost.
    pub events_lost: u64,
    /// Sockets not tracked because `SOCKETS` was full.
    pub socket_map_full: u64,
    /// Kernel memory reads that failed.
    pub read_errors: u64,
    /// Probes in flight that could not be recorded (`IN_FLIGHT` full).
    pub in_flight_full: u64,
    /// Timer runs whose socket had no cookie yet (predates the agent and
    /// was not yet inventoried); such a socket's probes are still counted.
    pub no_cookie: u64,
    /// Sockets whose exit-time read was skipped because the socket closed
    /// inside the timer run.
    pub closed_in_timer: u64,
    /// Keepalive probes counted from the wire alone: the kernel ran the
    /// timer callback without invoking our `timer_expire_entry` program
    /// (2–3 % of tracepoint hits under heavy timer load on 6.18, with no
    /// recursion miss recorded), but TC saw the probe leave while the
    /// socket's keepalive callback ran. Included in `probes`.
    pub probes_wire_only: u64,
    /// Timer hook runs that could not get the per-CPU scratch (a per-CPU
    /// array of one entry: never expected, counted so it cannot pass unseen).
    #[cfg_attr(feature = "serde", serde(default))]
    pub scratch_missing: u64,
    /// Closes whose event was lost and whose final counts could not be
    /// kept either (`CLOSED` full): the labelled counters miss them.
    #[cfg_attr(feature = "serde", serde(default))]
    pub closed_counts_lost: u64,
    /// In-sequence RSTs received (`tcp_receive_reset`), each a connection
    /// killed (or a connect refused).
    #[cfg_attr(feature = "serde", serde(default))]
    pub resets: u64,
    /// Connections whose retransmit timer retransmitted a second time
    /// with nothing answered.
    #[cfg_attr(feature = "serde", serde(default))]
    pub retransmit_stalls: u64,
    /// Keepalive probes of timer runs the kernel ran without the timer
    /// hooks (neither saw the run) that did not reach TC either: counted
    /// when a later hooked timer run, or the socket leaving ESTABLISHED or
    /// CLOSE_WAIT, finds `icsk_probes_out` higher than the hooks last saw
    /// it. Included in `probes`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub probes_recovered: u64,
    /// RSTs the kernel sent on one of its sockets (`tcp_send_reset` with a
    /// socket: full, orphaned or time-wait), each reported as `ResetSent`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub resets_sent: u64,
    /// RSTs the kernel sent for a segment no socket of it matched (a
    /// closed port, or a connection whose time-wait ended): not reported.
    #[cfg_attr(feature = "serde", serde(default))]
    pub resets_sent_no_socket: u64,
    /// Sockets not tracked in `SOCKETS` because their user already held
    /// its share of the map ([`KernelConfig::socket_share`]).
    #[cfg_attr(feature = "serde", serde(default))]
    pub socket_share_refused: u64,
}

/// Slots of the `COUNTERS` array: one per [`KernelCounters`] field.
pub const COUNTER_SLOTS: u32 = (core::mem::size_of::<KernelCounters>() / 8) as u32;

impl KernelCounters {
    /// The counters from per-slot sums, in field order.
    pub fn from_slots(slots: [u64; COUNTER_SLOTS as usize]) -> Self {
        // SAFETY: KernelCounters is repr(C) with exactly COUNTER_SLOTS u64
        // fields and no padding (asserted below), so it has the layout of
        // the array.
        unsafe { core::mem::transmute(slots) }
    }
}
const _: () = assert!(core::mem::size_of::<KernelCounters>() == COUNTER_SLOTS as usize * 8);

/// The `COUNTERS` slot of a [`KernelCounters`] field: `counter!(probes)`.
#[macro_export]
macro_rules! counter {
    ($field:ident) => {
        (core::mem::offset_of!($crate::KernelCounters, $field) / 8) as u32
    };
}

impl Event {
    /// All zeroes, as a constant: the kernel programs write it into the
    /// ring buffer in place instead of building it on the BPF stack.
    pub const fn zeroed() -> Self {
        // SAFETY: Event holds only integers and arrays of them, for which
        // all-zero bytes are a valid value.
        unsafe { core::mem::zeroed() }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::KernelConfig {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::SocketCounters {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::ProbeInFlight {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::SocketRecord {}
    // SAFETY: repr(C), integers only, padding explicit: any bit pattern is valid.
    unsafe impl aya::Pod for super::ClosedCounts {}
}
