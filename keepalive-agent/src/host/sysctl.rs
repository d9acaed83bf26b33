//! The TCP keepalive sysctls of a network namespace —
//! `net.ipv4.tcp_keepalive_time`, `tcp_keepalive_intvl` (seconds) and
//! `tcp_keepalive_probes` (count) — which are the defaults of every socket
//! there that enables SO_KEEPALIVE without setting TCP_KEEPIDLE,
//! TCP_KEEPINTVL or TCP_KEEPCNT; and a watch that reports when they change.
//!
//! Which namespace `/proc/sys/net` shows: the kernel resolves the `net`
//! subtree against `current->nsproxy->net_ns` when a file is opened
//! (`net_ctl_header_lookup`), i.e. against the opening *thread's*
//! namespace, and the open file stays tied to that namespace's table. So
//! reading `/proc/sys/net/...` on a thread that did `setns` (as
//! `netns::run_in` does) gives that namespace's values, while the agent's
//! other threads keep seeing their own. Checked on 6.18: a thread in a
//! namespace set to 123 read 123 while the main thread read 7200, and a file
//! opened in the namespace still read 123 when read from the main thread.
//! (`/proc/net`, by contrast, is `/proc/self/net` and follows the
//! thread-group leader; we do not use it.)
//!
//! What it does not do: it does not write sysctls, and it does not know the
//! per-socket overrides; those come from the BPF side.

use std::{collections::HashMap, fs, io};

use serde::Serialize;

use super::{
    conntrack::{self, Conntrack},
    netns,
};

const TIME: &str = "net.ipv4.tcp_keepalive_time";
const INTVL: &str = "net.ipv4.tcp_keepalive_intvl";
const PROBES: &str = "net.ipv4.tcp_keepalive_probes";

const TIME_PATH: &str = "/proc/sys/net/ipv4/tcp_keepalive_time";
const INTVL_PATH: &str = "/proc/sys/net/ipv4/tcp_keepalive_intvl";
const PROBES_PATH: &str = "/proc/sys/net/ipv4/tcp_keepalive_probes";

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("reading {path} failed: {source}")]
    Read {
        path: &'static str,
        source: io::Error,
    },
    #[error("{path} holds {text:?}, which is not a non-negative 32-bit number")]
    Parse { path: &'static str, text: String },
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

/// A namespace's keepalive defaults.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveSysctls {
    /// Idle seconds before the first probe.
    pub time_s: u32,
    /// Seconds between probes.
    pub intvl_s: u32,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
    /// The namespace's conntrack, where it tracks flows.
    pub conntrack: Option<Conntrack>,
}

/// The values of the calling thread's network namespace (see the module
/// doc for why the thread, not the process, decides).
pub fn read_current() -> Result<KeepaliveSysctls, SysctlError> {
    Ok(KeepaliveSysctls {
        time_s: read_one(TIME_PATH)?,
        intvl_s: read_one(INTVL_PATH)?,
        probes: read_one(PROBES_PATH)?,
        conntrack: conntrack::read(),
    })
}

/// One namespace's reading: its inode, its cookie (None before 5.14: a
/// namespace that reuses a dead one's inode is told apart by it) and its
/// values.
pub type Reading = (u64, Option<u64>, Result<KeepaliveSysctls, SysctlError>);

/// The values of every network namespace on the node.
pub fn read_all() -> Result<Vec<Reading>, netns::NetnsError> {
    Ok(netns::all()?
        .into_iter()
        .map(|ns| {
            let read = netns::run_in(&ns.path, || {
                (netns::cookie().ok().flatten(), read_current())
            });
            match read {
                Ok((cookie, result)) => (ns.inode, cookie, result),
                Err(e) => (ns.inode, None, Err(SysctlError::from(e))),
            }
        })
        .collect())
}

fn read_one(path: &'static str) -> Result<u32, SysctlError> {
    let text = fs::read_to_string(path).map_err(|source| SysctlError::Read { path, source })?;
    // The kernel prints "%d\n". tcp_keepalive_time and _intvl are plain
    // ints in jiffies that a write may set negative; those are refused here
    // rather than wrapped.
    text.trim().parse().map_err(|_| SysctlError::Parse {
        path,
        text: text.trim().chars().take(32).collect(),
    })
}

/// One sysctl of one namespace that changed between two polls.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The namespace inode.
    pub netns: u64,
    /// The sysctl's dotted name, e.g. `net.ipv4.tcp_keepalive_time`.
    pub name: &'static str,
    pub old: u32,
    pub new: u32,
}

