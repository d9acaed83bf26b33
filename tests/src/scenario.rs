//! Traffic the tests share.

use std::time::Duration;

use crate::{
    netstat::tcp_ext,
    sock::{self, FAST},
};

/// A 1/1/3 keepalive client idles on loopback of the calling thread's
/// namespace for `idle`; returns (cookie, local endpoint, TCPKeepAlive delta
/// of that namespace over the same window).
pub fn idle_keepalive_client(listen_on: &str, idle: Duration) -> (u64, String, u64) {
    let listener = sock::listen(listen_on.parse().expect("listen address"));
    let before = tcp_ext("TCPKeepAlive");
    let client = sock::connect(listener.local_addr().expect("local addr"), Some(FAST));
    let (_server, _) = listener.accept().expect("accept");
    std::thread::sleep(idle);
    let delta = tcp_ext("TCPKeepAlive") - before;
    (
        sock::cookie(&client),
        sock::endpoint(client.local_addr().expect("local addr")),
        delta,
    )
}
