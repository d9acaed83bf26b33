//! Every map the programs share with each other and with the agent. Sizes
//! are defaults: the agent may override them at load time.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use keepalive_common::{
    COUNTER_SLOTS, ClosedCounts, FlowKey, ProbeInFlight, SocketCounters, counter,
};

/// Events for the agent. Every failed reservation counts as `EVENTS_LOST`.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Exact per-socket counters, keyed by socket cookie. A plain hash (not LRU)
/// so that a full map is visible: inserts that fail count as
/// `SOCKET_MAP_FULL`; entries are removed when the socket closes.
#[map]
pub static SOCKETS: HashMap<u64, SocketCounters> = HashMap::with_max_entries(65536, 0);

/// Probes seen on egress whose ACK has not come back yet, one per flow (a
/// flow's next probe replaces its last). A plain hash, not LRU, so nothing
/// is evicted silently: entries leave when the ACK comes or the socket
/// closes, and an insert into a full map counts as `IN_FLIGHT_FULL`.
#[map]
pub static IN_FLIGHT: HashMap<FlowKey, ProbeInFlight> = HashMap::with_max_entries(65536, 0);

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

/// The per-socket counters of `cookie`, created when absent.
#[inline(always)]
pub fn socket_counters(cookie: u64) -> Option<*mut SocketCounters> {
    if cookie == 0 {
        return None;
    }
    if let Some(ptr) = SOCKETS.get_ptr_mut(cookie) {
        return Some(ptr);
    }
    let fresh = SocketCounters::default();
    // BPF_NOEXIST: a concurrent creator wins, we then use its entry.
    if SOCKETS.insert(cookie, fresh, 1).is_err() && SOCKETS.get_ptr_mut(cookie).is_none() {
        count(counter!(socket_map_full), 1);
        return None;
    }
    SOCKETS.get_ptr_mut(cookie)
}

/// Counts `probes` keepalive probes (`wire` of them seen by TC) for the
/// socket `cookie`, creating its counters if needed; returns its totals of
/// probes and ACKs for the event that reports them.
#[inline(always)]
pub fn count_socket_probes(cookie: u64, probes: u64, wire: u64, now_ns: u64) -> (u32, u32) {
    let Some(c) = socket_counters(cookie) else {
        return (0, 0);
    };
    // SAFETY: `c` points at a live map value; `add` updates atomically.
    unsafe {
        add(&raw mut (*c).probes, probes);
        if wire != 0 {
            add(&raw mut (*c).wire_probes, wire);
        }
        (*c).last_probe_ns = now_ns;
        ((*c).probes as u32, (*c).acks as u32)
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
