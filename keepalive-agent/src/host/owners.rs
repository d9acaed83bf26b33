//! Which process owns a socket, found the way `ss -p` finds it: every
//! `/proc/<pid>/fd/*` that is a socket reads back (readlink) as
//! `socket:[INODE]`, the sockfs inode that sock_diag reports as
//! `idiag_inode`. For each owner we also read its `comm`, its cgroup path
//! and who that path names (see [`super::cgroup`]).
//!
//! What it does not do: it does not look at threads (`/proc` lists only
//! thread-group leaders and threads share the leader's fd table), does not
//! see sockets no process holds open (time-wait, orphaned, kernel sockets),
//! and does not ask a container runtime anything (see `super::runtime`).
//! The scan is a snapshot: a process that exits or closes its fds while we
//! look is skipped, not an error.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use keepalive_api::Owner;

use super::{cgroup, netns::Netns, procfs};

/// The owners of the wanted socket inodes. Inodes no process holds are
/// absent from the result. When several processes hold the same socket
/// (inherited over fork, passed over a unix socket) the lowest pid wins,
/// usually the parent that created it.
pub fn resolve(inodes: &HashSet<u64>) -> HashMap<u64, Owner> {
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    // Visiting pids in ascending order makes the first owner found the
    // lowest pid, which in turn lets us stop as soon as every inode has one.
    // A u32 per process keeps this bounded by pid_max.
    let mut pids: Vec<u32> = match fs::read_dir("/proc") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect(),
        Err(e) => {
            log::warn!("listing /proc failed: {e}");
            return found;
        }
    };
    pids.sort_unstable();

    for pid in pids {
        if found.len() == inodes.len() {
            break;
        }
        let proc_dir = Path::new("/proc").join(pid.to_string());
        // Permission errors (other users' processes when not root) and
        // processes that exited since the listing both land here.
        let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        let mut mine = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = target.to_str().and_then(socket_inode)
                && inodes.contains(&inode)
                && !found.contains_key(&inode)
            {
                // A socket open on several fds is pushed more than once;
                // harmless, and a contains() here would be quadratic.
                mine.push(inode);
            }
        }
        if mine.is_empty() {
            continue;
        }
        // Read the process's identity only once it owns something we want.
        // If it exited meanwhile, leave its sockets for a later process
        // that shares them, or unresolved.
        let Ok(comm) = procfs::read_lossy(proc_dir.join("comm")) else {
            continue;
        };
        let cgroup = cgroup_path(pid).unwrap_or_default();
        let mut owner = Owner {
            pid,
            comm: comm.trim_end_matches('\n').to_owned(),
            // Found through /proc, not at connect(): no BPF cgroup id.
            cgroup_id: 0,
            ..Owner::default()
        };
        set_cgroup(&mut owner, cgroup);
        for inode in mine {
            found.insert(inode, owner.clone());
        }
    }
    found
}

/// The inode of a `socket:[INODE]` link target.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Who owns each network namespace: the cgroup identity of its lowest pid
/// (a pod's sandbox is its first process; the host's namespace has pid 1,
/// so host-network pods never own it). Namespaces no process is in
/// (`ip netns`, CNI mounts alone) are absent.
pub fn netns_owners(all: &[Netns]) -> HashMap<u32, cgroup::Identity> {
    all.iter()
        .filter_map(|ns| {
            let path = cgroup_path(ns.first_pid?)?;
            // Namespace inodes are 32-bit (`ns.inum`).
            Some((ns.inode as u32, cgroup::identity(&path)))
        })
        .collect()
}

/// Reads a live process's cgroup into `owner`: the path and who it names
/// (container, pod uid, systemd service). False when it is gone.
pub fn read_cgroup(owner: &mut Owner) -> bool {
    let Some(path) = cgroup_path(owner.pid) else {
        return false;
    };
    set_cgroup(owner, path);
    true
}

/// The cgroup path of a live process (see [`cgroup::path_of`]).
fn cgroup_path(pid: u32) -> Option<String> {
    let text = procfs::read_lossy(format!("/proc/{pid}/cgroup")).ok()?;
    Some(cgroup::path_of(&text).to_owned())
}

fn set_cgroup(owner: &mut Owner, path: String) {
    let id = cgroup::identity(&path);
    owner.container_id = id.container_id;
    owner.pod_uid = id.pod_uid;
    owner.service = id.service;
    owner.cgroup = Some(path).filter(|p| !p.is_empty());
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::unix::fs::MetadataExt as _};

    use super::*;

    #[test]
    fn socket_link_targets() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[]"), None);
    }

    #[test]
    fn owners_finds_our_own_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        );
        let inode = fs::metadata(path).expect("stat socket").ino();
        let missing = u64::from(u32::MAX) + 1; // sockfs inodes are 32-bit
        let wanted = HashSet::from([inode, missing]);
        let found = resolve(&wanted);
        let owner = found.get(&inode).expect("our socket has an owner");
        assert_eq!(owner.pid, std::process::id());
        let comm = fs::read_to_string("/proc/self/comm").expect("comm");
        assert_eq!(owner.comm, comm.trim_end());
        let cgroup = fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        assert_eq!(
            owner.cgroup.as_deref().unwrap_or(""),
            cgroup::path_of(&cgroup)
        );
        assert!(!found.contains_key(&missing));
        assert!(resolve(&HashSet::new()).is_empty());
    }

    #[test]
    fn owners_prefers_the_lowest_pid() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        );
        let inode = fs::metadata(path).expect("stat socket").ino();
        // A child holding the same socket as its stdin, as after a fork.
        let shared = std::os::fd::OwnedFd::from(listener.try_clone().expect("dup"));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(shared))
            .spawn()
            .expect("spawn sleep");
        let child_link = fs::read_link(format!("/proc/{}/fd/0", child.id()));
        let found = resolve(&HashSet::from([inode]));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            child_link.expect("child fd 0").to_str(),
            Some(format!("socket:[{inode}]").as_str())
        );
        let owner = found.get(&inode).expect("owner");
        assert_eq!(owner.pid, std::process::id().min(child.id()));
    }
}
