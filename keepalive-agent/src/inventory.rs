//! An inventory of every TCP socket of a network namespace, taken through
//! sock_diag netlink the way `ss -tanoe` does: one `SOCK_DIAG_BY_FAMILY`
//! dump with `struct inet_diag_req_v2` (protocol TCP, every state) for
//! `AF_INET` and one for `AF_INET6`.
//!
//! Besides telling us which sockets exist, the dump has a side effect we
//! rely on: for every socket it reports, the kernel fills `idiag_cookie`
//! through `sock_diag_save_cookie()`, which calls `sock_gen_cookie()`. That
//! assigns the socket its cookie if it had none yet, so after a dump every
//! socket that existed before the agent started carries the same cookie our
//! BPF programs key sockets by (`bpf_get_socket_cookie()` reads the same
//! `sk_cookie`).
//!
//! What it does not do: it asks for no extensions (`idiag_ext = 0`), so no
//! `tcp_info`, memory or congestion data, and attributes the kernel appends
//! anyway are skipped. It does not resolve owners (see `owners`) and it sees
//! only the namespace of the calling thread; `dump_all` visits the others.
//! Sockets that appear or go away during the dump may or may not be listed,
//! as with `ss`.

use std::{
    io,
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use serde::Serialize;

use crate::netns;

/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct inet_diag_req_v2)`: family, protocol, ext, pad (4 bytes),
/// states (4), `struct inet_diag_sockid` (48).
const REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`: family, state, timer, retrans (4 bytes),
/// `struct inet_diag_sockid` (48), expires, rqueue, wqueue, uid, inode (20).
const MSG_LEN: usize = 72;
/// Every TCP state, `TCP_NEW_SYN_RECV` and `TCP_TIME_WAIT` included: the
/// kernel tests `idiag_states & (1 << state)`, so all bits set excludes
/// nothing.
const ALL_STATES: u32 = 0xffff_ffff;
/// The receive buffer. The kernel sizes dump skbs from the largest read
/// buffer it has seen on the socket but caps that at 32 KiB
/// (`netlink_recvmsg`), so a 32 KiB buffer always holds a whole datagram.
const RECV_BUF: usize = 32 * 1024;
/// How long one read may wait. The kernel answers a dump at once; this only
/// keeps a misbehaving kernel from hanging the agent.
const RECV_TIMEOUT_S: libc::time_t = 5;
/// At most this many sockets per namespace are kept, so that memory stays
/// bounded (about 100 bytes each) on a node with a runaway socket count.
pub const MAX_SOCKETS: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("opening a sock_diag netlink socket failed: {0}")]
    Open(io::Error),
    #[error("sending the TCP socket dump request to the kernel failed: {0}")]
    Send(io::Error),
    #[error("reading the TCP socket dump from the kernel failed: {0}")]
    Receive(io::Error),
    #[error("the kernel refused the TCP socket dump for address family {family}: {source}")]
    Kernel { family: u8, source: io::Error },
    #[error("the kernel sent a malformed sock_diag message: {0}")]
    Malformed(&'static str),
    #[error("the namespace has more than {0} TCP sockets; the inventory was abandoned")]
    TooMany(usize),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

/// One TCP socket as `inet_diag` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiagSocket {
    /// The socket cookie, the key our BPF programs use.
    pub cookie: u64,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// The TCP state (`TCP_ESTABLISHED` = 1 … `TCP_LISTEN` = 10,
    /// `TCP_NEW_SYN_RECV` = 12).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The sockfs inode, as in `socket:[INODE]`; 0 for time-wait and
    /// request sockets, which have no file.
    pub inode: u64,
    pub uid: u32,
    /// `idiag_timer`: 0 none, 1 retransmit, 2 keepalive (`sk_timer`),
    /// 3 time-wait, 4 zero-window probe.
    pub timer: u8,
    /// Milliseconds until that timer fires.
    pub timer_expires_ms: u32,
    /// `idiag_retrans`: for the keepalive and zero-window timers the kernel
    /// puts `icsk_probes_out` here, for the retransmit timer
    /// `icsk_retransmits`.
    pub retrans: u8,
}

/// Every TCP socket of the calling thread's network namespace, IPv4 first.
pub fn dump() -> Result<Vec<DiagSocket>, InventoryError> {
    // SAFETY: plain syscall; the fd, if any, is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(InventoryError::Open(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: RECV_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: `timeout` is a valid timeval of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(InventoryError::Open(io::Error::last_os_error()));
    }

    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    for (seq, family) in [(1, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        send_request(&fd, seq, family)?;
        receive_dump(&fd, seq, family, &mut buf, &mut out)?;
    }
    Ok(out)
}

/// The inventory of every network namespace on the node, by namespace
/// inode. A namespace that cannot be entered (it went away) carries the
/// error instead.
pub fn dump_all() -> Vec<(u64, Result<Vec<DiagSocket>, InventoryError>)> {
    netns::all()
        .into_iter()
        .map(|ns| {
            let result = netns::run_in(&ns.path, dump)
                .map_err(InventoryError::from)
                .and_then(|inner| inner);
            (ns.inode, result)
        })
        .collect()
}

