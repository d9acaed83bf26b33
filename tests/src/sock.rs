//! Sockets the way applications make them: SO_KEEPALIVE plus per-socket
//! TCP_KEEPIDLE/INTVL/CNT, through socket2.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

/// Keepalive as `setsockopt` sets it: idle, interval (seconds), count.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub idle: u32,
    pub intvl: u32,
    pub cnt: u32,
}

pub const FAST: Keepalive = Keepalive {
    idle: 1,
    intvl: 1,
    cnt: 3,
};

/// Connects to `to`, with keepalive set before connecting when given.
pub fn connect(to: SocketAddr, keepalive: Option<Keepalive>) -> TcpStream {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
        .expect("creating a TCP socket");
    if let Some(k) = keepalive {
        set_keepalive(&socket, k);
    }
    socket
        .connect(&to.into())
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    socket.into()
}

pub fn set_keepalive(socket: &Socket, k: Keepalive) {
    let params = TcpKeepalive::new()
        .with_time(Duration::from_secs(k.idle.into()))
        .with_interval(Duration::from_secs(k.intvl.into()))
        .with_retries(k.cnt);
    socket
        .set_tcp_keepalive(&params)
        .expect("setting keepalive options");
}

/// A listener on `addr` (port 0: any).
pub fn listen(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}"))
}

/// The socket's cookie (SO_COOKIE), the key the agent reports.
pub fn cookie(stream: &TcpStream) -> u64 {
    let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "SO_COOKIE: {}", std::io::Error::last_os_error());
    cookie
}

/// The calling thread's name as the kernel stores it (`comm`).
pub fn thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .expect("reading /proc/thread-self/comm")
        .trim_end()
        .to_string()
}
