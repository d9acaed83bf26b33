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

mod links;
mod looks;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    programs::{ProgramError, SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use keepalive_api::HookMode;
use links::{Links, detach_in};
use log::{info, warn};
use looks::{Look, Looks};

use super::{
    error::{ProgramFailure, Trimmed},
    hooks::program,
};
use crate::host::netns::{self, Netns, NetnsError};

/// Why an interface did not get its classifiers, or lost them.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error(transparent)]
    Program(#[from] ProgramFailure),
    #[error("{direction:?}: {}", Trimmed(error))]
    Attach {
        direction: TcAttachType,
        error: ProgramError,
    },
    #[error("detaching: {}", Trimmed(.0))]
    Detach(ProgramError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{} is no longer netns {inode}", path.display())]
    Moved { path: PathBuf, inode: u64 },
    #[error("reading a namespace's interfaces: {0}")]
    Read(#[source] std::io::Error),
}

/// Which classifiers go on the interfaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Classifiers {
    /// Ours: the wire view of probes and their ACKs.
    #[default]
    Keepalive,
    /// Do-nothing ones, the benchmark's baseline (`--tc-baseline`).
    Baseline,
}

impl Classifiers {
    /// (egress, ingress) program names.
    pub const fn programs(self) -> (&'static str, &'static str) {
        match self {
            Classifiers::Keepalive => ("tc_egress", "tc_ingress"),
            Classifiers::Baseline => ("tc_noop_egress", "tc_noop_ingress"),
        }
    }
}

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
    pub classifiers: Classifiers,
    /// The most open descriptors attaching may bring the process to (a
    /// TCX link is one per direction): what is left is the API's.
    pub descriptor_ceiling: Option<u64>,
    attached: BTreeMap<Interface, Attachment>,
    /// Failures already logged, so a broken interface does not flood logs.
    failed: BTreeSet<Interface>,
    /// Interfaces refused for descriptors, so that each is counted once
    /// however many passes it waits.
    refused: BTreeSet<Interface>,
    looks: Looks,
}

/// Interfaces attached in one pass at most, and how long a pass attaches:
/// any user can make thousands of namespaces and interfaces (an
/// unprivileged user namespace), and a pass blocks the loop that serves
/// signals and inventories; the rest wait for the next pass.
const ATTACH_PER_PASS: usize = 64;
const ATTACH_TIME_PER_PASS: Duration = Duration::from_millis(500);
/// Attached in a pass whatever the time: on a slow machine (a
/// software-emulated VM takes tenths of a second per netlink attach) a
/// node's and its first pods' interfaces still get theirs at once.
const ATTACH_AT_LEAST: usize = 16;

/// What one sync changed.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub attached: usize,
    pub detached: usize,
    pub failed: usize,
    pub total: usize,
    /// Left for the next pass (this one's budget was spent).
    pub deferred: usize,
    /// Not attached: the descriptors they would take are the API's.
    pub refused_descriptors: usize,
    /// Of those, refused for the first time.
    pub newly_refused: usize,
}

