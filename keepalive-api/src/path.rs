//! One row of `/paths`: what the agent learned of a destination group's
//! idle timeout from the connections that crossed it.

use serde::{Deserialize, Serialize};

/// An idle gap the agent saw end, and when (Unix seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub idle_s: f64,
    pub seen_at: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathRow {
    /// The destination group: a configured `--idle-timeout` destination
    /// (`10.0.0.0/8:5432`), else the remote /24 or /64 and the service
    /// port (`192.0.2.0/24:5432`), or `other` past `--max-paths`.
    pub path: String,
    /// Lower bound: the longest idle gap a connection survived (then
    /// received data or a probe ACK, no reset). The path's timeout is longer.
    pub survived: Option<Gap>,
    /// Upper bound: the shortest idle gap that ended in an idle reset or
    /// an idle blackhole. The path's timeout is at most this.
    pub fatal: Option<Gap>,
    /// Idle gaps survived, idle resets and idle blackholes seen.
    pub survived_count: u64,
    pub resets: u64,
    pub blackholes: u64,
    /// Known profiles whose timeout lies in (survived, fatal]; empty when
    /// no fatal gap was seen or none fits.
    pub consistent_with: Vec<String>,
    /// Established sockets on the path now, and those of them at risk.
    pub sockets: u64,
    pub at_risk: u64,
    /// The idle gaps at which its servers closed connections we opened
    /// (their FIN after silence); none seen: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_close: Option<IdleCloseRange>,
}

/// A server's idle closes: it closes connections idle for `min_s` to
/// `max_s` (a fixed timeout shows a tight range).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleCloseRange {
    pub min_s: f64,
    pub max_s: f64,
    pub count: u64,
    /// When the latest was seen (Unix seconds).
    pub seen_at: f64,
}
