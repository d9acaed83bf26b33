//! Every map the programs share with each other and with the agent. Sizes
//! are defaults: the agent may override them at load time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use keepalive_common::{
    COUNTER_SLOTS, ClosedCounts, FlowKey, NO_UID, ProbeInFlight, SocketCounters, counter,
};

use crate::kernel::{config, read};

/// Events for the agent. Every failed reservation counts as `EVENTS_LOST`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Exact per-socket counters, keyed by socket cookie. A plain hash (not LRU)
/// so that a full map is visible: inserts that fail count as
/// `SOCKET_MAP_FULL`; entries are removed when the socket closes.
#[map]
pub static SOCKETS: HashMap<u64, SocketCounters> = HashMap::with_max_entries(65536, 0);

/// How many `SOCKETS` entries each user's sockets hold (by `sk_uid`):
/// created with a socket's first entry, never more than
/// `KernelConfig::socket_share`. Allocated as used (a user per entry at
/// most: sized like `SOCKETS` by the agent).
#[map]
pub static HELD: HashMap<u32, u32> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Probes seen on egress whose ACK has not come back yet, one per flow (a
/// flow's next probe replaces its last). A plain hash, not LRU, so nothing
/// is evicted silently: entries leave when the ACK comes or the socket
/// closes, and an insert into a full map counts as `IN_FLIGHT_FULL`.
#[map]
pub static IN_FLIGHT: HashMap<FlowKey, ProbeInFlight> = HashMap::with_max_entries(65536, 0);

/// How many probes in `IN_FLIGHT` hash to each slot of their ports
/// ([`port_slot`]): ingress looks the 40-byte flow key up only for an ACK
/// whose slot is not 0, an inlined array read instead of a hash lookup on
/// every ACK of the node. Raised when an entry is created, lowered when
/// the kernel removes one (ACK, close); an entry the agent expires leaves
/// its slot raised, which costs lookups, never an ACK.
#[map]
pub static PROBED_PORTS: Array<u32> = Array::with_max_entries(PORT_SLOTS, 0);

pub const PORT_SLOTS: u32 = 1 << 16;

/// The slot of a flow, from the probing side's ports.
#[inline(always)]
pub fn port_slot(local_port: u16, remote_port: u16) -> u32 {
    (local_port ^ remote_port.rotate_left(8)) as u32 & (PORT_SLOTS - 1)
}

/// Whether a probe may be in flight on a flow with these ports.
#[inline(always)]
pub fn maybe_in_flight(slot: u32) -> bool {
    // SAFETY: the value is read at once (a plain u32; a torn read cannot
    // happen on an aligned 4-byte load).
    PROBED_PORTS
        .get(slot)
        .is_some_and(|n| unsafe { core::ptr::read_volatile(n) } != 0)
}

/// Records a probe in flight; its slot is raised only when the entry is
/// new (a flow's next probe replaces its last).
#[inline(always)]
pub fn insert_in_flight(key: &FlowKey, flight: &ProbeInFlight) {
    const BPF_NOEXIST: u64 = 1;
    const BPF_EXIST: u64 = 2;
    if IN_FLIGHT.insert(key, flight, BPF_EXIST).is_ok() {
        return;
    }
    if IN_FLIGHT.insert(key, flight, BPF_NOEXIST).is_ok() {
        if let Some(n) = PROBED_PORTS.get_ptr_mut(port_slot(key.sport, key.dport)) {
            add32(n, 1);
        }
        return;
    }
    // Neither there nor insertable: the map is full (or a concurrent
    // insert won, which then counted its own).
    if IN_FLIGHT.get_ptr(key).is_none() {
        count(counter!(in_flight_full), 1);
    }
}

/// Removes a probe in flight, lowering its slot if it was there.
#[inline(always)]
pub fn remove_in_flight(key: &FlowKey) {
    if IN_FLIGHT.remove(key).is_ok()
        && let Some(n) = PROBED_PORTS.get_ptr_mut(port_slot(key.sport, key.dport))
    {
        add32(n, u32::MAX);
    }
}

/// Final counts of sockets whose close event was lost (ring buffer full),
/// by cookie: written only then, read and emptied by the agent's
/// inventories. A full map counts as `closed_counts_lost`.
#[map]
pub static CLOSED: HashMap<u64, ClosedCounts> = HashMap::with_max_entries(4096, 0);

/// Global counters, per CPU so that hot paths never contend.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// What the timer running on this CPU is doing; see `timer.rs`.
#[map]
pub static SCRATCH: PerCpuArray<TimerScratch> = PerCpuArray::with_max_entries(1, 0);

/// Set at timer entry, read by the hooks the timer callback runs into
/// synchronously on the same CPU (TC egress, error report, state change),
/// and cleared at timer exit. Timer callbacks do not nest on one CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TimerScratch {
    pub timer: u64,
    pub sk: u64,
    pub cookie: u64,
    /// One of `keepalive_common::TIMER_*`.
    pub kind: u8,
    pub probes_out_before: u8,
    pub keepalive_on: u8,
    /// The socket reached TCP_CLOSE during the callback: it may be freed by
    /// the time of exit, so exit must not read it.
    pub closed: u8,
    /// TCP state at timer entry (an error report sees CLOSE already).
    pub state_before: u8,
    /// `icsk_retransmits` at the retransmit timer's entry.
    pub retransmits_before: u8,
    pub _pad: [u8; 2],
    /// Where TC egress saw this socket's probe leave during the callback
    /// (0: not seen), for the exit's `ProbeSent`.
    pub wire_ifindex: u32,
    pub _pad2: u32,
    /// The socket (and its cookie) whose received RST was just reported
    /// (`tcp_receive_reset`): its error report, which `tcp_reset` raises
    /// next on this CPU, is the same death and is not reported again.
    /// Not part of a timer run: set and cleared by those two hooks.
    pub reset_sk: u64,
    pub reset_cookie: u64,
    /// CLOCK_MONOTONIC at the timer's entry: an exit long after it is not
    /// this entry's (the kernel skipped that run's exit program).
    pub entered_ns: u64,
}

