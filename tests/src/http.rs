//! The one HTTP client of the tests: GETs through ureq, and a raw request
//! for what ureq will not send (malformed targets, stalled clients).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

/// GET `http://ADDR PATH` with this Accept header: (status, body).
pub fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    get_url(&format!("http://{addr}{path}"), accept)
}

/// GET `url`: (status, body); panics when nothing answers.
pub fn get_url(url: &str, accept: &str) -> (u16, String) {
    try_get(url, accept).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET `url`: (status, body), or why nothing came back (for polling a
/// server that is still starting).
pub fn try_get(url: &str, accept: &str) -> Result<(u16, String), ureq::Error> {
    get_within(url, accept, None)
}

/// GET `url` within `timeout` (the whole exchange): (status, body), or
/// why nothing (or not all of it) came back in time.
pub fn get_within(
    url: &str,
    accept: &str,
    timeout: Option<Duration>,
) -> Result<(u16, String), ureq::Error> {
    let resp = ureq::get(url)
        .header("Accept", accept)
        .config()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .call()?;
    let status = resp.status().as_u16();
    // A `/sockets` of 100k sockets is tens of MiB: past ureq's 10 MiB default.
    let body = resp
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_string()?;
    Ok((status, body))
}

/// One raw HTTP/1.1 GET with `Connection: close`: the status code, or None
/// when nothing (or no status line) came back within `timeout`.
pub fn raw_get_status(addr: &str, target: &[u8], timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    s.write_all(&req).ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 200 {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&line);
    text.split_whitespace().nth(1)?.parse().ok()
}
