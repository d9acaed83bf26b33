//! Keepalive options set after connect: `cgroup/setsockopt` on the cgroup
//! v2 root sees every `setsockopt` of the node's processes before the
//! kernel applies it (`__cgroup_bpf_run_filter_setsockopt` runs ahead of
//! `sk_setsockopt` and `do_tcp_setsockopt`). Options of the four keepalive
//! kinds, on a socket the state hook has seen (it has a cookie), are
//! reported as asked; the agent applies them as the kernel will.

use aya_ebpf::{bindings::bpf_sockopt, programs::SockoptContext};
use keepalive_common::{NOT_RESOLVED, option};

use crate::{
    emit::emit_option,
    kernel::{Memory, Probed, config, read},
};

const SOL_SOCKET: i32 = 1;
const SO_KEEPALIVE: i32 = 9;
const SOL_TCP: i32 = 6;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_KEEPCNT: i32 = 6;
const IPPROTO_TCP: u32 = 6;
/// Before 6.5 a value longer than a page (iptables' rule blobs) fails with
/// EFAULT unless the program leaves it alone by setting `optlen` to 0
/// (`__cgroup_bpf_run_filter_setsockopt`: 0 means "use the caller's").
const PAGE_SIZE: i32 = 4096;

pub fn on_setsockopt(ctx: &SockoptContext) -> Result<(), i64> {
    // SAFETY: the context the kernel passed, valid for the program's run.
    let opt: &mut bpf_sockopt = unsafe { &mut *ctx.sockopt };
    if opt.optlen > PAGE_SIZE {
        opt.optlen = 0;
        return Ok(());
    }
    let kind = match (opt.level, opt.optname) {
        (SOL_SOCKET, SO_KEEPALIVE) => option::KEEPALIVE,
        (SOL_TCP, TCP_KEEPIDLE) => option::KEEPIDLE,
        (SOL_TCP, TCP_KEEPINTVL) => option::KEEPINTVL,
        (SOL_TCP, TCP_KEEPCNT) => option::KEEPCNT,
        _ => return Ok(()),
    };
    if config!(enabled) == 0 {
        return Ok(());
    }
    // SAFETY: the union member the kernel's context conversion fills.
    let sk = unsafe { opt.__bindgen_anon_1.sk };
    // SAFETY: `sk` is the context's socket, never NULL for setsockopt.
    if sk.is_null() || unsafe { (*sk).protocol } != IPPROTO_TCP {
        return Ok(());
    }
    let at = config!(sockopt_kern_sk);
    if at == NOT_RESOLVED {
        return Ok(());
    }
    // The same socket as a plain kernel address, read from the kernel's
    // context struct (`bpf_sockopt_kern`) the program's context stands for.
    let sk = read::<u64>(ctx.sockopt as u64, at)?;
    // A socket no state change has touched has no cookie yet: its
    // settings come with its ESTABLISHED event.
    let cookie = Probed::cookie(sk)?;
    if cookie == 0 {
        return Ok(());
    }
    let optlen = opt.optlen;
    // SAFETY: the union members the kernel's context conversion fills.
    let (start, end) = unsafe {
        (
            opt.__bindgen_anon_2.optval as usize,
            opt.__bindgen_anon_3.optval_end as usize,
        )
    };
    let value = if start + 4 <= end {
        // SAFETY: four bytes inside [optval, optval_end), checked above.
        unsafe { core::ptr::read_unaligned(start as *const i32) }
    } else {
        0
    };
    emit_option(cookie, |ev| {
        ev.option = kind;
        ev.value = value;
        ev.optlen = optlen as u32;
    });
    Ok(())
}