/// This CPU's timer scratch. A miss (never expected: one entry per CPU) is
/// counted, so a hook that silently did nothing would show.
#[inline(always)]
pub fn scratch() -> Option<&'static mut TimerScratch> {
    let Some(ptr) = SCRATCH.get_ptr_mut(0) else {
        count(counter!(scratch_missing), 1);
        return None;
    };
    // SAFETY: a per-CPU map value, valid for the program's run; timer
    // callbacks do not nest on one CPU, and the hooks that run inside one
    // (TC, state change, error report) only touch fields it set.
    Some(unsafe { &mut *ptr })
}

#[inline(always)]
pub fn count(index: u32, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU, but a softirq (TC) may interrupt a task-context hook on
        // the same CPU mid-update: add atomically.
        add(slot, n);
    }
}

/// The per-socket counters of `cookie` (socket `sk`), created when absent
/// and its user's share allows.
#[inline(always)]
pub fn socket_counters(sk: u64, cookie: u64, probes_out: u8) -> Option<*mut SocketCounters> {
    if cookie == 0 {
        return None;
    }
    if let Some(ptr) = SOCKETS.get_ptr_mut(cookie) {
        return Some(ptr);
    }
    let uid = read::<u32>(sk, config!(sk_uid)).unwrap_or(NO_UID);
    if !take_share(uid) {
        count(counter!(socket_share_refused), 1);
        return None;
    }
    // Probes sent before the hooks first saw the socket are not ours to count.
    let fresh = SocketCounters {
        probes_out_seen: probes_out.into(),
        uid,
        ..SocketCounters::default()
    };
    // BPF_NOEXIST: a concurrent creator wins, we then use its entry.
    if SOCKETS.insert(cookie, fresh, 1).is_err() {
        give_back_share(uid);
        if SOCKETS.get_ptr_mut(cookie).is_none() {
            count(counter!(socket_map_full), 1);
            return None;
        }
    }
    SOCKETS.get_ptr_mut(cookie)
}

