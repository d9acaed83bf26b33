//! Test hosts: network namespaces joined by veth pairs, with TEST-NET
//! addresses, and nftables rules to make a peer vanish. Each piece removes
//! itself when dropped, also when the test fails.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short name for this process (interface names are ≤ 15 chars).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace made with `ip netns add`, loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// The namespace's inode, as the agent reports it.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(self.path()).expect("stat netns").ino()
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs `work` on a thread inside the namespace (sockets it creates
    /// belong to the namespace and stay there when moved out).
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("opening netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on an fd we own; changes this thread only.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                work()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` at 192.0.2.1/24 and
/// 2001:db8::1/64, `b` at .2 / ::2 (TEST-NET-1 and the documentation prefix).
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

pub const A_V4: &str = "192.0.2.1";
pub const B_V4: &str = "192.0.2.2";
pub const A_V6: &str = "2001:db8::1";
pub const B_V6: &str = "2001:db8::2";

impl Pair {
    pub fn new() -> Pair {
        let a = Netns::new("kaa");
        let b = Netns::new("kab");
        veth((&a, A_V4, A_V6), (&b, B_V4, B_V6));
        Pair { a, b }
    }
}

/// A veth pair between two namespaces, each end up with its IPv4 /24 and
/// IPv6 /64 address (no duplicate address detection).
pub fn veth(a: (&Netns, &str, &str), b: (&Netns, &str, &str)) {
    let (va, vb) = (unique("va"), unique("vb"));
    sh(&[
        "ip", "link", "add", &va, "netns", &a.0.name, "type", "veth", "peer", "name", &vb, "netns",
        &b.0.name,
    ]);
    for ((ns, v4, v6), dev) in [(a, &va), (b, &vb)] {
        ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            dev,
            "nodad",
        ]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// Loads an nftables ruleset into `ns` from a file (multi-line rules:
/// `nft -f`, where words such as `fwd` are no trouble).
pub fn load_nft(ns: &Netns, rules: &str) {
    with_nft_file(rules, |path| ns.exec(&["nft", "-f", path]));
}

/// Loads an nftables ruleset into the network namespace of process `pid`
/// (a container's), as [`load_nft`] does for a named one.
pub fn load_nft_at(pid: u32, rules: &str) {
    with_nft_file(rules, |path| {
        sh(&["nsenter", "-t", &pid.to_string(), "-n", "nft", "-f", path]);
    });
}

/// `rules` in a temporary file, for `run` to load by its path.
fn with_nft_file(rules: &str, run: impl FnOnce(&str)) {
    let file = std::env::temp_dir().join(format!("{}.nft", unique("kanft")));
    std::fs::write(&file, rules).expect("writing the nftables rules");
    run(&file.to_string_lossy());
    let _ = std::fs::remove_file(&file);
}

/// Drops every packet arriving in `ns` (the peer is gone, as behind a dead
/// NAT or load balancer). Removed with the namespace.
pub fn drop_all_input(ns: &Netns) {
    ns.exec(&["nft", "add", "table", "inet", "katest"]);
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "inet",
        "katest",
        "input",
        "{ type filter hook input priority 0 ; policy drop ; }",
    ]);
}

/// Runs `f` on a thread inside the network namespace at `path`; None when
/// it cannot be entered (gone, or not a namespace).
pub fn in_netns_at<T: Send>(path: &std::path::Path, f: impl FnOnce() -> T + Send) -> Option<T> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on an fd we own; this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some(f())
        })
        .join()
        .ok()
        .flatten()
    })
}

/// `ip netns` namespaces, by inode.
pub fn named_namespaces() -> std::collections::BTreeMap<u64, std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut found = std::collections::BTreeMap::new();
    if let Ok(named) = std::fs::read_dir("/run/netns") {
        for entry in named.flatten() {
            if let Ok(meta) = std::fs::metadata(entry.path()) {
                found.entry(meta.ino()).or_insert(entry.path());
            }
        }
    }
    found
}

/// Every network namespace reachable now (named, or through a process), by inode.
fn namespace_paths() -> std::collections::BTreeMap<u64, std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut found = named_namespaces();
    for pid in crate::proc::pids() {
        let path: std::path::PathBuf = format!("/proc/{pid}/ns/net").into();
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    }
    found
}

/// Interfaces in every network namespace reachable now (what the agent's
/// default `--interfaces '*'` covers).
pub fn interfaces_everywhere() -> usize {
    namespace_paths()
        .values()
        .filter_map(|path| {
            in_netns_at(path, || {
                // Follows the thread's namespace (/sys/class/net does not).
                let dev = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
                Some(dev.lines().skip(2).count())
            })
            .flatten()
        })
        .sum()
}
