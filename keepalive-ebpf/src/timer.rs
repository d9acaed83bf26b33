//! The keepalive timer (and the retransmit timer, to tell who killed a
//! connection). Entry records the socket and `icsk_probes_out` in a per-CPU
//! scratch; exit compares: `tcp_keepalive_timer` increments
//! `icsk_probes_out` exactly when `tcp_write_wakeup` sent a probe. Works the
//! same from `timer_expire_entry/exit` (filtered on the callback address) and
//! from fentry/fexit on the callbacks.

use aya_ebpf::helpers::bpf_jiffies64;
use keepalive_common::{
    EventKind, SocketCounters, TIMER_KEEPALIVE, TIMER_NONE, TIMER_WRITE, counter, flag,
};

/// `icsk_retransmits` at which a stall is reported: the second RTO
/// retransmission with nothing answered (`tcp_retransmit_timer` counts
/// them; an ACK of new data resets it).
const STALL_RETRANSMITS: u32 = 2;

/// A scratch older than this at a matching exit was left by an entry whose
/// exit program the kernel skipped (#15): a keepalive or retransmit callback
/// runs for microseconds in softirq, while the same timer runs again no
/// sooner than its next interval. Taking it for this run's entry would
/// count again the probes recovered since.
const STALE_SCRATCH_NS: u64 = 10_000_000;

use crate::{
    emit::emit,
    kernel::{self, Memory, Probed, config, read},
    maps::{
        SOCKETS, add, count, count_socket_probes, forget_socket, recover_unseen_probes, scratch,
        socket_counters,
    },
};

pub fn on_entry(timer: u64) -> Result<(), i64> {
    if config!(enabled) == 0 {
        return Ok(());
    }
    let function = read::<u64>(timer, config!(timer_function))?;
    let (kind, sk) = if function == config!(keepalive_timer_fn) {
        (
            TIMER_KEEPALIVE,
            timer - config!(sock_keepalive_timer) as u64,
        )
    } else if function == config!(write_timer_fn) && function != 0 {
        (TIMER_WRITE, timer - config!(icsk_retransmit_timer) as u64)
    } else {
        return Ok(());
    };
    let Some(scratch) = scratch() else {
        return Ok(());
    };
    scratch.timer = timer;
    scratch.sk = sk;
    scratch.kind = kind;
    // SAFETY: no arguments; reads CLOCK_MONOTONIC.
    scratch.entered_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    scratch.closed = 0;
    scratch.wire_ifindex = 0;
    scratch.keepalive_on = 0;
    scratch.cookie = Probed::cookie(sk)?;
    scratch.probes_out_before = Probed::probes_out(sk)?;
    scratch.state_before = read::<u8>(sk, config!(skc_state))?;
    if kind == TIMER_WRITE {
        scratch.retransmits_before = Probed::retransmits(sk)? as u8;
        return Ok(());
    }
    if kind != TIMER_KEEPALIVE || !Probed::keepalive_on(sk)? {
        return Ok(());
    }
    scratch.keepalive_on = 1;
    count(counter!(timer_fires), 1);
    let cookie = scratch.cookie;
    if cookie == 0 {
        count(counter!(no_cookie), 1);
    }
    if let Some(c) = socket_counters(sk, cookie, scratch.probes_out_before) {
        // SAFETY: `c` points at a live map value.
        add(unsafe { &raw mut (*c).timer_fires }, 1);
    }
    // The event waits for exit: one event per run, `ProbeSent` when the
    // run sent a probe, else `TimerFired`.
    Ok(())
}

pub fn on_exit(timer: u64) -> Result<(), i64> {
    let Some(scratch) = scratch() else {
        return Ok(());
    };
    // SAFETY: no arguments; reads CLOCK_MONOTONIC.
    let now_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let stale = now_ns.wrapping_sub(scratch.entered_ns) > STALE_SCRATCH_NS;
    if scratch.kind == TIMER_NONE || scratch.timer != timer || stale {
        scratch.kind = TIMER_NONE;
        scratch.timer = 0;
        return on_unhooked_exit(timer);
    }
    let (kind, keepalive_on, closed) = (scratch.kind, scratch.keepalive_on, scratch.closed);
    scratch.kind = TIMER_NONE;
    scratch.timer = 0;
    if closed != 0 {
        // tcp_done ran inside the callback; the final sock_put may have freed
        // the socket, so it is not read again (the state change counted
        // what it had not seen). Its counters go now.
        count(counter!(closed_in_timer), 1);
        forget_socket(scratch.cookie);
        return Ok(());
    }
    let sk = scratch.sk;
    let cookie = scratch.cookie;
    if kind == TIMER_WRITE {
        return on_write_exit(
            sk,
            cookie,
            scratch.retransmits_before,
            scratch.probes_out_before,
        );
    }
    if kind != TIMER_KEEPALIVE || keepalive_on == 0 {
        return Ok(());
    }
    // A socket freed and reused meanwhile would carry another cookie.
    if cookie != 0 && Probed::cookie(sk)? != cookie {
        return Ok(());
    }
    let after = Probed::probes_out(sk)?;
    let before = scratch.probes_out_before;
    // Runs since the hooks last saw this socket that the kernel ran
    // without them; then this run's own probe, from the delta.
    let counters = SOCKETS.get_ptr_mut(cookie);
    let recovered = counters.map_or(0, |c| recover_unseen_probes(c, before));
    let sent = if after > before {
        (after - before) as u64
    } else if scratch.wire_ifindex != 0 {
        // The ACK already reset probes_out on another CPU (after the callback
        // released the socket lock), but TC saw the probe leave.
        1
    } else {
        0
    };
    // SAFETY: no arguments; reads the kernel's jiffies.
    let now = unsafe { bpf_jiffies64() } as u32;
    if sent == 0 {
        let probes_total = counters
            // SAFETY: `c` points at a live map value.
            .map(|c| unsafe {
                (*c).probes_out_seen = after.into();
                (*c).probes as u32
            })
            .unwrap_or(0);
        emit(EventKind::TimerFired, cookie, |ev| {
            ev.timer = TIMER_KEEPALIVE;
            ev.flags = flag::KEEPALIVE_ON;
            if recovered != 0 {
                ev.flags |= flag::RECOVERED;
            }
            ev.probes_out = after.into();
            ev.probes_total = probes_total;
            kernel::fill_keepalive(ev, sk, now);
        });
        return Ok(());
    }
    let wire_ifindex = scratch.wire_ifindex;
    count(counter!(probes), sent);
    let (probes_total, acks_total) = count_socket_probes(sk, cookie, sent, 0, now_ns, after);
    let snd_una = read::<u32>(sk, config!(tp_snd_una)).unwrap_or(0);
    emit(EventKind::ProbeSent, cookie, |ev| {
        ev.timer = TIMER_KEEPALIVE;
        ev.flags = flag::KEEPALIVE_ON;
        if wire_ifindex != 0 {
            ev.flags |= flag::WIRE_SEEN;
            ev.ifindex = wire_ifindex;
        }
        if recovered != 0 {
            ev.flags |= flag::RECOVERED;
        }
        ev.probes_out = after.into();
        ev.seq = snd_una.wrapping_sub(1);
        ev.probes_total = probes_total;
        ev.acks_total = acks_total;
        kernel::fill_keepalive(ev, sk, now);
    });
    Ok(())
}