/// Removes a socket's counters, giving its entry back to its user's share.
#[inline(always)]
pub fn forget_socket(cookie: u64) {
    // SAFETY: the value is copied out at once.
    let Some(uid) = (unsafe { SOCKETS.get(cookie) }).map(|c| c.uid) else {
        return;
    };
    // Only the one removal that succeeds gives the entry back.
    if SOCKETS.remove(cookie).is_ok() {
        give_back_share(uid);
    }
}

/// One more entry for `uid`, if its share allows (a race of two CPUs may
/// pass the limit by one each: a bound, not an exact count).
#[inline(always)]
fn take_share(uid: u32) -> bool {
    let limit = config!(socket_share);
    if let Some(n) = HELD.get_ptr_mut(uid) {
        // SAFETY: a live map value, read at once.
        if limit != 0 && unsafe { core::ptr::read_volatile(n) } >= limit {
            return false;
        }
        add32(n, 1);
        return true;
    }
    const BPF_NOEXIST: u64 = 1;
    if HELD.insert(uid, 1, BPF_NOEXIST).is_ok() {
        return true;
    }
    // A concurrent first entry of the same user, or HELD full.
    match HELD.get_ptr_mut(uid) {
        Some(n) => {
            add32(n, 1);
            true
        }
        None => false,
    }
}

#[inline(always)]
fn give_back_share(uid: u32) {
    if let Some(n) = HELD.get_ptr_mut(uid) {
        add32(n, u32::MAX);
    }
}

/// Counts `probes` keepalive probes (`wire` of them seen by TC) for the
/// socket `sk` of `cookie`, creating its counters if needed (`probes_out`: the
/// socket's `icsk_probes_out` once they are sent); returns its totals of
/// probes and ACKs for the event that reports them.
#[inline(always)]
pub fn count_socket_probes(
    sk: u64,
    cookie: u64,
    probes: u64,
    wire: u64,
    now_ns: u64,
    probes_out: u8,
) -> (u32, u32) {
    let Some(c) = socket_counters(sk, cookie, probes_out) else {
        return (0, 0);
    };
    // SAFETY: `c` points at a live map value; `add` updates atomically.
    unsafe {
        add(&raw mut (*c).probes, probes);
        if wire != 0 {
            add(&raw mut (*c).wire_probes, wire);
        }
        (*c).last_probe_ns = now_ns;
        (*c).probes_out_seen = probes_out.into();
        ((*c).probes as u32, (*c).acks as u32)
    }
}

/// Counts the probes of keepalive runs the kernel ran without our timer
/// hooks and that TC did not see either (no route, neighbour failed,
/// dropped by a filter): `tcp_keepalive_timer` raises `icsk_probes_out`
/// by one per probe and only an ACK (`tcp_ack`) resets it, so a look from
/// a keepalive run that finds `probes_out` above what the hooks last saw
/// finds exactly those (an ACK to a probe nobody saw would hide it: the
/// peer then answered, so TC saw it leave). Zero-window probes raise it
/// too (`tcp_send_probe0`): the retransmit timer's hooks mark those seen,
/// and no look is taken at close, where an orphan's FIN probing leaves it
/// high. Records `probes_out` as seen; returns the count.
#[inline(always)]
pub fn recover_unseen_probes(c: *mut SocketCounters, probes_out: u8) -> u64 {
    // SAFETY: `c` points at a live map value.
    unsafe {
        let n = u64::from(probes_out).saturating_sub((*c).probes_out_seen);
        (*c).probes_out_seen = probes_out.into();
        if n != 0 {
            add(&raw mut (*c).probes, n);
            count(counter!(probes), n);
            count(counter!(probes_recovered), n);
        }
        n
    }
}

/// Atomic add on a u32 (`u32::MAX` subtracts one).
#[inline(always)]
fn add32(field: *mut u32, n: u32) {
    // SAFETY: callers pass a pointer into a live map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            field, n,
        );
    }
}

/// Atomic add: TC on one CPU and the timer on another may update the same socket.
#[inline(always)]
pub fn add(field: *mut u64, n: u64) {
    // SAFETY: callers pass a pointer into a live map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            field, n,
        );
    }
}
