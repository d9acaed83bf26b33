//! Which process owns a socket, found the way `ss -p` finds it: every
//! `/proc/<pid>/fd/*` that is a socket reads back (readlink) as
//! `socket:[INODE]`, the sockfs inode that sock_diag reports as
//! `idiag_inode`. For each owner we also read its `comm`, its cgroup v2 path
//! and the container id that path names, if any.
//!
//! What it does not do: it does not look at threads (`/proc` lists only
//! thread-group leaders and threads share the leader's fd table), does not
//! see sockets no process holds open (time-wait, orphaned, kernel sockets),
//! and does not ask a container runtime anything; the container id comes
//! from the cgroup path alone. The scan is a snapshot: a process that exits
//! or closes its fds while we look is skipped, not an error.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use keepalive_api::Owner;

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
        let Ok(comm) = fs::read_to_string(proc_dir.join("comm")) else {
            continue;
        };
        let cgroup = fs::read_to_string(proc_dir.join("cgroup"))
            .map(|text| cgroup_v2_path(&text).to_owned())
            .unwrap_or_default();
        let owner = Owner {
            pid,
            comm: comm.trim_end_matches('\n').to_owned(),
            // Found through /proc, not at connect(): no BPF cgroup id.
            cgroup_id: 0,
            container_id: container_id(&cgroup),
            cgroup: Some(cgroup).filter(|c| !c.is_empty()),
        };
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

/// The cgroup path and container id of a live process (None when it is
/// gone or has no unified cgroup).
pub fn cgroup_of(pid: u32) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroup_v2_path(&text);
    (!path.is_empty()).then(|| (path.to_string(), container_id(path)))
}

/// The path of the `0::` (unified hierarchy) line of `/proc/<pid>/cgroup`,
/// or "" on a host with cgroup v1 only.
fn cgroup_v2_path(text: &str) -> &str {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .unwrap_or("")
}

/// The container id a cgroup path names: a 64-hex-digit segment, bare
/// (cgroupfs driver: `/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`)
/// or wrapped by the systemd driver (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`).
/// The innermost match wins, so a container nested in another (kind) is
/// reported as itself. `crio-conmon-<id>.scope` is CRI-O's monitor, not the
/// container, and does not match.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    const PREFIXES: [&str; 5] = [
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ];
    cgroup_path.rsplit('/').find_map(|segment| {
        let base = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = PREFIXES
            .iter()
            .find_map(|prefix| base.strip_prefix(prefix))
            .unwrap_or(base);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::unix::fs::MetadataExt as _};

    use super::*;

    const ID: &str = "3f1e9c2b7a4d5e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";

    #[test]
    fn container_id_patterns() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            (format!("/docker/{ID}"), Some(ID)),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab_cd.slice/crio-{ID}.scope"
                ),
                Some(ID),
            ),
            (
                format!("/kubepods/burstable/pod0c1d2e3f-1111-2222-3333-444455556666/{ID}"),
                Some(ID),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
            ),
            (
                format!("/system.slice/docker-{ID}.scope/init.scope"),
                Some(ID),
            ),
            (format!("/kubepods.slice/crio-conmon-{ID}.scope"), None),
            ("/user.slice/user-0.slice/session-3.scope".to_owned(), None),
            ("/".to_owned(), None),
            (String::new(), None),
            // 63 and 65 digits are not ids.
            (format!("/docker/{}", &ID[1..]), None),
            (format!("/docker/{ID}0"), None),
            (format!("/docker-{}z.scope", &ID[1..]), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(&path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn cgroup_line_is_the_unified_one() {
        let text = "12:memory:/docker/abc\n0::/system.slice/foo.service\n";
        assert_eq!(cgroup_v2_path(text), "/system.slice/foo.service");
        assert_eq!(cgroup_v2_path("3:cpu:/x\n"), "");
    }

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
            cgroup_v2_path(&cgroup)
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
