//! The value parsers of the command line's flags: each bad value is a
//! one-line error naming what was expected (clap prints it, exit 2).

use std::net::SocketAddr;

pub fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| format!("{e} (an address such as 127.0.0.1:9978)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the per-socket endpoints stay on this node",
            addr.ip()
        ));
    }
    Ok(addr)
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("{0:?}: the level must be one of off, error, warn, info, debug, trace")]
    LogLevel(String),
    #[error("{0}")]
    NotANumber(#[from] std::num::ParseIntError),
    #[error("must be a power of two from 4096 to 268435456 (256 MiB)")]
    RingSize,
    #[error("{0:?} is not an interface name or NAME* pattern (1 to 15 characters)")]
    Interface(String),
}

/// `LEVEL` or `TARGET=LEVEL`, comma-separated (env_logger's syntax), with
/// a known level: a typo must not silently turn logging off.
pub fn parse_log_level(s: &str) -> Result<String, ArgError> {
    for part in s.split(',') {
        let level = part.rsplit_once('=').map_or(part, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(ArgError::LogLevel(part.to_string()));
        }
    }
    Ok(s.to_string())
}

/// The largest ring buffer: 256 MiB holds over a million events.
pub const MAX_RING_BYTES: u32 = 256 << 20;

pub fn parse_gap_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: expected seconds between 0.01 and 86400")),
    }
}

pub fn parse_ring_size(s: &str) -> Result<u32, ArgError> {
    let n: u32 = s.parse()?;
    if !(4096..=MAX_RING_BYTES).contains(&n) || !n.is_power_of_two() {
        return Err(ArgError::RingSize);
    }
    Ok(n)
}

/// An interface name or prefix pattern: not empty (an empty list would
/// attach nowhere), no longer than a Linux interface name (IFNAMSIZ − 1).
pub fn parse_interface_pattern(s: &str) -> Result<String, ArgError> {
    let name = s.strip_suffix('*').unwrap_or(s);
    if s.is_empty() || name.len() > 15 || name.contains(['/', ' ', '*']) {
        return Err(ArgError::Interface(s.to_string()));
    }
    Ok(s.to_string())
}
