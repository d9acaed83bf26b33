//! `iter/tcp`: one [`SocketRecord`] per TCP socket of the namespace the
//! iterator was created in, written to the reader's file. This is the only
//! way to learn SO_KEEPALIVE and the TCP_KEEP* options of sockets that
//! existed before the agent (sock_diag does not report them). Reading a
//! socket's cookie here also creates it, so later timer runs can key it.
//! Each record carries the socket's exact counters from `SOCKETS`.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::{
    bpf_get_socket_cookie, bpf_jiffies64,
    generated::{bpf_seq_write, bpf_skc_to_tcp_sock},
};
use keepalive_common::{SOCKET_RECORD_SIZE, SocketRecord, flag};

use crate::{
    kernel::{Loaded, Memory, config, read},
    maps::SOCKETS,
};

/// The iterator's context (`struct bpf_iter__tcp`).
#[repr(C)]
struct IterTcp {
    meta: *const IterMeta,
    sk_common: *mut c_void,
    uid: u32,
}

/// `struct bpf_iter_meta`: the seq_file comes first.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

pub fn dump(ctx: *mut c_void) -> Result<(), i64> {
    let ctx = ctx as *const IterTcp;
    // SAFETY: the kernel passes a valid `bpf_iter__tcp` context.
    let (meta, sk) = unsafe { ((*ctx).meta, (*ctx).sk_common) };
    if sk.is_null() || meta.is_null() {
        // The final call after the last socket.
        return Ok(());
    }
    // SAFETY: meta and sk were checked non-null; the context is the kernel's.
    let (seq, uid, cookie) = unsafe { ((*meta).seq, (*ctx).uid, bpf_get_socket_cookie(sk)) };
    let mut slot = MaybeUninit::uninit();
    let rec = zeroed(&mut slot);
    rec.cookie = cookie;
    // SAFETY: no arguments; reads the kernel's jiffies.
    rec.jiffies = unsafe { bpf_jiffies64() };
    rec.uid = uid;
    fill(rec, sk)?;
    // SAFETY: the value is copied out at once.
    if let Some(c) = unsafe { SOCKETS.get(cookie) } {
        rec.probes = c.probes;
        rec.acks = c.acks;
        rec.last_rtt_ns = c.last_rtt_ns;
        rec.flags |= flag::COUNTERS;
    }
    // SAFETY: `rec` lives on our stack for the call; the helper copies it.
    unsafe {
        bpf_seq_write(
            seq.cast(),
            (rec as *const SocketRecord).cast(),
            core::mem::size_of::<SocketRecord>() as u32,
        )
    };
    Ok(())
}

const _: () = assert!(core::mem::align_of::<SocketRecord>() == 8);

/// `slot` zeroed a word at a time: `SocketRecord::default()` compiles to
/// calls of the byte-at-a-time `memset` subprogram (a loop of ~600
/// instructions per socket). Volatile stores keep LLVM from turning these
/// back into one.
#[inline(always)]
fn zeroed(slot: &mut MaybeUninit<SocketRecord>) -> &mut SocketRecord {
    let words = slot.as_mut_ptr().cast::<u64>();
    for i in 0..SOCKET_RECORD_SIZE / 8 {
        // SAFETY: the record is 8-aligned and SOCKET_RECORD_SIZE long.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: every byte was just written; all zeroes is a valid record.
    unsafe { slot.assume_init_mut() }
}

/// `sk` is the iterator's `sock_common`: its own members are loaded
/// through it, those of a full socket through `bpf_skc_to_tcp_sock`'s
/// `tcp_sock` (the verifier admits no load past the pointer's own type).
#[inline(always)]
fn fill(rec: &mut SocketRecord, sk: *mut c_void) -> Result<(), i64> {
    Loaded::fill_tuple(&mut rec.tuple, &mut rec.flags, sk as u64)?;
    // SAFETY: `sk` is the iterator's socket; NULL for time-wait and
    // request sockets, which are not full sockets: nothing below exists
    // in them.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk) } as u64;
    if tp == 0 {
        return Ok(());
    }
    rec.flags |= flag::FULL_SOCK;
    if Loaded::keepalive_on(tp)? {
        rec.flags |= flag::KEEPALIVE_ON;
    }
    Loaded::settings(tp, &mut rec.settings)?;
    rec.probes_out = Loaded::probes_out(tp)?.into();
    rec.idle_jiffies = Loaded::idle_jiffies(tp, rec.jiffies as u32)?;
    rec.user_timeout_ms = Loaded::read::<u32>(tp, config!(icsk_user_timeout))?;
    let timer = config!(sock_keepalive_timer);
    // A pending timer_list is linked into a timer wheel (entry.pprev set).
    let pprev = Loaded::read::<u64>(tp, timer + config!(timer_pending_link))?;
    if pprev != 0 {
        rec.timer_expires = Loaded::read::<u64>(tp, timer + config!(timer_expires))?;
    }
    let socket = Loaded::read::<u64>(tp, config!(sk_socket))?;
    if socket != 0 {
        // The inode lies past `struct socket` (in `socket_alloc`), where
        // no load through a `socket` pointer may go.
        let inode = socket + config!(socket_alloc_inode) as u64;
        rec.inode = read::<u64>(inode, config!(inode_ino))?;
    }
    Ok(())
}