/// Sends one dump request: `struct nlmsghdr` + `struct inet_diag_req_v2`.
fn send_request(fd: &OwnedFd, seq: u32, family: u8) -> Result<(), InventoryError> {
    let mut msg = [0u8; NLMSG_HDRLEN + REQ_LEN];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg[0..4].copy_from_slice(&(msg.len() as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    let req = &mut msg[NLMSG_HDRLEN..];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    // req[2] idiag_ext = 0: no extensions; req[3] pad.
    req[4..8].copy_from_slice(&ALL_STATES.to_ne_bytes());
    // The socket id stays zero: dumps ignore it.

    // SAFETY: zeroed sockaddr_nl is valid; nl_pid 0 addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: buffer and address are valid for the lengths we pass.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const kernel).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent >= 0 {
            return if sent as usize == msg.len() {
                Ok(())
            } else {
                Err(InventoryError::Send(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short netlink write",
                )))
            };
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(InventoryError::Send(err));
        }
    }
}

/// Reads the multi-part answer to request `seq` until `NLMSG_DONE`.
fn receive_dump(
    fd: &OwnedFd,
    seq: u32,
    family: u8,
    buf: &mut [u8],
    out: &mut Vec<DiagSocket>,
) -> Result<(), InventoryError> {
    loop {
        // MSG_TRUNC makes netlink return the datagram's full length, so a
        // datagram larger than our buffer is detected instead of cut.
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(InventoryError::Receive(err));
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(InventoryError::Malformed(
                "a dump datagram was larger than the receive buffer",
            ));
        }
        if n == 0 {
            return Err(InventoryError::Malformed(
                "the dump ended without NLMSG_DONE",
            ));
        }
        if parse_datagram(&buf[..n], seq, family, out)? {
            return Ok(());
        }
    }
}

/// Parses the netlink messages of one datagram into `out`. True when the
/// dump is complete.
fn parse_datagram(
    mut data: &[u8],
    seq: u32,
    family: u8,
    out: &mut Vec<DiagSocket>,
) -> Result<bool, InventoryError> {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_ne(data, 0) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let msg_seq = u32_ne(data, 8);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(InventoryError::Malformed(
                "a netlink message length is out of bounds",
            ));
        }
        let payload = &data[NLMSG_HDRLEN..len];
        // Messages are padded to 4 bytes (NLMSG_ALIGN); the last may not be.
        data = &data[len.next_multiple_of(4).min(data.len())..];
        if msg_seq != seq {
            // Not an answer to this request (a late part of an earlier one
            // cannot happen on a fresh socket, but costs nothing to skip).
            continue;
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => {
                // The kernel puts the dump's final status in the payload
                // (`netlink_dump_done`); negative means the dump failed.
                if payload.len() >= 4 {
                    let status = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    if status < 0 {
                        return Err(InventoryError::Kernel {
                            family,
                            source: io::Error::from_raw_os_error(-status),
                        });
                    }
                }
                return Ok(true);
            }
            libc::NLMSG_ERROR => {
                // struct nlmsgerr: int error, then the offending header.
                if payload.len() < 4 {
                    return Err(InventoryError::Malformed("NLMSG_ERROR without an error code"));
                }
                let error = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if error == 0 {
                    // An acknowledgement, not an error; dumps end with DONE.
                    continue;
                }
                return Err(InventoryError::Kernel {
                    family,
                    source: io::Error::from_raw_os_error(-error),
                });
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                if out.len() >= MAX_SOCKETS {
                    return Err(InventoryError::TooMany(MAX_SOCKETS));
                }
                out.push(parse_msg(payload)?);
            }
            // NLMSG_NOOP, NLMSG_OVERRUN and anything newer: nothing for us.
            _ => {}
        }
    }
    Ok(false)
}

/// Parses one `struct inet_diag_msg`. Attributes after it are ignored.
fn parse_msg(msg: &[u8]) -> Result<DiagSocket, InventoryError> {
    if msg.len() < MSG_LEN {
        return Err(InventoryError::Malformed("an inet_diag_msg is too short"));
    }
    let family = msg[0];
    let id = &msg[4..52];
    // Ports and addresses are in network byte order; the 16 address bytes
    // are the address exactly as it goes on the wire (IPv4 uses the first 4).
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let src: [u8; 16] = id[4..20].try_into().map_err(|_| bad_id())?;
    let dst: [u8; 16] = id[20..36].try_into().map_err(|_| bad_id())?;
    let ifindex = u32_ne(id, 36);
    // sock_diag_save_cookie(): cookie[0] = (u32)res, cookie[1] = res >> 32,
    // each in host byte order.
    let cookie = u64::from(u32_ne(id, 44)) << 32 | u64::from(u32_ne(id, 40));
    let addr = |bytes: [u8; 16], port: u16| -> Result<SocketAddr, InventoryError> {
        match i32::from(family) {
            libc::AF_INET => {
                let ip = Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            libc::AF_INET6 => {
                let ip = Ipv6Addr::from(bytes);
                // idiag_if is sk_bound_dev_if; it is the scope only for
                // link-local addresses, which are meaningless without one.
                let scope = if ip.is_unicast_link_local() { ifindex } else { 0 };
                Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)))
            }
            _ => Err(InventoryError::Malformed(
                "an inet_diag_msg has an unknown address family",
            )),
        }
    };
    Ok(DiagSocket {
        cookie,
        family: u16::from(family),
        state: msg[1],
        local: addr(src, sport)?,
        remote: addr(dst, dport)?,
        inode: u64::from(u32_ne(msg, 68)),
        uid: u32_ne(msg, 64),
        timer: msg[2],
        timer_expires_ms: u32_ne(msg, 52),
        retrans: msg[3],
    })
}

