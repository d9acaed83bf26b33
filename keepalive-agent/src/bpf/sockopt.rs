//! The option-change hook: `cgroup/setsockopt` on the root of the cgroup
//! v2 hierarchy, where it sees every process of the node, so that a
//! keepalive option set after connect reaches the table when it is set
//! rather than at the next inventory. Attached as a link (closed with the
//! agent, even by SIGKILL) beside whatever else is attached there.

use std::{
    fs::File,
    os::{
        fd::{AsFd, AsRawFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockopt},
};
use keepalive_api::{Hook, HookMode, HookStatus};
use keepalive_common::{KernelConfig, NOT_RESOLVED};

use super::{error::ProgramFailure, hooks::program};

const PROGRAM: &str = "keepalive_setsockopt";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Where the node's cgroup v2 root may be: the DaemonSet's read-only
/// mount of the host's (a container with a cgroup namespace of its own
/// sees only its own subtree at /sys/fs/cgroup), our own mounts (the
/// systemd unit), the host's through PID 1. A pure v2 node mounts it at
/// /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified.
const CANDIDATES: [&str; 6] = [
    "/host/sys/fs/cgroup",
    "/host/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/unified",
    "/proc/1/root/sys/fs/cgroup",
    "/proc/1/root/sys/fs/cgroup/unified",
];

/// Why the hook is not attached.
#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error(
        "no cgroup v2 root in reach (tried {0}; a cgroup namespace of our own shows a subtree): \
         option changes are found by inventories"
    )]
    NoRoot(String),
    #[error(
        "bpf_sockopt_kern.sk is not in this kernel's BTF: option changes are found by inventories"
    )]
    NoContextSocket,
    #[error(transparent)]
    Program(#[from] ProgramFailure),
}

/// The hook's status: live, or why not (the inventories then run at
/// `--inventory-seconds` to find option changes).
pub fn attach(ebpf: &mut Ebpf, config: &KernelConfig) -> HookStatus {
    let attached = if config.sockopt_kern_sk == NOT_RESOLVED {
        Err(SockoptError::NoContextSocket)
    } else {
        attach_at_root(ebpf)
    };
    HookStatus {
        hook: Hook::Setsockopt,
        // Down, the agent works on as before this hook: not an outage.
        mode: match attached {
            Ok(_) => HookMode::CgroupSockopt,
            Err(_) => HookMode::Inventory,
        },
        live: attached.is_ok(),
        note: match attached {
            Ok(root) => Some(format!("on {}", root.display())),
            Err(e) => Some(e.to_string()),
        },
    }
}

fn attach_at_root(ebpf: &mut Ebpf) -> Result<PathBuf, SockoptError> {
    let (root, dir) = CANDIDATES
        .iter()
        .map(Path::new)
        .find_map(|p| open_root(p).map(|dir| (p.to_path_buf(), dir)))
        .ok_or_else(|| SockoptError::NoRoot(CANDIDATES.join(", ")))?;
    let p: &mut CgroupSockopt = program(ebpf, PROGRAM)?;
    p.load().map_err(ProgramFailure::failed(PROGRAM))?;
    // A cgroup link (5.7+) runs beside every other program there whatever
    // the mode, and `BPF_LINK_CREATE` takes no attach flags (EINVAL).
    p.attach(dir.as_fd(), CgroupAttachMode::Single)
        .map_err(ProgramFailure::failed(PROGRAM))?;
    Ok(root)
}

/// `path` opened when it is the root of a cgroup v2 hierarchy: a cgroup2
/// mount whose directory is the root cgroup (kernfs gives it inode 1).
fn open_root(path: &Path) -> Option<File> {
    let dir = File::open(path).ok()?;
    // SAFETY: statfs is plain integers: all zeroes is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a statfs for the kernel to fill.
    let statted = unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) } == 0;
    let is_cgroup2 = statted && fs.f_type as i64 == CGROUP2_SUPER_MAGIC;
    let is_root = dir.metadata().is_ok_and(|m| m.ino() == 1);
    (is_cgroup2 && is_root).then_some(dir)
}
