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

/// How a program reads a socket's members, and the members it reads.
pub trait Memory {
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64>;

    /// A member that is `u8` on some kernels and `int` on others.
    #[inline(always)]
    fn read_sized(base: u64, offset: u32, size: u8) -> Result<u32, i64> {
        if size == 1 {
            Self::read::<u8>(base, offset).map(u32::from)
        } else {
            Self::read::<u32>(base, offset)
        }
    }

    /// `sk->sk_cookie`; 0 when nothing generated it yet.
    #[inline(always)]
    fn cookie(sk: u64) -> Result<u64, i64> {
        Self::read::<u64>(sk, config!(skc_cookie))
    }

    #[inline(always)]
    fn probes_out(sk: u64) -> Result<u8, i64> {
        Self::read::<u8>(sk, config!(icsk_probes_out))
    }

    #[inline(always)]
    fn keepalive_on(sk: u64) -> Result<bool, i64> {
        let flags = Self::read::<u64>(sk, config!(skc_flags))?;
        Ok(flags >> (config!(sock_keepopen_bit) & 63) & 1 == 1)
    }

    /// `sk->sk_net`: the socket's `struct net`.
    #[inline(always)]
    fn net(sk: u64) -> Result<u64, i64> {
        Self::read::<u64>(sk, config!(skc_net))
    }

    /// The socket's own keepalive options and its namespace's sysctls.
    #[inline(always)]
    fn settings(sk: u64, out: &mut KeepaliveSettings) -> Result<(), i64> {
        out.sock_time = Self::read::<u32>(sk, config!(tp_keepalive_time))?;
        out.sock_intvl = Self::read::<u32>(sk, config!(tp_keepalive_intvl))?;
        out.sock_probes = Self::read_sized(
            sk,
            config!(tp_keepalive_probes),
            config!(tp_keepalive_probes_size),
        )?;
        let net = Self::net(sk)?;
        out.net_time = Self::read::<u32>(net, config!(net_keepalive_time))?;
        out.net_intvl = Self::read::<u32>(net, config!(net_keepalive_intvl))?;
        out.net_probes = Self::read_sized(
            net,
            config!(net_keepalive_probes),
            config!(net_keepalive_probes_size),
        )?;
        Ok(())
    }

    /// `icsk_retransmits`: RTO retransmissions since the last forward progress.
    #[inline(always)]
    fn retransmits(sk: u64) -> Result<u32, i64> {
        Self::read_sized(
            sk,
            config!(icsk_retransmits),
            config!(icsk_retransmits_size),
        )
    }

    /// Jiffies since the last data segment was sent (`tp->lsndtime`, set by
    /// `tcp_event_data_sent`).
    #[inline(always)]
    fn since_send_jiffies(sk: u64, now: u32) -> Result<u32, i64> {
        Ok(now.wrapping_sub(Self::read::<u32>(sk, config!(tp_lsndtime))?))
    }

    /// Jiffies since the last data received (`icsk_ack.lrcvtime`, set by
    /// tcp_event_data_recv and at connection set-up; pure ACKs and a bare
    /// FIN leave it alone).
    #[inline(always)]
    fn since_data_received_jiffies(sk: u64, now: u32) -> Result<u32, i64> {
        Ok(now.wrapping_sub(Self::read::<u32>(sk, config!(icsk_ack_lrcvtime))?))
    }

    /// Smoothed RTT in µs (`tp->srtt_us` holds it << 3).
    #[inline(always)]
    fn srtt_us(sk: u64) -> Result<u32, i64> {
        Ok(Self::read::<u32>(sk, config!(tp_srtt_us))? >> 3)
    }

    /// The namespace's tcp_retries2 and tcp_syn_retries.
    #[inline(always)]
    fn retries(sk: u64) -> Result<(u8, u8), i64> {
        let net = Self::net(sk)?;
        let r2 = Self::read_sized(net, config!(net_retries2), config!(net_retries2_size))?;
        let syn = Self::read_sized(net, config!(net_syn_retries), config!(net_syn_retries_size))?;
        Ok((r2 as u8, syn as u8))
    }