fn bad_id() -> InventoryError {
    InventoryError::Malformed("an inet_diag_sockid is too short")
}

/// A host-order u32 at `at`; callers have checked the length.
fn u32_ne(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream},
        os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    };

    use super::*;

    const TCP_ESTABLISHED: u8 = 1;
    const TCP_LISTEN: u8 = 10;

    fn inode(fd: &impl AsRawFd) -> u64 {
        // stat() through /proc/self/fd follows to the sockfs inode, the
        // same number fstat() gives and `socket:[N]` shows.
        std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("stat socket fd")
            .ino()
    }

    fn so_cookie(fd: &impl AsRawFd) -> u64 {
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        // SAFETY: `cookie` is a u64 of the length we pass.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_COOKIE,
                (&raw mut cookie).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "SO_COOKIE: {}", io::Error::last_os_error());
        cookie
    }

    fn find(all: &[DiagSocket], local: SocketAddr, remote_port: u16) -> &DiagSocket {
        all.iter()
            .find(|s| s.local == local && s.remote.port() == remote_port)
            .unwrap_or_else(|| panic!("{local} -> :{remote_port} not in the dump"))
    }

    fn check(bind: &str, family: i32) {
        let listener = TcpListener::bind(bind).expect("bind");
        let server_addr = listener.local_addr().expect("local_addr");
        let client = TcpStream::connect(server_addr).expect("connect");
        let (accepted, client_addr) = listener.accept().expect("accept");

        let all = dump().expect("dump");
        let l = find(&all, server_addr, 0);
        assert_eq!(l.state, TCP_LISTEN);
        assert_eq!(l.family, family as u16);
        assert_eq!(l.inode, inode(&listener));
        assert_ne!(l.cookie, 0);
        // SAFETY: getuid cannot fail.
        assert_eq!(l.uid, unsafe { libc::getuid() });

        let c = find(&all, client_addr, server_addr.port());
        assert_eq!(c.state, TCP_ESTABLISHED);
        assert_eq!(c.remote, server_addr);
        assert_eq!(c.inode, inode(&client));
        assert_ne!(c.cookie, 0);

        let a = find(&all, server_addr, client_addr.port());
        assert_eq!(a.state, TCP_ESTABLISHED);
        assert_eq!(a.remote, client_addr);
        assert_eq!(a.inode, inode(&accepted));
        assert_ne!(a.cookie, 0);

        let cookies = [l.cookie, c.cookie, a.cookie];
        assert!(cookies[0] != cookies[1] && cookies[1] != cookies[2] && cookies[0] != cookies[2]);
    }

    #[test]
    fn inventory_finds_ipv4_sockets() {
        check("127.0.0.1:0", libc::AF_INET);
    }

    #[test]
    fn inventory_finds_ipv6_sockets() {
        check("[::1]:0", libc::AF_INET6);
    }

    #[test]
    fn inventory_cookie_matches_so_cookie() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let client = TcpStream::connect(addr).expect("connect");
        let (_accepted, _) = listener.accept().expect("accept");
        // Dump first, so that the cookie is generated by the dump and the
        // SO_COOKIE read afterwards must return the same one. Cookies are
        // small numbers, so swapped words would give `c << 32` and fail.
        let all = dump().expect("dump");
        let local = client.local_addr().expect("local_addr");
        let c = find(&all, local, addr.port());
        assert_eq!(c.cookie, so_cookie(&client));
        let l = find(&all, addr, 0);
        assert_eq!(l.cookie, so_cookie(&listener));
    }

    #[test]
    fn inventory_of_every_namespace_includes_ours() {
        let me = netns::current().expect("current netns");
        let all = dump_all();
        let ours = all
            .iter()
            .find(|(inode, _)| *inode == me.inode)
            .expect("our namespace is listed");
        assert!(ours.1.is_ok(), "{:?}", ours.1);
    }

    #[test]
    fn inventory_rejects_truncated_messages() {
        let mut out = Vec::new();
        // A header claiming 100 bytes in a 20-byte datagram.
        let mut data = [0u8; 20];
        data[0..4].copy_from_slice(&100u32.to_ne_bytes());
        data[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(parse_datagram(&data, 1, libc::AF_INET as u8, &mut out).is_err());
        // A diag message shorter than inet_diag_msg.
        let mut data = [0u8; 20];
        data[0..4].copy_from_slice(&20u32.to_ne_bytes());
        data[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        data[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(parse_datagram(&data, 1, libc::AF_INET as u8, &mut out).is_err());
        assert!(out.is_empty());
    }
}
