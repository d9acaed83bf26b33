//! A middlebox that forgets idle flows, built for real: a client and a
//! server namespace joined through a router namespace that forwards with
//! conntrack (`nf_conntrack_tcp_timeout_established` a few seconds,
//! `nf_conntrack_tcp_loose=0`, so an expired flow's next packet is
//! invalid), and an nftables forward rule that then either rejects it with
//! a TCP reset (like an AWS NLB, an Azure LB with TCP reset, a conntrack
//! reject) or drops it (like an Azure LB without reset, most NATs).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    thread,
};

use crate::{
    sock,
    world::{Netns, load_nft, veth},
};

/// What the middlebox does with a packet of a flow it forgot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forget {
    /// `reject with tcp reset`.
    Reset,
    /// `drop`.
    Drop,
}

pub const CLIENT_V4: &str = "192.0.2.1";
pub const SERVER_V4: &str = "198.51.100.2";
pub const CLIENT_V6: &str = "2001:db8:1::1";
pub const SERVER_V6: &str = "2001:db8:2::2";

/// Client, router and server namespaces; removed when dropped.
pub struct Middlebox {
    pub client: Netns,
    pub server: Netns,
    pub router: Netns,
    pub timeout_s: u32,
    pub forget: Forget,
}

impl Middlebox {
    /// A router that forgets a flow idle for `timeout_s` seconds.
    pub fn new(timeout_s: u32, forget: Forget) -> Middlebox {
        let mb = Middlebox {
            client: Netns::new("kmc"),
            server: Netns::new("kms"),
            router: Netns::new("kmr"),
            timeout_s,
            forget,
        };
        mb.link(
            &mb.client,
            ("192.0.2.254", "2001:db8:1::fe"),
            (CLIENT_V4, CLIENT_V6),
        );
        mb.link(
            &mb.server,
            ("198.51.100.254", "2001:db8:2::fe"),
            (SERVER_V4, SERVER_V6),
        );
        let r = &mb.router;
        r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        r.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // The ct rule makes conntrack track this namespace's flows; its
        // sysctls exist from then on.
        let verdict = match forget {
            Forget::Reset => "reject with tcp reset",
            Forget::Drop => "drop",
        };
        let rules = format!(
            "table inet kamb {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority 0; policy accept;\n\
             \t\tmeta l4proto tcp ct state invalid {verdict}\n\
             \t}}\n\
             }}\n"
        );
        load_nft(r, &rules);
        r.exec(&[
            "sysctl",
            "-qw",
            &format!("net.netfilter.nf_conntrack_tcp_timeout_established={timeout_s}"),
        ]);
        r.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"]);
        mb
    }

    /// A veth from the router to `ns`, the router at `(r4, r6)`, `ns` at
    /// `(a4, a6)` with its default routes through the router.
    fn link(&self, ns: &Netns, (r4, r6): (&str, &str), (a4, a6): (&str, &str)) {
        veth((&self.router, r4, r6), (ns, a4, a6));
        ns.exec(&["ip", "route", "add", "default", "via", r4]);
        ns.exec(&["ip", "-6", "route", "add", "default", "via", r6]);
    }

    pub fn forgets_by_reset(&self) -> bool {
        self.forget == Forget::Reset
    }

    /// An echo server in the server namespace (IPv6 when `v6`): each
    /// connection gets back what it sends, until it closes.
    pub fn echo_server(&self, v6: bool) -> SocketAddr {
        let ip: IpAddr = if v6 { SERVER_V6 } else { SERVER_V4 }.parse().unwrap();
        let listener: TcpListener = self.server.run(|| sock::listen(SocketAddr::new(ip, 0)));
        let to = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        to
    }
}

/// One request and its echo.
pub fn exchange(mut s: &TcpStream) -> std::io::Result<()> {
    s.write_all(b"ping")?;
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)
}

/// A client in `ns` connected to `to`: (stream, its cookie, the connecting
/// thread's comm).
pub fn client(
    ns: &Netns,
    to: SocketAddr,
    keepalive: Option<sock::Keepalive>,
) -> (TcpStream, u64, String) {
    let (s, comm) = ns.run(|| (sock::connect(to, keepalive), sock::thread_comm()));
    let cookie = sock::cookie(&s);
    (s, cookie, comm)
}

/// The `/paths` name of connections to `to`: its /24 or /64 and port.
pub fn path_of(to: SocketAddr) -> String {
    match to {
        SocketAddr::V4(a) => {
            let o = a.ip().octets();
            format!("{}.{}.{}.0/24:{}", o[0], o[1], o[2], a.port())
        }
        SocketAddr::V6(a) => {
            let s = a.ip().segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("[{net}]/64:{}", a.port())
        }
    }
}
