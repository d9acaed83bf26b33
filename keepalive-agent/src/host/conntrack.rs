//! A network namespace's own conntrack, a middlebox on the node: it
//! forgets idle flows after `net.netfilter.nf_conntrack_tcp_timeout_established`
//! as a load balancer does. Read like the keepalive sysctls, on a thread
//! inside the namespace (see `sysctl`'s module doc).

use std::fs;

use serde::Serialize;

/// A namespace's own conntrack: a middlebox on the node that forgets idle
/// flows too. Read only where it is active (`nf_conntrack_count` > 0: some
/// rule or NAT of that namespace uses it).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_tcp_timeout_established`, seconds.
    pub timeout_established_s: u32,
    /// `net.netfilter.nf_conntrack_tcp_loose`: 1 picks a flow up again
    /// mid-stream after expiry; 0 makes its next packet invalid (dropped,
    /// or rejected with an RST, as the ruleset says).
    pub loose: bool,
    /// `net.netfilter.nf_conntrack_count`: entries now.
    pub entries: u32,
}

const TIMEOUT_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";
const LOOSE_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose";
const COUNT_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// The calling thread's namespace's conntrack; None where conntrack is
/// not loaded, not visible, or tracks nothing.
pub fn read() -> Option<Conntrack> {
    let entries = read_u32(COUNT_PATH).filter(|n| *n > 0)?;
    Some(Conntrack {
        timeout_established_s: read_u32(TIMEOUT_PATH)?,
        loose: read_u32(LOOSE_PATH)? != 0,
        entries,
    })
}

fn read_u32(path: &str) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