/// A timer exit whose entry the kernel did not run our program for (the
/// tracepoint fired; measured on 6.18: 2–3 % of `timer_expire_entry`
/// hits under heavy timer load reach no BPF program and count no
/// recursion miss, entry and exit independently). For a keepalive run,
/// the socket's `icsk_probes_out` says what the hooks missed, probes that
/// never reached TC included. The callback's last `sock_put` may have
/// freed the socket: only a socket the hooks track (its cookie still in
/// `SOCKETS`, removed at close) is read.
fn on_unhooked_exit(timer: u64) -> Result<(), i64> {
    if read::<u64>(timer, config!(timer_function))? != config!(keepalive_timer_fn) {
        return Ok(());
    }
    let sk = timer - config!(sock_keepalive_timer) as u64;
    let cookie = Probed::cookie(sk)?;
    if cookie == 0 {
        return Ok(());
    }
    let Some(c) = SOCKETS.get_ptr_mut(cookie) else {
        return Ok(());
    };
    if !Probed::keepalive_on(sk)? {
        return Ok(());
    }
    let after = Probed::probes_out(sk)?;
    if recover_unseen_probes(c, after) == 0 {
        return Ok(());
    }
    report_recovered(sk, cookie, c, after);
    Ok(())
}

/// A `ProbeSent` for probes `recover_unseen_probes` counted: the agent
/// credits the socket's totals it carries.
#[inline(always)]
fn report_recovered(sk: u64, cookie: u64, c: *mut SocketCounters, probes_out: u8) {
    // SAFETY: `c` points at a live map value.
    let (probes_total, acks_total) = unsafe { ((*c).probes as u32, (*c).acks as u32) };
    // SAFETY: no arguments; reads the kernel's jiffies.
    let now = unsafe { bpf_jiffies64() } as u32;
    emit(EventKind::ProbeSent, cookie, |ev| {
        ev.timer = TIMER_KEEPALIVE;
        ev.flags = flag::KEEPALIVE_ON | flag::RECOVERED;
        ev.probes_out = probes_out.into();
        ev.probes_total = probes_total;
        ev.acks_total = acks_total;
        kernel::fill_keepalive(ev, sk, now);
    });
}

/// The retransmit timer ran: when it retransmitted (again) with at least
/// `STALL_RETRANSMITS` unanswered, report the stall; the agent decides
/// whether it followed an idle gap. Each further retransmission reports
/// again (one event per RTO, rare); the agent keeps one per stall. A run
/// deferred to `tcp_release_cb` (socket owned by the user) is not seen.
fn on_write_exit(sk: u64, cookie: u64, before: u8, probes_out_before: u8) -> Result<(), i64> {
    if cookie != 0 && Probed::cookie(sk)? != cookie {
        return Ok(());
    }
    // Zero-window probes (`tcp_probe_timer`, this timer) raise
    // icsk_probes_out too: what this run added is taken as seen, so it is
    // never recovered as keepalive probes; what keepalive runs unseen by
    // the hooks added before it is recovered first.
    if let Some(c) = SOCKETS.get_ptr_mut(cookie) {
        recover_unseen_probes(c, probes_out_before);
        let probes_out = Probed::probes_out(sk)?;
        // SAFETY: `c` points at a live map value.
        unsafe { (*c).probes_out_seen = probes_out.into() };
    }
    let after = Probed::retransmits(sk)?;
    if after < STALL_RETRANSMITS || after <= u32::from(before) {
        return Ok(());
    }
    count(counter!(retransmit_stalls), 1);
    // SAFETY: no arguments; reads the kernel's jiffies.
    let now = unsafe { bpf_jiffies64() } as u32;
    emit(EventKind::Retransmitting, cookie, |ev| {
        ev.timer = TIMER_WRITE;
        ev.retransmits = after;
        crate::sock::fill_death(ev, sk, now);
    });
    Ok(())
}
