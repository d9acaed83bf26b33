//! Traffic the tests share.

use std::time::Duration;

use crate::{
    netstat::tcp_ext,
    sock::{self, FAST},
};

/// A 1/1/3 keepalive client idles on loopback of the calling thread's
/// namespace for `idle`; returns (cookie, local endpoint, TCPKeepAlive delta
/// of that namespace over the same window).
pub fn idle_keepalive_client(listen_on: &str, idle: Duration) -> (u64, std::net::SocketAddr, u64) {
    let listener = sock::listen(listen_on.parse().expect("listen address"));
    let before = tcp_ext("TCPKeepAlive");
    let client = sock::connect(listener.local_addr().expect("local addr"), Some(FAST));
    let (_server, _) = listener.accept().expect("accept");
    std::thread::sleep(idle);
    let delta = tcp_ext("TCPKeepAlive") - before;
    (
        sock::cookie(&client),
        client.local_addr().expect("local addr"),
        delta,
    )
}

/// What [`zero_window_sender`] saw the kernel do.
pub struct ZeroWindow {
    pub cookie: u64,
    /// TCPKeepAlive and TCPWinProbe deltas of the namespace.
    pub keepalive_probes: u64,
    pub window_probes: u64,
}

/// A 1/1/3 keepalive client on loopback of the calling thread's namespace
/// writes to a server that never reads, until the server's window is shut;
/// for `wait` the client's write timer then sends zero-window probes, which
/// look on the wire exactly like keepalive probes (pure ACK, seq =
/// snd_una - 1), while keepalive sends none (data is queued).
pub fn zero_window_sender(wait: Duration) -> ZeroWindow {
    use std::io::Write as _;

    use socket2::{Domain, Protocol, Socket, Type};

    // A small receive buffer (set before listen, so accepted sockets get
    // it) fills at once.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    listener.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    listener.bind(&any.into()).expect("bind");
    listener.listen(1).expect("listen");
    let listener: std::net::TcpListener = listener.into();
    let before = (tcp_ext("TCPKeepAlive"), tcp_ext("TCPWinProbe"));
    let mut client = sock::connect(listener.local_addr().expect("local addr"), Some(FAST));
    let (_server, _) = listener.accept().expect("accept");
    client.set_nonblocking(true).expect("non-blocking");
    let chunk = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    // Until the send buffer is full too: the rest stays queued.
    loop {
        match client.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("writing to a reader that never reads: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the send buffer never filled"
        );
    }
    std::thread::sleep(wait);
    ZeroWindow {
        cookie: sock::cookie(&client),
        keepalive_probes: tcp_ext("TCPKeepAlive") - before.0,
        window_probes: tcp_ext("TCPWinProbe") - before.1,
    }
}
