//! Attaches the TC classifiers (egress and ingress) to the interfaces of
//! every network namespace, and keeps doing so as namespaces and interfaces
//! come and go. Attaching happens inside each namespace (a socket's probes
//! leave through its own namespace's interface, where the kernel still tells
//! TC which socket sent them). TCX links where the kernel has them (6.6+),
//! netlink clsact filters otherwise.
//!
//! The two kinds come apart differently. A TCX link is a file descriptor:
//! closing it detaches, from any thread. A netlink filter is only
//! (ifindex, parent, priority, handle), and aya deletes it through a
//! netlink socket of the *calling thread's* namespace: dropped from the
//! agent's main thread it would miss its own interface and delete the
//! filter with the same ifindex in the agent's namespace (every `lo` is
//! ifindex 1, every first filter priority 49152 handle 1). So netlink
//! filters are detached inside their own namespace, and never dropped
//! anywhere else: when their interface or namespace is gone, the kernel
//! has already removed them with it.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    programs::{SchedClassifier, TcAttachType, links::Link as _, tc},
    util::KernelVersion,
};
use log::{info, warn};

use crate::netns::{self, Netns};

pub const EGRESS_PROG: &str = "tc_egress";
pub const INGRESS_PROG: &str = "tc_ingress";

/// Which interfaces get classifiers: names matching any pattern (`*` at the
/// end matches any suffix; `*` alone matches all).
#[derive(Clone, Debug)]
pub struct InterfaceFilter(pub Vec<String>);

impl InterfaceFilter {
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }
}

/// One interface with both classifiers attached.
struct Attachment {
    name: String,
    /// The path its namespace was entered by when attaching.
    path: PathBuf,
    links: Links,
}

/// Both links of one interface. Never dropped as they are: see the module
/// documentation; [`Links::detach_in`] or [`Links::forget`] consume them.
struct Links {
    egress: tc::SchedClassifierLink,
    ingress: tc::SchedClassifierLink,
}

impl Links {
    /// The interface or its namespace is gone, and the kernel removed its
    /// filters with it: release the links without deleting anything.
    fn forget(self) {
        forget(self.egress);
        forget(self.ingress);
    }

    /// Detaches both classifiers (see [`detach_in`]).
    fn detach_in(self, path: &Path, inode: u64) -> Result<(), String> {
        detach_in(path, inode, vec![self.egress, self.ingress])
    }
}

fn is_netlink(link: &tc::SchedClassifierLink) -> bool {
    // Only netlink links have a priority.
    link.priority().is_ok()
}

/// Releases a link whose interface is gone without deleting anything.
fn forget(link: tc::SchedClassifierLink) {
    if is_netlink(&link) {
        // A netlink link holds no resource: forgetting it only skips the
        // delete that would run in the wrong namespace.
        std::mem::forget(link);
    }
    // A TCX link's fd is closed on drop: that is all it needs.
}

/// Detaches links: TCX links by closing them, netlink filters from inside
/// the namespace `inode`, reached through `path`. A namespace that cannot
/// be entered (any more) took its filters with it: those are forgotten.
fn detach_in(path: &Path, inode: u64, links: Vec<tc::SchedClassifierLink>) -> Result<(), String> {
    let (netlink, tcx): (Vec<_>, Vec<_>) = links.into_iter().partition(is_netlink);
    let mut result: Result<(), String> = Ok(());
    for l in tcx {
        if let Err(e) = l.detach() {
            result = Err(e.to_string());
        }
    }
    if netlink.is_empty() {
        return result;
    }
    let mut pending = Some(netlink);
    let entered = netns::run_in(path, || {
        // A /proc/<pid>/ns/net path may now lead to another process's
        // namespace: delete nothing there.
        let here = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino());
        if here.ok() != Some(inode) {
            return Err(format!("{} is no longer netns {inode}", path.display()));
        }
        let mut result = Ok(());
        for l in pending.take().unwrap_or_default() {
            if let Err(e) = l.detach() {
                result = Err(e.to_string());
            }
        }
        result
    });
    for l in pending.take().unwrap_or_default() {
        forget(l);
    }
    result.and(entered.map_err(|e| e.to_string())?)
}

/// An interface by its namespace and ifindex. The namespace is its inode
/// and its cookie: a deleted namespace's inode is reused by the next one,
/// whose `lo` is ifindex 1 again; the cookie never is (`None` before 5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Interface {
    inode: u64,
    ns_cookie: Option<u64>,
    ifindex: u32,
}

#[derive(Default)]
pub struct TcAttacher {
    attached: BTreeMap<Interface, Attachment>,
    /// Failures already logged, so a broken interface does not flood logs.
    failed: BTreeMap<Interface, String>,
}

/// What one sync changed.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub attached: usize,
    pub detached: usize,
    pub failed: usize,
    pub total: usize,
}

impl TcAttacher {
    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    /// Names of attached interfaces as "netns:ifname".
    pub fn interfaces(&self) -> Vec<String> {
        self.attached
            .iter()
            .map(|(key, a)| format!("{}:{}", key.inode, a.name))
            .collect()
    }

