//! The programs themselves: thin wrappers around the `try`-style handlers
//! of the other modules, which map a handler's (already counted) error to
//! the program's return value.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_get_socket_cookie,
    macros::{btf_tracepoint, cgroup_sockopt, classifier, fentry, fexit},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, SockoptContext, TcContext},
};

use crate::{inventory, sock, sockopt, timer, wire};

/// TCX_NEXT / TC_ACT_UNSPEC: we only observe, the next program decides.
const TC_NEXT: i32 = -1;

// Keepalive timer, tracepoint flavour: every timer_list expiry in the
// system, filtered on the callback address.
#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry(ctx: BtfTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_entry(timer);
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn timer_expire_exit(ctx: BtfTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_exit(timer);
    0
}

// Keepalive and retransmit timers, fentry flavour: only the two callbacks
// run the program (cheaper), where the kernel permits fentry.
#[fentry(function = "tcp_keepalive_timer")]
pub fn keepalive_timer_entry(ctx: FEntryContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_entry(timer);
    0
}

#[fexit(function = "tcp_keepalive_timer")]
pub fn keepalive_timer_exit(ctx: FExitContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_exit(timer);
    0
}

#[fentry(function = "tcp_write_timer")]
pub fn write_timer_entry(ctx: FEntryContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_entry(timer);
    0
}

#[fexit(function = "tcp_write_timer")]
pub fn write_timer_exit(ctx: FExitContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    let _ = timer::on_exit(timer);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // Also creates the cookie, so later timer runs can key the socket.
    // SAFETY: the tracepoint's socket argument is a valid `struct sock`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let _ = sock::on_set_state(sk as u64, cookie, old, new);
    0
}

#[btf_tracepoint(function = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: the tracepoint's socket argument is a valid `struct sock`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let _ = sock::on_error_report(sk as u64, cookie);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: the tracepoint's socket argument is a valid `struct sock`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let _ = sock::on_receive_reset(sk as u64, cookie);
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    if sk.is_null() {
        // tcp_v4_send_reset for a segment no socket matched.
        sock::count_reset_sent_without_socket();
        return 0;
    }
    // SAFETY: checked non-NULL; the tracepoint's socket is a valid `struct
    // sock` (or the `sock_common` of a time-wait or request socket, which
    // holds the cookie, copied from the full socket by inet_twsk_alloc).
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let _ = sock::on_send_reset(sk as u64, cookie);
    0
}

/// Keepalive options set on known sockets; 1: the call goes on, unchanged.
#[cgroup_sockopt(setsockopt)]
pub fn keepalive_setsockopt(ctx: SockoptContext) -> i32 {
    let _ = sockopt::on_setsockopt(&ctx);
    1
}

/// The benchmark's baseline: classifiers that do nothing, attached the way
/// ours are (`--tc-baseline`), so that their difference is our cost.
#[classifier]
pub fn tc_noop_egress(_ctx: TcContext) -> i32 {
    TC_NEXT
}

#[classifier]
pub fn tc_noop_ingress(_ctx: TcContext) -> i32 {
    TC_NEXT
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    let _ = wire::on_egress(&ctx);
    TC_NEXT
}

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    let _ = wire::on_ingress(&ctx);
    TC_NEXT
}

/// Socket inventory; aya-ebpf has no iterator macro, so the section is
/// named by hand (`iter/<target>` is what libbpf and aya-obj recognise).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn dump_tcp(ctx: *mut c_void) -> i32 {
    let _ = inventory::dump(ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
