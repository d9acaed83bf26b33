//! Builds the kernel programs' [`KernelConfig`]: struct member offsets from
//! the running kernel's BTF (with the alternative names members had across
//! kernel versions) and the timer callbacks' addresses. Any member that
//! cannot be resolved is an error naming it; nothing falls back to a
//! constant compiled for one kernel.

use keepalive_common::{KernelConfig, NOT_RESOLVED};

use super::{
    btf::{Btf, BtfError, Member},
    kallsyms::{self, KallsymsError},
};

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("resolving kernel struct layout from BTF: {0}")]
    Btf(#[from] BtfError),
    #[error("finding timer callbacks: {0}")]
    Kallsyms(#[from] KallsymsError),
    #[error("{what} is {size} bytes on this kernel; the programs read 1 or 4")]
    UnexpectedSize { what: &'static str, size: u32 },
    #[error("{what} lies at byte {offset}, beyond what the programs address")]
    TooFar { what: &'static str, offset: u32 },
}

/// Resolves everything against `btf` and `/proc/kallsyms`.
pub fn resolve(btf: &Btf) -> Result<KernelConfig, OffsetsError> {
    let addrs = kallsyms::lookup(&["tcp_keepalive_timer", "tcp_write_timer"])?;
    let sock = |paths: &[&str]| btf.member_any("tcp_sock", paths);
    // The keepalive timer was `sk_timer` in struct sock; newer kernels (and
    // stable backports, e.g. Debian's 6.1.1xx) move TCP's into
    // inet_connection_sock as `icsk_keepalive_timer` and keep `sk_timer`
    // for other protocols: where both exist, the icsk one is TCP's.
    let keepalive_timer = sock(&[
        "inet_conn.icsk_keepalive_timer",
        "inet_conn.icsk_inet.sk.sk_timer",
        "inet_conn.icsk_inet.sk.sk_keepalive_timer",
    ])?;
    let common = |name: &str| btf.member("sock_common", name);
    let net = |paths: &[&str]| btf.member_any("net", paths);
    let probes = btf.find_member("tcp_sock", "keepalive_probes")?;
    let net_probes = net(&["ipv4.sysctl_tcp_keepalive_probes"])?;
    let retransmits = btf.find_member("inet_connection_sock", "icsk_retransmits")?;
    let retries2 = net(&["ipv4.sysctl_tcp_retries2"])?;
    let syn_retries = net(&["ipv4.sysctl_tcp_syn_retries"])?;
    let sk_protocol = btf.find_member("sock", "sk_protocol");

    Ok(KernelConfig {
        keepalive_timer_fn: addrs[0],
        write_timer_fn: addrs[1],
        sock_keepalive_timer: keepalive_timer.offset,
        icsk_retransmit_timer: btf.find_member("tcp_sock", "icsk_retransmit_timer")?.offset,
        timer_function: btf.member("timer_list", "function")?.offset,
        skc_cookie: common("skc_cookie")?.offset,
        skc_net: common("skc_net")?.offset,
        net_ns_inum: net(&["ns.inum"])?.offset,
        net_keepalive_time: net(&["ipv4.sysctl_tcp_keepalive_time"])?.offset,
        net_keepalive_intvl: net(&["ipv4.sysctl_tcp_keepalive_intvl"])?.offset,
        net_keepalive_probes: net_probes.offset,
        net_retries2: retries2.offset,
        net_syn_retries: syn_retries.offset,
        sk_socket: btf.member("sock", "sk_socket")?.offset,
        socket_alloc_inode: btf.member("socket_alloc", "vfs_inode")?.offset,
        inode_ino: btf.member("inode", "i_ino")?.offset,
        timer_expires: btf.member("timer_list", "expires")?.offset,
        timer_pending_link: btf.member("timer_list", "entry.pprev")?.offset,
        skc_state: common("skc_state")?.offset,
        skc_family: common("skc_family")?.offset,
        skc_daddr: common("skc_daddr")?.offset,
        skc_rcv_saddr: common("skc_rcv_saddr")?.offset,
        skc_dport: common("skc_dport")?.offset,
        skc_num: common("skc_num")?.offset,
        skc_v6_daddr: common("skc_v6_daddr")?.offset,
        skc_v6_rcv_saddr: common("skc_v6_rcv_saddr")?.offset,
        skc_flags: common("skc_flags")?.offset,
        sk_err: btf.member("sock", "sk_err")?.offset,
        // A bitfield before 5.6: then the programs skip the protocol check
        // (offset 0), the tracepoints only fire for TCP sockets there anyway.
        sk_protocol: match sk_protocol {
            Ok(m) => m.offset,
            Err(BtfError::Bitfield { .. }) => 0,
            Err(e) => return Err(e.into()),
        },
        icsk_probes_out: btf.find_member("tcp_sock", "icsk_probes_out")?.offset,
        icsk_retransmits: retransmits.offset,
        icsk_user_timeout: btf.find_member("tcp_sock", "icsk_user_timeout")?.offset,
        icsk_ack_lrcvtime: btf
            .member("tcp_sock", "inet_conn.icsk_ack.lrcvtime")?
            .offset,
        tp_keepalive_time: btf.find_member("tcp_sock", "keepalive_time")?.offset,
        tp_keepalive_intvl: btf.find_member("tcp_sock", "keepalive_intvl")?.offset,
        tp_keepalive_probes: probes.offset,
        tp_snd_una: btf.find_member("tcp_sock", "snd_una")?.offset,
        tp_rcv_tstamp: btf.find_member("tcp_sock", "rcv_tstamp")?.offset,
        tp_retrans_stamp: btf.find_member("tcp_sock", "retrans_stamp")?.offset,
        // Both have had these names since the tracepoints this agent
        // needs exist (4.15; `srtt` became `srtt_us` in 3.15).
        tp_lsndtime: btf.find_member("tcp_sock", "lsndtime")?.offset,
        tp_srtt_us: btf.find_member("tcp_sock", "srtt_us")?.offset,
        // Delivery-rate sampling (4.10+).
        tp_first_tx_mstamp: btf.find_member("tcp_sock", "first_tx_mstamp")?.offset,
        // kuid_t since 4.10, long before the tracepoints this agent needs.
        sk_uid: btf.member("sock", "sk_uid")?.offset,
        // Only the setsockopt hook needs it: without it that hook is off.
        sockopt_kern_sk: btf
            .member("bpf_sockopt_kern", "sk")
            .map_or(NOT_RESOLVED, |m| m.offset),
        tp_keepalive_probes_size: byte_or_int("tcp_sock.keepalive_probes", probes)?,
        net_keepalive_probes_size: byte_or_int("net.ipv4.sysctl_tcp_keepalive_probes", net_probes)?,
        icsk_retransmits_size: byte_or_int("inet_connection_sock.icsk_retransmits", retransmits)?,
        net_retries2_size: byte_or_int("net.ipv4.sysctl_tcp_retries2", retries2)?,
        net_syn_retries_size: byte_or_int("net.ipv4.sysctl_tcp_syn_retries", syn_retries)?,
        sock_keepopen_bit: keepopen_bit(btf)?,
        enabled: 1,
        _pad: [0; 1],
        // Set by the loader from --max-sockets.
        socket_share: 0,
    })
}

fn byte_or_int(what: &'static str, member: Member) -> Result<u8, OffsetsError> {
    match member.size {
        1 => Ok(1),
        4 => Ok(4),
        size => Err(OffsetsError::UnexpectedSize { what, size }),
    }
}

fn keepopen_bit(btf: &Btf) -> Result<u8, OffsetsError> {
    let bit = btf.enum_value("sock_flags", "SOCK_KEEPOPEN")?;
    u8::try_from(bit)
        .ok()
        .filter(|b| *b < 64)
        .ok_or(OffsetsError::TooFar {
            what: "SOCK_KEEPOPEN",
            offset: bit as u32,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against this machine's kernel: every member resolves, and the values
    /// that have to agree with each other do.
    #[test]
    fn resolves_on_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let cfg = match resolve(&btf) {
            Ok(cfg) => cfg,
            // kallsyms needs root; the BTF part is what this test is about.
            Err(OffsetsError::Kallsyms(e)) => {
                eprintln!("kallsyms unavailable ({e}): skipped");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_ne!(cfg.keepalive_timer_fn, 0);
        assert_eq!(cfg.sock_keepopen_bit, 3);
        assert!(cfg.icsk_probes_out > cfg.sock_keepalive_timer);
        assert!(cfg.tp_keepalive_time > cfg.icsk_probes_out);
        // sock_common sits at the start of struct sock.
        assert!(cfg.skc_cookie < 136);
    }
}
