//! Socket life cycle and errors: `inet_sock_set_state` (creation of the
//! cookie, owner at connect, clean-up at close), `inet_sk_error_report`
//! (ETIMEDOUT and the timer that raised it) and `tcp_receive_reset` (an
//! RST that kills the connection, with the timestamps that tell whether
//! it answered our first write after an idle gap) and `tcp_send_reset` (an
//! RST the kernel sent on one of its sockets).

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
};
use keepalive_common::{
    ClosedCounts, Event, EventKind, FlowKey, NO_UID, TIMER_KEEPALIVE, TIMER_NONE, counter, flag,
};

use crate::{
    emit::{emit, emit_state},
    kernel::{ETIMEDOUT, Memory, Probed, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, config, read},
    maps::{
        CLOSED, IN_FLIGHT, SOCKETS, count, forget_socket, recover_unseen_probes, remove_in_flight,
        scratch,
    },
};

const IPPROTO_TCP: u16 = 6;

#[inline(always)]
fn is_tcp(sk: u64) -> bool {
    // sk_protocol is unresolved (0) only on kernels where it is a bitfield;
    // the tracepoints below then only see TCP in practice.
    let off = config!(sk_protocol);
    off == 0
        || read::<u16>(sk, off)
            .map(|p| p == IPPROTO_TCP)
            .unwrap_or(false)
}

#[inline(always)]
fn fill_task(ev: &mut Event) {
    (ev.pid, ev.cgroup_id, ev.comm) = current_task();
}

/// (tgid, cgroup id, comm) of the task the hook runs in.
#[inline(always)]
fn current_task() -> (u32, u64, [u8; 16]) {
    (
        (bpf_get_current_pid_tgid() >> 32) as u32,
        // SAFETY: no arguments; reads the current task's cgroup.
        unsafe { bpf_get_current_cgroup_id() },
        bpf_get_current_comm().unwrap_or([0; 16]),
    )
}

/// `cookie` must come from `bpf_get_socket_cookie`, which also creates it:
/// from here on every timer run can key this socket.
pub fn on_set_state(sk: u64, cookie: u64, old: i32, new: i32) -> Result<(), i64> {
    if config!(enabled) == 0 || !is_tcp(sk) {
        return Ok(());
    }
    let new = new as u8;
    if matches!(old as u8, TCP_ESTABLISHED | TCP_CLOSE_WAIT)
        && let Some(c) = SOCKETS.get_ptr_mut(cookie)
        && Probed::keepalive_on(sk).unwrap_or(false)
    {
        // Leaving the states keepalive probes in: what icsk_probes_out holds
        // now is keepalive's alone (a FIN that cannot leave is probed by the
        // zero-window timer, which raises it too): the last probes of runs
        // the kernel ran without our timer hooks are counted here.
        recover_unseen_probes(c, Probed::probes_out(sk).unwrap_or(0));
    }
    let mut probes_total = 0u32;
    let mut acks_total = 0u32;
    if new == TCP_CLOSE {
        // SAFETY: the value is copied out at once.
        if let Some(c) = unsafe { SOCKETS.get(cookie) } {
            probes_total = c.probes as u32;
            acks_total = c.acks as u32;
        }
        let mut in_timer = false;
        if let Some(scratch) = scratch()
            && scratch.kind != TIMER_NONE
            && scratch.sk == sk
        {
            // The error report comes after tcp_done (tcp_done_with_error)
            // and needs the counters: the timer's exit removes them.
            scratch.closed = 1;
            scratch.cookie = cookie;
            in_timer = true;
        }
        if !in_timer {
            forget_socket(cookie);
        }
    }
    let sent = emit_state(cookie, |ev| {
        ev.old_state = old as u8;
        if old as u8 == TCP_ESTABLISHED {
            // A close by either end: how long the connection had idled.
            let now = ev.head.jiffies as u32;
            ev.idle_jiffies = Probed::since_data_received_jiffies(sk, now).unwrap_or(0);
            ev.since_send_jiffies = Probed::since_send_jiffies(sk, now).unwrap_or(0);
        }
        ev.probes_total = probes_total;
        ev.acks_total = acks_total;
        (ev.pid, ev.cgroup_id, ev.comm) = current_task();
        // Whose share of the agent's table the socket takes.
        ev.uid = read::<u32>(sk, config!(sk_uid)).unwrap_or(NO_UID);
        let _ = Probed::fill_tuple(&mut ev.tuple, &mut ev.flags, sk);
        ev.tuple.state = new;
        if new == TCP_ESTABLISHED {
            // What the connection starts with (set before connect, or
            // inherited from the listener): later changes come from the
            // setsockopt hook.
            if Probed::keepalive_on(sk).unwrap_or(false) {
                ev.flags |= flag::KEEPALIVE_ON;
            }
            let _ = Probed::settings(sk, &mut ev.settings);
            ev.user_timeout_ms = read::<u32>(sk, config!(icsk_user_timeout)).unwrap_or(0);
        }
        if new == TCP_CLOSE {
            // A probe still waiting for its ACK will never get one.
            remove_in_flight(&FlowKey::of(&ev.tuple));
        }
    });
    if !sent && new == TCP_CLOSE && probes_total + acks_total != 0 {
        keep_closed_counts(sk, cookie, probes_total, acks_total);
    }
    Ok(())
}

