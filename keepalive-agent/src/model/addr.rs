//! Socket addresses out of the kernel's byte arrays (network byte order,
//! IPv4 in the first four bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use keepalive_common::Tuple;

const AF_INET6: u16 = 10;

pub fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    }
}

/// (local, remote) of a socket's tuple.
pub fn endpoints(t: &Tuple) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(ip(t.family, &t.saddr), t.sport),
        SocketAddr::new(ip(t.family, &t.daddr), t.dport),
    )
}