/// Remembers every namespace's values and reports changes. Holds one entry
/// per namespace that exists now: namespaces gone at a poll are forgotten.
/// A namespace seen for the first time is recorded without a change. A
/// namespace whose values cannot be read this time keeps its last values.
/// (Namespace inodes can be reused after a namespace dies; a new namespace
/// that gets a vanished one's inode between two polls shows up as changes.)
#[derive(Debug, Default)]
pub struct SysctlWatch {
    last: HashMap<u64, KeepaliveSysctls>,
    cookies: HashMap<u64, u64>,
}

/// What a poll found.
#[derive(Debug, Default)]
pub struct Polled {
    pub changes: Vec<Change>,
    /// Namespaces gone since the last poll (or replaced by one that took
    /// their inode): what was said of them must be forgotten.
    pub gone: Vec<u64>,
    /// Namespaces read, and the errors of those that could not be.
    pub read: usize,
    pub errors: Vec<SysctlError>,
}

impl SysctlWatch {
    /// A watch whose baseline is the values of every namespace now.
    pub fn new() -> Self {
        let mut watch = SysctlWatch::default();
        if let Err(e) = watch.poll() {
            log::warn!("keepalive sysctls: {e}");
        }
        watch
    }

    /// Re-reads every namespace and returns what changed since the last
    /// poll, ordered by namespace inode and then time, intvl, probes.
    /// Reads every namespace's sysctls; when the namespaces cannot be
    /// listed, the last readings stay and the error is returned.
    pub fn poll(&mut self) -> Result<Polled, netns::NetnsError> {
        Ok(self.apply(read_all()?))
    }

    /// The values as of the last poll, by namespace inode.
    pub fn current(&self) -> &HashMap<u64, KeepaliveSysctls> {
        &self.last
    }