/// The close event of a socket with counts was lost: its final counts go
/// where the agent's next inventory finds them.
#[inline(always)]
fn keep_closed_counts(sk: u64, cookie: u64, probes: u32, acks: u32) {
    let mut closed = ClosedCounts {
        probes: probes.into(),
        acks: acks.into(),
        ..ClosedCounts::default()
    };
    let mut flags = 0;
    let _ = Probed::fill_tuple(&mut closed.tuple, &mut flags, sk);
    if CLOSED.insert(cookie, closed, 0).is_err() {
        count(counter!(closed_counts_lost), 1);
    }
}

pub fn on_error_report(sk: u64, cookie: u64) -> Result<(), i64> {
    if config!(enabled) == 0 || !is_tcp(sk) {
        return Ok(());
    }
    if let Some(s) = scratch()
        && s.reset_sk == sk
        && s.reset_cookie == cookie
    {
        // tcp_reset's own report of the RST just reported.
        s.reset_sk = 0;
        return Ok(());
    }
    let err = read::<i32>(sk, config!(sk_err))? as u32;
    // The timer running on this CPU for this socket, and the state the
    // socket had when it started (tcp_done has moved it to CLOSE by now).
    let (timer, state_before) = match scratch() {
        Some(s) if s.kind != TIMER_NONE && s.sk == sk => (s.kind, s.state_before),
        _ => (TIMER_NONE, 0),
    };
    if err == ETIMEDOUT && timer == TIMER_KEEPALIVE {
        count(counter!(keepalive_timeouts), 1);
    }
    // SAFETY: no arguments; reads the kernel's jiffies.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() } as u32;
    emit(EventKind::SocketError, cookie, |ev| {
        ev.err = err;
        ev.timer = timer;
        fill_task(ev);
        fill_death(ev, sk, now);
        ev.old_state = state_before;
    });
    Ok(())
}

/// An in-sequence RST arrived (`tcp_reset` is about to kill the socket):
/// the socket is still in the state it had, with its timestamps. In
/// softirq context: the owner comes from the agent's table.
pub fn on_receive_reset(sk: u64, cookie: u64) -> Result<(), i64> {
    if config!(enabled) == 0 || !is_tcp(sk) {
        return Ok(());
    }
    count(counter!(resets), 1);
    // SAFETY: no arguments; reads the kernel's jiffies.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() } as u32;
    emit(EventKind::ConnectionReset, cookie, |ev| {
        fill_death(ev, sk, now);
        // A keepalive probe TC saw leave and no ACK came back: the RST may
        // answer it. Its timer run may not have reported it yet (the RST
        // can be processed on another CPU before the callback's exit).
        // SAFETY: the value is copied out at once.
        if let Some(flight) = unsafe { IN_FLIGHT.get(FlowKey::of(&ev.tuple)) }
            && flight.cookie == cookie
        {
            ev.rtt_ns = ev.head.ts_ns.wrapping_sub(flight.sent_ns);
        }
    });
    if let Some(s) = scratch() {
        s.reset_sk = sk;
        s.reset_cookie = cookie;
    }
    Ok(())
}

/// The kernel sent an RST on socket `sk` (full, or the `sock_common` of a
/// time-wait or request socket): its tuple and state say whose close it
/// followed; the rest is the agent's memory of the connection.
pub fn on_send_reset(sk: u64, cookie: u64) -> Result<(), i64> {
    if config!(enabled) == 0 {
        return Ok(());
    }
    count(counter!(resets_sent), 1);
    emit(EventKind::ResetSent, cookie, |ev| {
        let _ = Probed::fill_tuple(&mut ev.tuple, &mut ev.flags, sk);
    });
    Ok(())
}

pub fn count_reset_sent_without_socket() {
    if config!(enabled) != 0 {
        count(counter!(resets_sent_no_socket), 1);
    }
}

/// What a report of a dying (or stalling) connection carries: where it
/// is, its keepalive and retransmission state, its timestamps and its
/// kernel counts. Best effort per field: a failed read is counted and
/// leaves the field 0.
#[inline(always)]
pub fn fill_death(ev: &mut Event, sk: u64, now: u32) {
    // SAFETY: the value is copied out at once.
    if let Some(c) = unsafe { SOCKETS.get(ev.head.cookie) } {
        ev.probes_total = c.probes as u32;
        ev.acks_total = c.acks as u32;
    }
    ev.probes_out = Probed::probes_out(sk).unwrap_or(0).into();
    ev.retransmits = Probed::retransmits(sk).unwrap_or(0);
    ev.user_timeout_ms = read::<u32>(sk, config!(icsk_user_timeout)).unwrap_or(0);
    ev.idle_jiffies = Probed::idle_jiffies(sk, now).unwrap_or(0);
    ev.since_send_jiffies = Probed::since_send_jiffies(sk, now).unwrap_or(0);
    ev.srtt_us = Probed::srtt_us(sk).unwrap_or(0);
    ev.retrans_stamp = read::<u32>(sk, config!(tp_retrans_stamp)).unwrap_or(0);
    ev.first_tx_us = read::<u64>(sk, config!(tp_first_tx_mstamp)).unwrap_or(0);
    if Probed::keepalive_on(sk).unwrap_or(false) {
        ev.flags |= flag::KEEPALIVE_ON;
    }
    let _ = Probed::fill_tuple(&mut ev.tuple, &mut ev.flags, sk);
    let _ = Probed::settings(sk, &mut ev.settings);
    if let Ok((retries2, syn_retries)) = Probed::retries(sk) {
        ev.retries2 = retries2;
        ev.syn_retries = syn_retries;
    }
}
