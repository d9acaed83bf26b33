//! `/proc/net/netstat` TcpExt counters of a network namespace: the kernel's
//! own count of keepalive probes (`TCPKeepAlive`, incremented in
//! `tcp_xmit_probe_skb`) is the oracle the agent's count must equal.

use std::{collections::BTreeMap, fs, os::unix::fs::MetadataExt as _};

use crate::{proc::pids, world::in_netns_at};

/// A TcpExt counter as seen by the calling thread's namespace.
/// `/proc/thread-self/net` follows the thread's namespace (after setns),
/// where `/proc/self/net` would follow the main thread's.
pub fn tcp_ext(name: &str) -> u64 {
    let text = fs::read_to_string("/proc/thread-self/net/netstat")
        .expect("reading /proc/thread-self/net/netstat");
    parse(&text, "TcpExt:", name)
        .unwrap_or_else(|| panic!("TcpExt {name} not in /proc/net/netstat"))
}

/// A TcpExt counter of the network namespace process `pid` is in.
pub fn tcp_ext_of(pid: u32, name: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/net/netstat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/net/netstat: {e}"));
    parse(&text, "TcpExt:", name)
        .unwrap_or_else(|| panic!("TcpExt {name} not in /proc/{pid}/net/netstat"))
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

/// Packets the kernel dropped from its per-CPU input backlogs
/// (`/proc/net/softnet_stat`, second column, summed over CPUs): a burst of
/// probes over loopback beyond `net.core.netdev_max_backlog` is sent (and
/// counted in `TCPKeepAlive`) but never answered.
pub fn softnet_dropped() -> u64 {
    fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// `TCPKeepAlive` of every network namespace reachable now (through a
/// process living in it or an `ip netns` mount), by namespace inode.
pub fn keepalive_probes_everywhere() -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for pid in pids() {
        let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if out.contains_key(&meta.ino()) {
            continue;
        }
        if let Some(v) = fs::read_to_string(format!("/proc/{pid}/net/netstat"))
            .ok()
            .and_then(|t| parse(&t, "TcpExt:", "TCPKeepAlive"))
        {
            out.insert(meta.ino(), v);
        }
    }
    for (inode, path) in crate::world::named_namespaces() {
        if out.contains_key(&inode) {
            continue;
        }
        let v = in_netns_at(&path, || {
            fs::read_to_string("/proc/thread-self/net/netstat")
                .ok()
                .and_then(|t| parse(&t, "TcpExt:", "TCPKeepAlive"))
        });
        if let Some(v) = v.flatten() {
            out.insert(inode, v);
        }
    }
    out
}

/// Probes sent node-wide between two [`keepalive_probes_everywhere`]
/// snapshots (a namespace born in between counts from zero).
pub fn probes_between(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> u64 {
    after
        .iter()
        .map(|(ns, v)| v.saturating_sub(before.get(ns).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pairs() {
        let t = "TcpExt: A TCPKeepAlive\nTcpExt: 1 42\nIpExt: X\nIpExt: 3\n";
        assert_eq!(super::parse(t, "TcpExt:", "TCPKeepAlive"), Some(42));
        assert_eq!(super::parse(t, "TcpExt:", "Nope"), None);
    }

    #[test]
    fn sums_probe_deltas() {
        let before = super::BTreeMap::from([(1, 10), (2, 5)]);
        let after = super::BTreeMap::from([(1, 12), (2, 5), (3, 4)]);
        assert_eq!(super::probes_between(&before, &after), 6);
    }
}
