//! Attaches the TC classifiers (egress and ingress) to the interfaces of
//! every network namespace, and keeps doing so as namespaces and interfaces
//! come and go. Attaching happens inside each namespace (a socket's probes
//! leave through its own namespace's interface, where the kernel still tells
//! TC which socket sent them). TCX links where the kernel has them (6.6+),
//! netlink clsact filters otherwise.

use std::collections::BTreeMap;

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
    egress: aya::programs::tc::SchedClassifierLink,
    ingress: aya::programs::tc::SchedClassifierLink,
}

#[derive(Default)]
pub struct TcAttacher {
    /// (netns inode, ifindex) -> links. Dropping a TCX link detaches it.
    attached: BTreeMap<(u64, u32), Attachment>,
    /// Failures already logged, so a broken interface does not flood logs.
    failed: BTreeMap<(u64, u32), String>,
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
            .map(|((ns, _), a)| format!("{ns}:{}", a.name))
            .collect()
    }

    /// Attaches to new interfaces and forgets vanished ones.
    pub fn sync(&mut self, ebpf: &mut aya::Ebpf, filter: &InterfaceFilter) -> SyncReport {
        let mut report = SyncReport::default();
        let mut seen = Vec::new();
        for ns in netns::all() {
            match netns::run_in(&ns.path, netns::interfaces) {
                Ok(ifaces) => {
                    for (index, name) in ifaces {
                        if filter.matches(&name) {
                            seen.push((ns.clone(), index, name));
                        }
                    }
                }
                // The namespace vanished between listing and entering it.
                Err(e) => log::debug!("skipping network namespace: {e}"),
            }
        }
        let live: std::collections::BTreeSet<(u64, u32)> =
            seen.iter().map(|(ns, i, _)| (ns.inode, *i)).collect();
        let before = self.attached.len();
        // Links of vanished interfaces are defunct: dropping them is all.
        self.attached.retain(|key, a| {
            let keep = live.contains(key);
            if !keep {
                info!("tc: interface {} in netns {} is gone", a.name, key.0);
            }
            keep
        });
        self.failed.retain(|key, _| live.contains(key));
        report.detached = before - self.attached.len();
        for (ns, index, name) in seen {
            let key = (ns.inode, index);
            if self.attached.contains_key(&key) || self.failed.contains_key(&key) {
                continue;
            }
            match attach_both(ebpf, &ns, &name) {
                Ok((egress, ingress)) => {
                    info!("tc: classifiers attached to {name} in netns {}", ns.inode);
                    self.attached.insert(
                        key,
                        Attachment {
                            name,
                            egress,
                            ingress,
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

    /// Detaches everything now (also what dropping does).
    pub fn clear(&mut self) {
        for (_, a) in std::mem::take(&mut self.attached) {
            let _ = a.egress.detach();
            let _ = a.ingress.detach();
        }
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
fn attach_both(
    ebpf: &mut aya::Ebpf,
    ns: &Netns,
    name: &str,
) -> Result<(tc::SchedClassifierLink, tc::SchedClassifierLink), String> {
    let egress = attach_one(ebpf, ns, name, EGRESS_PROG, TcAttachType::Egress)?;
    let ingress = attach_one(ebpf, ns, name, INGRESS_PROG, TcAttachType::Ingress)?;
    Ok((egress, ingress))
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
        }
        program.attach(name, direction).map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?;
    let id = result.map_err(|e| format!("{direction:?}: {e}"))?;
    program.take_link(id).map_err(|e| e.to_string())
}
