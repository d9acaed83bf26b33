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

/// A reply read as it streams, never held whole.
#[derive(Debug, Clone, Copy)]
pub struct Streamed {
    pub status: u16,
    /// From the request to the first byte of the body.
    pub first_byte: Duration,
    /// From the request to the body's end.
    pub whole: Duration,
    pub bytes: u64,
    /// Occurrences of the `marker` passed in (e.g. one per JSON row).
    pub marked: u64,
}

/// GET `url` and read its body in 64 KiB pieces, counting bytes and the
/// occurrences of `marker` (also across pieces), keeping none of it.
pub fn get_streamed(url: &str, marker: &[u8]) -> Result<Streamed, ureq::Error> {
    let started = std::time::Instant::now();
    let resp = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    // The piece's last marker.len()-1 bytes, joined to the next piece.
    let mut carry: Vec<u8> = Vec::new();
    let (mut bytes, mut marked, mut first_byte) = (0u64, 0u64, None);
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| started.elapsed());
        bytes += n as u64;
        carry.extend_from_slice(&buf[..n]);
        if !marker.is_empty() {
            marked += carry.windows(marker.len()).filter(|w| *w == marker).count() as u64;
            let keep = carry.len().min(marker.len() - 1);
            carry.drain(..carry.len() - keep);
        } else {
            carry.clear();
        }
    }
    let whole = started.elapsed();
    Ok(Streamed {
        status,
        first_byte: first_byte.unwrap_or(whole),
        whole,
        bytes,
        marked,
    })
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