    /// Jiffies since the last segment was received, as `keepalive_time_elapsed`
    /// computes it (tcp.h): now - max(icsk_ack.lrcvtime, rcv_tstamp).
    #[inline(always)]
    fn idle_jiffies(sk: u64, now: u32) -> Result<u32, i64> {
        let lrcv = Self::read::<u32>(sk, config!(icsk_ack_lrcvtime))?;
        let rcv = Self::read::<u32>(sk, config!(tp_rcv_tstamp))?;
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
    fn tuple(sk: u64) -> Result<Tuple, i64> {
        let mut t = Tuple {
            family: Self::read::<u16>(sk, config!(skc_family))?,
            sport: Self::read::<u16>(sk, config!(skc_num))?,
            dport: u16::from_be(Self::read::<u16>(sk, config!(skc_dport))?),
            state: Self::read::<u8>(sk, config!(skc_state))?,
            netns: Self::read::<u32>(Self::net(sk)?, config!(net_ns_inum))?,
            ..Tuple::default()
        };
        if t.family == AF_INET6 {
            t.saddr = Self::address6(sk, config!(skc_v6_rcv_saddr))?;
            t.daddr = Self::address6(sk, config!(skc_v6_daddr))?;
        } else {
            let s = Self::read::<u32>(sk, config!(skc_rcv_saddr))?;
            let d = Self::read::<u32>(sk, config!(skc_daddr))?;
            t.saddr[..4].copy_from_slice(&s.to_ne_bytes());
            t.daddr[..4].copy_from_slice(&d.to_ne_bytes());
        }
        Ok(t)
    }

    /// An `in6_addr`, read as two words.
    #[inline(always)]
    fn address6(sk: u64, offset: u32) -> Result<[u8; 16], i64> {
        let high = Self::read::<u64>(sk, offset)?;
        let low = Self::read::<u64>(sk, offset + 8)?;
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&high.to_ne_bytes());
        a[8..].copy_from_slice(&low.to_ne_bytes());
        Ok(a)
    }

    /// Reads `sk`'s tuple into a record's `tuple` and marks it `flag::HAS_TUPLE`.
    #[inline(always)]
    fn fill_tuple(tuple: &mut Tuple, flags: &mut u8, sk: u64) -> Result<(), i64> {
        *tuple = Self::tuple(sk)?;
        *flags |= flag::HAS_TUPLE;
        Ok(())
    }
}

/// Any kernel address, through `bpf_probe_read_kernel`: what hooks whose
/// arguments are plain integers (a `timer_list`, a socket from a map) use.
pub struct Probed;

impl Memory for Probed {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
        read(base, offset)
    }

    /// One helper call for the 16 bytes.
    #[inline(always)]
    fn address6(sk: u64, offset: u32) -> Result<[u8; 16], i64> {
        read(sk, offset)
    }
}

/// Plain loads through a pointer the verifier knows the BTF type of (the
/// iterator's `sock_common`, `bpf_skc_to_tcp_sock`'s `tcp_sock`, and the
/// pointers loaded from them): the JIT guards each load (BPF_PROBE_MEM)
/// instead of calling a helper, and the verifier checks every offset (a
/// constant: CONFIG is frozen read-only data) against the member it names.
pub struct Loaded;

impl Memory for Loaded {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i64> {
        // SAFETY: the verifier admits only loads inside a member of the
        // pointer's BTF type; a fault reads as zero rather than oops.
        Ok(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
    }
}

/// The socket part of a keepalive timer's event: addresses, settings and
/// the idle time at `now` (jiffies). Best effort per field: a failed read
/// is counted and leaves the field 0. Call after setting `ev.flags`
/// (`HAS_TUPLE` is added to them).
#[inline(always)]
pub fn fill_keepalive(ev: &mut Event, sk: u64, now: u32) {
    ev.idle_jiffies = Probed::idle_jiffies(sk, now).unwrap_or(0);
    let _ = Probed::fill_tuple(&mut ev.tuple, &mut ev.flags, sk);
    let _ = Probed::settings(sk, &mut ev.settings);
}
