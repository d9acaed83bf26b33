//! The two classifier links of one interface, and how they come off: see
//! the module documentation of [`super`] for why netlink filters are only
//! ever detached inside their own namespace.

use std::{os::unix::fs::MetadataExt as _, path::Path};

use aya::programs::{links::Link as _, tc};

use super::TcError;
use crate::host::netns;

/// Both links of one interface. Never dropped as they are: see the module
/// documentation; [`Links::detach_in`] or [`Links::forget`] consume them.
pub(super) struct Links {
    pub egress: tc::SchedClassifierLink,
    pub ingress: tc::SchedClassifierLink,
}

impl Links {
    /// The interface or its namespace is gone, and the kernel removed its
    /// filters with it: release the links without deleting anything.
    pub fn forget(self) {
        forget(self.egress);
        forget(self.ingress);
    }

    /// Detaches both classifiers (see [`detach_in`]).
    pub fn detach_in(self, path: &Path, inode: u64) -> Result<(), TcError> {
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
pub(super) fn detach_in(
    path: &Path,
    inode: u64,
    links: Vec<tc::SchedClassifierLink>,
) -> Result<(), TcError> {
    let (netlink, tcx): (Vec<_>, Vec<_>) = links.into_iter().partition(is_netlink);
    let mut result = Ok(());
    for l in tcx {
        if let Err(e) = l.detach() {
            result = Err(TcError::Detach(e));
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
            return Err(TcError::Moved {
                path: path.to_path_buf(),
                inode,
            });
        }
        let mut result = Ok(());
        for l in pending.take().unwrap_or_default() {
            if let Err(e) = l.detach() {
                result = Err(TcError::Detach(e));
            }
        }
        result
    });
    for l in pending.take().unwrap_or_default() {
        forget(l);
    }
    result.and(entered?)
}