impl SyncReport {
    /// What this pass left undone, for the log and the hook's note.
    pub fn left(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.failed > 0 {
            parts.push(format!("{} interfaces failed", self.failed));
        }
        if self.deferred > 0 {
            parts.push(format!(
                "{} wait for the next pass ({ATTACH_PER_PASS}, or {} ms past {ATTACH_AT_LEAST}, per pass)",
                self.deferred,
                ATTACH_TIME_PER_PASS.as_millis()
            ));
        }
        if self.refused_descriptors > 0 {
            parts.push(format!(
                "{} refused: the descriptors they would take are the API's (raise LimitNOFILE)",
                self.refused_descriptors
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Descriptors the process holds now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
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

    /// Attaches to new interfaces and forgets vanished ones. When the
    /// namespaces cannot be listed at all, nothing changes and the error
    /// is returned: "no namespaces" would detach every classifier.
    pub fn sync(
        &mut self,
        ebpf: &mut aya::Ebpf,
        filter: &InterfaceFilter,
    ) -> Result<SyncReport, TcError> {
        let mut report = SyncReport::default();
        let mut seen = Vec::new();
        // Namespaces listed but not read this time (the process whose path
        // we had exited meanwhile, or no descriptor to read with): their
        // attachments stay as they are (forgetting them would attach a
        // second filter next time).
        let mut unread = BTreeSet::new();
        let all = netns::all()?;
        let listed: BTreeSet<u64> = all.iter().map(|ns| ns.inode).collect();
        for ns in all {
            let look = Look::of(&ns);
            if self.looks.unchanged(ns.inode, look) {
                unread.insert(ns.inode);
                continue;
            }
            let read = netns::run_in(&ns.path, || Ok((netns::cookie()?, netns::interfaces()?)));
            if read.as_ref().is_ok_and(Result::is_ok) {
                self.looks.entered(ns.inode, look);
            }
            match read
                .map_err(TcError::from)
                .and_then(|r| r.map_err(TcError::Read))
            {
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
                // The namespace vanished between listing and entering it,
                // or could not be read.
                Err(e) => {
                    log::debug!("skipping network namespace {}: {e}", ns.inode);
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
            .retain(|key| live.contains(key) || unread.contains(&key.inode));
        self.refused
            .retain(|key| live.contains(key) || unread.contains(&key.inode));
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
        let started = Instant::now();
        let mut open = self.descriptor_ceiling.map(|_| open_descriptors());
        let mut unfinished = BTreeSet::new();
        for (ns, key, name) in seen {
            if self.attached.contains_key(&key) || self.failed.contains(&key) {
                continue;
            }
            let done = report.attached + report.failed;
            if done >= ATTACH_PER_PASS
                || (done >= ATTACH_AT_LEAST && started.elapsed() >= ATTACH_TIME_PER_PASS)
            {
                report.deferred += 1;
                unfinished.insert(ns.inode);
                continue;
            }
            if let (Some(ceiling), Some(n)) = (self.descriptor_ceiling, open.as_mut()) {
                // Two links (TCX), and the namespace's descriptor while in it.
                if *n + 3 > ceiling {
                    report.refused_descriptors += 1;
                    unfinished.insert(ns.inode);
                    if self.refused.insert(key) {
                        report.newly_refused += 1;
                    }
                    continue;
                }
                *n += 2;
            }
            match attach_both(ebpf, &ns, &name, self.classifiers) {
                Ok(links) => {
                    info!("tc: classifiers attached to {name} in netns {}", ns.inode);
                    self.refused.remove(&key);
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
                // The namespace went between listing and attaching (a pod
                // deleted): nothing failed, nothing is left to attach to.
                Err(TcError::Netns(NetnsError::Open { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    log::debug!("tc: netns {} gone before {name} was attached", ns.inode);
                }
                Err(e) => {
                    warn!("tc: not attached to {name} in netns {}: {e}", ns.inode);
                    self.failed.insert(key);
                    report.failed += 1;
                }
            }
        }
        report.total = self.attached.len();
        self.looks.end_pass(unfinished, &listed);
        Ok(report)
    }

    /// Detaches everything now, each netlink filter from inside its own
    /// namespace (also what dropping does).
    pub fn clear(&mut self) {
        if self.attached.is_empty() {
            return;
        }
        // Paths may have gone stale since the last sync.
        let now: BTreeMap<u64, PathBuf> = netns::all()
            .unwrap_or_default()
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

/// TCX links on kernels that have them (6.6+), else netlink clsact filters.
pub fn mode() -> HookMode {
    if tcx_supported() {
        HookMode::Tcx
    } else {
        HookMode::Netlink
    }
}

fn tcx_supported() -> bool {
    KernelVersion::current()
        .map(|v| v >= KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}

/// Both directions on one interface, inside its namespace.
fn attach_both(
    ebpf: &mut aya::Ebpf,
    ns: &Netns,
    name: &str,
    classifiers: Classifiers,
) -> Result<Links, TcError> {
    let (egress_prog, ingress_prog) = classifiers.programs();
    let egress = attach_one(ebpf, ns, name, egress_prog, TcAttachType::Egress)?;
    let ingress = match attach_one(ebpf, ns, name, ingress_prog, TcAttachType::Ingress) {
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
    prog: &'static str,
    direction: TcAttachType,
) -> Result<tc::SchedClassifierLink, TcError> {
    let program: &mut SchedClassifier = program(ebpf, prog)?;
    if program.fd().is_err() {
        program.load().map_err(ProgramFailure::failed(prog))?;
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
        let id = program.attach(name, direction)?;
        // Taken on this thread: a netlink link must not be dropped outside
        // its namespace (see the module documentation).
        program.take_link(id)
    })?;
    result.map_err(|error| TcError::Attach { direction, error })
}