    /// Attaches to new interfaces and forgets vanished ones.
    pub fn sync(&mut self, ebpf: &mut aya::Ebpf, filter: &InterfaceFilter) -> SyncReport {
        let mut report = SyncReport::default();
        let mut seen = Vec::new();
        // Namespaces listed but not entered this time (the process whose
        // path we had exited meanwhile): their attachments stay as they are
        // (forgetting them would attach a second filter next time).
        let mut unread = BTreeSet::new();
        for ns in netns::all() {
            match netns::run_in(&ns.path, || (netns::cookie(), netns::interfaces())) {
                Ok((ns_cookie, ifaces)) => {
                    for (ifindex, name) in ifaces {
                        if filter.matches(&name) {
                            let key = Interface {
                                inode: ns.inode,
                                ns_cookie,
                                ifindex,
                            };
                            seen.push((ns.clone(), key, name));
                        }
                    }
                }
                // The namespace vanished between listing and entering it.
                Err(e) => {
                    log::debug!("skipping network namespace: {e}");
                    unread.insert(ns.inode);
                }
            }
        }
        let live: BTreeSet<Interface> = seen.iter().map(|(_, key, _)| *key).collect();
        let gone: Vec<Interface> = self
            .attached
            .keys()
            .filter(|key| !live.contains(key) && !unread.contains(&key.inode))
            .copied()
            .collect();
        for key in gone {
            if let Some(a) = self.attached.remove(&key) {
                info!("tc: interface {} in netns {} is gone", a.name, key.inode);
                // Its filters went with it; deleting by ifindex from here
                // could only hit another namespace's interface.
                a.links.forget();
                report.detached += 1;
            }
        }
        self.failed
            .retain(|key, _| live.contains(key) || unread.contains(&key.inode));
        // Where each namespace is reachable now, for the ones whose old
        // path no longer leads there.
        let paths: BTreeMap<u64, PathBuf> = seen
            .iter()
            .map(|(ns, _, _)| (ns.inode, ns.path.clone()))
            .collect();
        for (key, a) in self.attached.iter_mut() {
            if let Some(p) = paths.get(&key.inode) {
                a.path.clone_from(p);
            }
        }
        for (ns, key, name) in seen {
            if self.attached.contains_key(&key) || self.failed.contains_key(&key) {
                continue;
            }
            match attach_both(ebpf, &ns, &name) {
                Ok(links) => {
                    info!("tc: classifiers attached to {name} in netns {}", ns.inode);
                    self.attached.insert(
                        key,
                        Attachment {
                            name,
                            path: ns.path.clone(),
                            links,
                        },
                    );
                    report.attached += 1;
                }
                Err(e) => {
                    warn!("tc: not attached to {name} in netns {}: {e}", ns.inode);
                    self.failed.insert(key, e);
                    report.failed += 1;
                }
            }
        }
        report.total = self.attached.len();
        report
    }

    /// Detaches everything now, each netlink filter from inside its own
    /// namespace (also what dropping does).
    pub fn clear(&mut self) {
        if self.attached.is_empty() {
            return;
        }
        // Paths may have gone stale since the last sync.
        let now: BTreeMap<u64, PathBuf> = netns::all()
            .into_iter()
            .map(|ns| (ns.inode, ns.path))
            .collect();
        for (Interface { inode, .. }, a) in std::mem::take(&mut self.attached) {
            let path = now.get(&inode).unwrap_or(&a.path);
            match a.links.detach_in(path, inode) {
                Ok(()) => log::debug!("tc: detached from {} in netns {inode}", a.name),
                Err(e) => log::debug!("tc: {} in netns {inode}: nothing to detach ({e})", a.name),
            }
        }
    }
}

impl Drop for TcAttacher {
    fn drop(&mut self) {
        self.clear();
    }
}

/// "tcx" on kernels with TCX links (6.6+), else "netlink".
pub fn mode() -> &'static str {
    if tcx_supported() { "tcx" } else { "netlink" }
}

fn tcx_supported() -> bool {
    KernelVersion::current()
        .map(|v| v >= KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}

/// Both directions on one interface, inside its namespace.
fn attach_both(ebpf: &mut aya::Ebpf, ns: &Netns, name: &str) -> Result<Links, String> {
    let egress = attach_one(ebpf, ns, name, EGRESS_PROG, TcAttachType::Egress)?;
    let ingress = match attach_one(ebpf, ns, name, INGRESS_PROG, TcAttachType::Ingress) {
        Ok(l) => l,
        Err(e) => {
            // Not half attached: take the egress classifier off again.
            let _ = detach_in(&ns.path, ns.inode, vec![egress]);
            return Err(e);
        }
    };
    Ok(Links { egress, ingress })
}

fn attach_one(
    ebpf: &mut aya::Ebpf,
    ns: &Netns,
    name: &str,
    prog: &str,
    direction: TcAttachType,
) -> Result<tc::SchedClassifierLink, String> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} missing from the eBPF object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    if program.fd().is_err() {
        program.load().map_err(crate::loader::short)?;
    }
    let result = netns::run_in(&ns.path, || {
        if !tcx_supported() {
            // Netlink filters need the clsact qdisc; it may exist already.
            let _ = tc::qdisc_add_clsact(name);
            // Unlike TCX links, netlink filters outlive the process that
            // attached them: remove those of an agent that was killed, or
            // its classifiers and ours would both run.
            if tc::qdisc_detach_program(name, direction, prog).is_ok() {
                info!(
                    "tc: removed a stale {prog} filter from {name} in netns {}",
                    ns.inode
                );
            }
        }
        let id = program.attach(name, direction).map_err(|e| e.to_string())?;
        // Taken on this thread: a netlink link must not be dropped outside
        // its namespace (see the module documentation).
        program.take_link(id).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?;
    result.map_err(|e| format!("{direction:?}: {e}"))
}
