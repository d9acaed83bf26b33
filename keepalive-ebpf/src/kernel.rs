//! Reading kernel memory at offsets the agent resolved from BTF (no CO-RE in
//! Rust eBPF), and filling the socket part of an event.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use keepalive_common::{Event, KeepaliveSettings, KernelConfig, Tuple, counter, flag};

use crate::maps::count;

/// Filled by the agent through `EbpfLoader::override_global`.
// SAFETY: KernelConfig is plain integers: all zeroes is a valid value
// (`enabled == 0`: every program a no-op until the agent fills it).
#[unsafe(no_mangle)]
pub static CONFIG: KernelConfig = unsafe { core::mem::zeroed() };

/// One field of [`CONFIG`], read volatile so the compiler cannot fold the
/// zero it was compiled with.
macro_rules! config {
    ($field:ident) => {
        // SAFETY: CONFIG is a static, always valid for reads.
        unsafe { core::ptr::read_volatile(&raw const crate::kernel::CONFIG.$field) }
    };
}
pub(crate) use config;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const ETIMEDOUT: u32 = 110;

#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails
    // (counted) rather than fault; `T` is a plain integer or byte array.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.map_err(|e| {
        count(counter!(read_errors), 1);
        e as i64
    })
}

/// A member that is `u8` on some kernels and `int` on others.
#[inline(always)]
pub fn read_sized(base: u64, offset: u32, size: u8) -> Result<u32, i64> {
    if size == 1 {
        read::<u8>(base, offset).map(u32::from)
    } else {
        read::<u32>(base, offset)
    }
}

/// `sk->sk_cookie`; 0 when nothing generated it yet.
#[inline(always)]
pub fn cookie(sk: u64) -> Result<u64, i64> {
    read::<u64>(sk, config!(skc_cookie))
}

#[inline(always)]
pub fn probes_out(sk: u64) -> Result<u8, i64> {
    read::<u8>(sk, config!(icsk_probes_out))
}

#[inline(always)]
pub fn keepalive_on(sk: u64) -> Result<bool, i64> {
    let flags = read::<u64>(sk, config!(skc_flags))?;
    Ok(flags >> (config!(sock_keepopen_bit) & 63) & 1 == 1)
}

#[inline(always)]
fn net(sk: u64) -> Result<u64, i64> {
    read::<u64>(sk, config!(skc_net))
}

/// The socket's own keepalive options and its namespace's sysctls.
#[inline(always)]
pub fn settings(sk: u64, out: &mut KeepaliveSettings) -> Result<(), i64> {
    out.sock_time = read::<u32>(sk, config!(tp_keepalive_time))?;
    out.sock_intvl = read::<u32>(sk, config!(tp_keepalive_intvl))?;
    out.sock_probes = read_sized(
        sk,
        config!(tp_keepalive_probes),
        config!(tp_keepalive_probes_size),
    )?;
    let net = net(sk)?;
    out.net_time = read::<u32>(net, config!(net_keepalive_time))?;
    out.net_intvl = read::<u32>(net, config!(net_keepalive_intvl))?;
    out.net_probes = read_sized(
        net,
        config!(net_keepalive_probes),
        config!(net_keepalive_probes_size),
    )?;
    Ok(())
}

/// `icsk_retransmits`: RTO retransmissions since the last forward progress.
#[inline(always)]
pub fn retransmits(sk: u64) -> Result<u32, i64> {
    read_sized(
        sk,
        config!(icsk_retransmits),
        config!(icsk_retransmits_size),
    )
}

/// Jiffies since the last data segment was sent (`tp->lsndtime`, set by
/// `tcp_event_data_sent`).
#[inline(always)]
pub fn since_send_jiffies(sk: u64, now: u32) -> Result<u32, i64> {
    Ok(now.wrapping_sub(read::<u32>(sk, config!(tp_lsndtime))?))
}

/// Smoothed RTT in µs (`tp->srtt_us` holds it << 3).
#[inline(always)]
pub fn srtt_us(sk: u64) -> Result<u32, i64> {
    Ok(read::<u32>(sk, config!(tp_srtt_us))? >> 3)
}

/// The namespace's tcp_retries2 and tcp_syn_retries.
#[inline(always)]
pub fn retries(sk: u64) -> Result<(u8, u8), i64> {
    let net = net(sk)?;
    let r2 = read_sized(net, config!(net_retries2), config!(net_retries2_size))?;
    let syn = read_sized(net, config!(net_syn_retries), config!(net_syn_retries_size))?;
    Ok((r2 as u8, syn as u8))
}

/// Jiffies since the last segment was received, as `keepalive_time_elapsed`
/// computes it (tcp.h): now - max(icsk_ack.lrcvtime, rcv_tstamp).
#[inline(always)]
pub fn idle_jiffies(sk: u64, now: u32) -> Result<u32, i64> {
    let lrcv = read::<u32>(sk, config!(icsk_ack_lrcvtime))?;
    let rcv = read::<u32>(sk, config!(tp_rcv_tstamp))?;
    let last = if (rcv.wrapping_sub(lrcv) as i32) > 0 {
        rcv
    } else {
        lrcv
    };
    Ok(now.wrapping_sub(last))
}

/// Where a socket is, from the `sock_common` part every socket kind has
/// (full, time-wait and request sockets alike).
#[inline(always)]
pub fn tuple(sk: u64) -> Result<Tuple, i64> {
    let mut t = Tuple {
        family: read::<u16>(sk, config!(skc_family))?,
        sport: read::<u16>(sk, config!(skc_num))?,
        dport: u16::from_be(read::<u16>(sk, config!(skc_dport))?),
        state: read::<u8>(sk, config!(skc_state))?,
        netns: read::<u32>(net(sk)?, config!(net_ns_inum))?,
        ..Tuple::default()
    };
    if t.family == AF_INET6 {
        t.saddr = read::<[u8; 16]>(sk, config!(skc_v6_rcv_saddr))?;
        t.daddr = read::<[u8; 16]>(sk, config!(skc_v6_daddr))?;
    } else {
        let s = read::<[u8; 4]>(sk, config!(skc_rcv_saddr))?;
        let d = read::<[u8; 4]>(sk, config!(skc_daddr))?;
        t.saddr[..4].copy_from_slice(&s);
        t.daddr[..4].copy_from_slice(&d);
    }
    Ok(t)
}

/// Reads `sk`'s tuple into a record's `tuple` and marks it `flag::HAS_TUPLE`.
#[inline(always)]
pub fn fill_tuple(tuple: &mut Tuple, flags: &mut u8, sk: u64) -> Result<(), i64> {
    *tuple = self::tuple(sk)?;
    *flags |= flag::HAS_TUPLE;
    Ok(())
}

/// The socket part of a keepalive timer's event: addresses, settings and
/// the idle time at `now` (jiffies). Best effort per field: a failed read
/// is counted and leaves the field 0. Call after setting `ev.flags`
/// (`HAS_TUPLE` is added to them).
#[inline(always)]
pub fn fill_keepalive(ev: &mut Event, sk: u64, now: u32) {
    ev.idle_jiffies = idle_jiffies(sk, now).unwrap_or(0);
    let _ = fill_tuple(&mut ev.tuple, &mut ev.flags, sk);
    let _ = settings(sk, &mut ev.settings);
}
