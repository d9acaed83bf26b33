//! `/proc/net/netstat` TcpExt counters of a network namespace: the kernel's
//! own count of keepalive probes (`TCPKeepAlive`, incremented in
//! `tcp_xmit_probe_skb`) is the oracle the agent's count must equal.

use std::fs;

/// A TcpExt counter as seen by the calling thread's namespace.
/// `/proc/thread-self/net` follows the thread's namespace (after setns),
/// where `/proc/self/net` would follow the main thread's.
pub fn tcp_ext(name: &str) -> u64 {
    let text = fs::read_to_string("/proc/thread-self/net/netstat")
        .expect("reading /proc/thread-self/net/netstat");
    parse(&text, "TcpExt:", name)
        .unwrap_or_else(|| panic!("TcpExt {name} not in /proc/net/netstat"))
}

/// A `Tcp:` counter of `/proc/net/snmp` (e.g. `RetransSegs`) as seen by
/// the calling thread's namespace.
pub fn tcp_snmp(name: &str) -> u64 {
    let text = fs::read_to_string("/proc/thread-self/net/snmp")
        .expect("reading /proc/thread-self/net/snmp");
    parse(&text, "Tcp:", name).unwrap_or_else(|| panic!("Tcp {name} not in /proc/net/snmp"))
}

fn parse(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = header.iter().position(|h| *h == name)?;
    values.get(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pairs() {
        let t = "TcpExt: A TCPKeepAlive\nTcpExt: 1 42\nIpExt: X\nIpExt: 3\n";
        assert_eq!(super::parse(t, "TcpExt:", "TCPKeepAlive"), Some(42));
        assert_eq!(super::parse(t, "TcpExt:", "Nope"), None);
    }
}