    fn apply(&mut self, mut readings: Vec<Reading>) -> Polled {
        readings.sort_by_key(|(inode, _, _)| *inode);
        let mut changes = Vec::new();
        let mut gone = Vec::new();
        let mut next = HashMap::with_capacity(readings.len());
        let mut cookies = HashMap::with_capacity(readings.len());
        let (mut read, mut errors) = (0, Vec::new());
        for (netns, cookie, result) in readings {
            if let Some(cookie) = cookie {
                cookies.insert(netns, cookie);
                // The same inode, another namespace: the old one is gone
                // and this one is new (no "change" between the two).
                if self.cookies.get(&netns).is_some_and(|old| *old != cookie) {
                    self.last.remove(&netns);
                    gone.push(netns);
                }
            }
            let now = match result {
                Ok(now) => now,
                Err(e) => {
                    log::debug!("keepalive sysctls of netns {netns}: {e}");
                    if let Some(old) = self.last.get(&netns) {
                        next.insert(netns, *old);
                    }
                    errors.push(e);
                    continue;
                }
            };
            if let Some(old) = self.last.get(&netns) {
                for (name, old, new) in [
                    (TIME, old.time_s, now.time_s),
                    (INTVL, old.intvl_s, now.intvl_s),
                    (PROBES, old.probes, now.probes),
                ] {
                    if old != new {
                        changes.push(Change {
                            netns,
                            name,
                            old,
                            new,
                        });
                    }
                }
            }
            next.insert(netns, now);
            read += 1;
        }
        gone.extend(self.last.keys().filter(|n| !next.contains_key(n)));
        self.last = next;
        self.cookies = cookies;
        Polled {
            changes,
            gone,
            read,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt as _, path::PathBuf, process::Command};

    use super::*;

    /// A namespace made with `ip netns add`, deleted again on drop.
    struct TempNetns {
        name: String,
        path: PathBuf,
    }

    impl TempNetns {
        fn new(tag: &str) -> Self {
            let name = format!("kat-{tag}-{}", std::process::id());
            run("ip", &["netns", "add", &name]);
            TempNetns {
                path: PathBuf::from("/run/netns").join(&name),
                name,
            }
        }

        fn inode(&self) -> u64 {
            fs::metadata(&self.path).expect("stat netns").ino()
        }

        fn set(&self, assignment: &str) {
            run(
                "ip",
                &[
                    "netns", "exec", &self.name, "sysctl", "-q", "-w", assignment,
                ],
            );
        }
    }

    impl Drop for TempNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn run(cmd: &str, args: &[&str]) {
        let status = Command::new(cmd).args(args).status().expect("spawn");
        assert!(status.success(), "{cmd} {args:?}: {status}");
    }

    fn ours(ns: &TempNetns) -> KeepaliveSysctls {
        let all = read_all().expect("namespaces listed");
        let (_, _, result) = all
            .into_iter()
            .find(|(inode, _, _)| *inode == ns.inode())
            .expect("temporary namespace listed");
        result.expect("read")
    }

    #[test]
    fn sysctl_follows_the_thread_namespace() {
        let ns = TempNetns::new("sysctl");
        ns.set("net.ipv4.tcp_keepalive_time=123");
        ns.set("net.ipv4.tcp_keepalive_intvl=7");
        ns.set("net.ipv4.tcp_keepalive_probes=4");
        let want = KeepaliveSysctls {
            time_s: 123,
            intvl_s: 7,
            probes: 4,
            conntrack: None,
        };
        let inside = netns::run_in(&ns.path, read_current)
            .expect("enter")
            .expect("read");
        assert_eq!(inside, want);
        assert_eq!(ours(&ns), want);
        // The test thread never left its namespace, so it must not see 123
        // unless its own namespace happens to be set the same.
        let here = read_current().expect("read here");
        let me = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata("/proc/self/ns/net").expect("current netns"),
        );
        let listed = read_all()
            .expect("namespaces listed")
            .into_iter()
            .find(|(inode, _, _)| *inode == me)
            .expect("own namespace listed")
            .2
            .expect("read own");
        assert_eq!(here, listed);
        assert_ne!(ns.inode(), me);

        let mut watch = SysctlWatch::new();
        assert_eq!(watch.current().get(&ns.inode()), Some(&want));
        let changes_of_ns = |watch: &mut SysctlWatch| -> Vec<Change> {
            let polled = watch.poll().expect("namespaces listed");
            polled
                .changes
                .into_iter()
                .filter(|c| c.netns == ns.inode())
                .collect()
        };
        let quiet = changes_of_ns(&mut watch);
        assert!(quiet.is_empty(), "{quiet:?}");
        ns.set("net.ipv4.tcp_keepalive_time=456");
        let changes = changes_of_ns(&mut watch);
        assert_eq!(
            changes,
            [Change {
                netns: ns.inode(),
                name: "net.ipv4.tcp_keepalive_time",
                old: 123,
                new: 456,
            }]
        );

        // Gone namespaces are forgotten.
        let inode = ns.inode();
        drop(ns);
        let _ = watch.poll();
        assert!(!watch.current().contains_key(&inode));
    }

    #[test]
    fn sysctl_watch_bookkeeping() {
        let v = |time_s, intvl_s, probes| KeepaliveSysctls {
            time_s,
            intvl_s,
            probes,
            conntrack: None,
        };
        let mut watch = SysctlWatch::default();
        let polled = watch.apply(vec![(1, Some(11), Ok(v(7200, 75, 9)))]);
        assert!(polled.changes.is_empty() && polled.gone.is_empty());
        // A failed read keeps the old values and reports nothing; a new
        // namespace is recorded silently.
        let failed = Err(SysctlError::Parse {
            path: TIME_PATH,
            text: "-1".into(),
        });
        let polled = watch.apply(vec![(1, Some(11), failed), (2, Some(12), Ok(v(1, 2, 3)))]);
        assert!(polled.changes.is_empty() && polled.gone.is_empty());
        assert_eq!(watch.current().get(&1), Some(&v(7200, 75, 9)));
        let polled = watch.apply(vec![
            (2, Some(12), Ok(v(1, 5, 4))),
            (1, Some(11), Ok(v(7200, 75, 9))),
        ]);
        assert_eq!(
            polled.changes,
            [
                Change {
                    netns: 2,
                    name: INTVL,
                    old: 2,
                    new: 5
                },
                Change {
                    netns: 2,
                    name: PROBES,
                    old: 3,
                    new: 4
                },
            ]
        );
        // Namespace 1 is gone; 2's inode is taken by a new namespace: both
        // are gone, and the new one's values are no change.
        let polled = watch.apply(vec![(2, Some(99), Ok(v(7200, 75, 9)))]);
        assert!(polled.changes.is_empty(), "{:?}", polled.changes);
        let mut gone = polled.gone;
        gone.sort_unstable();
        assert_eq!(gone, [1, 2]);
        assert_eq!(watch.current().len(), 1);
    }
}
