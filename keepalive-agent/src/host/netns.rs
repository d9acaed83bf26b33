//! Network namespaces: finding every one on the node (through the processes
//! that live in them and `ip netns` bind mounts) and running a closure
//! inside one. `setns` changes only the calling thread, so each visit runs
//! on a short-lived thread of its own and the agent's threads stay in the
//! namespace they started in.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: io::Error },
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
    /// The namespaces could not be listed (out of descriptors, most
    /// likely): callers keep what they know rather than take it for "no
    /// namespaces".
    #[error("listing network namespaces ({path}): {source}")]
    List { path: PathBuf, source: io::Error },
}

/// A namespace by inode (what `ls -l /proc/<pid>/ns/net` and `lsns` show)
/// and a path that opens it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    pub inode: u64,
    pub path: PathBuf,
    /// Its lowest pid (a pod's sandbox; pid 1 for the host's): the process
    /// whose cgroup says who owns it. None when only an `ip netns` mount
    /// holds it.
    pub first_pid: Option<u32>,
}

/// Every namespace reachable now, one path each, ordered by inode.
/// Processes that exit while we look are skipped; a listing that fails
/// (`/proc` unreadable, out of descriptors) is an error, never an empty
/// node.
pub fn all() -> Result<Vec<Netns>, NetnsError> {
    let mut found: BTreeMap<u64, Netns> = BTreeMap::new();
    let mut add = |path: PathBuf, pid: Option<u32>| {
        // A process's link names its namespace (`net:[4026531840]`): half
        // the cost of a stat, which follows it into nsfs, paid for every
        // process of the node at every rescan. A bind mount is no link.
        let inode = match pid {
            Some(_) => fs::read_link(&path).ok().and_then(|l| link_inode(&l)),
            None => fs::metadata(&path).ok().map(|meta| meta.ino()),
        };
        if let Some(inode) = inode {
            let ns = found.entry(inode).or_insert(Netns {
                inode,
                path,
                first_pid: None,
            });
            // Pids come in ascending order: the first is the lowest.
            ns.first_pid = ns.first_pid.or(pid);
        }
    };
    let list = |path: &str| {
        fs::read_dir(path).map_err(|source| NetnsError::List {
            path: path.into(),
            source,
        })
    };
    match list("/run/netns") {
        Ok(named) => named.flatten().for_each(|e| add(e.path(), None)),
        // No `ip netns` namespace was ever made on this node.
        Err(NetnsError::List { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // An entry that fails to read mid-listing is a process gone.
    let mut pids: Vec<u32> = list("/proc")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        add(PathBuf::from(format!("/proc/{pid}/ns/net")), Some(pid));
    }
    Ok(found.into_values().collect())
}

/// The inode in a `/proc/<pid>/ns/net` link's target (`net:[4026531840]`).
fn link_inode(target: &Path) -> Option<u64> {
    target
        .to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Runs `work` on a thread inside the namespace at `path`.
pub fn run_in<T: Send>(path: &Path, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: plain syscall on an fd we own; affects this thread only.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Enter {
                        path: path.to_owned(),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(work())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(path.to_owned()))?
    })
}

/// The calling thread's namespace's cookie (`SO_NETNS_COOKIE`, 5.14+):
/// unlike its inode, never reused while the node runs, so it tells a new
/// namespace from a deleted one that had the same inode. `None` on older
/// kernels. A socket that cannot be made (out of descriptors) is an
/// error: taking it for "no cookie" would make every interface look new.
pub fn cookie() -> io::Result<Option<u64>> {
    // SAFETY: a socket we create and close here; getsockopt writes at most
    // `len` bytes into `cookie`.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        match rc {
            0 => Ok(Some(cookie)),
            // Before 5.14 the option does not exist.
            _ if err.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(None),
            _ => Err(err),
        }
    }
}

/// Interfaces of the calling thread's namespace, as (index, name); an
/// error when they cannot be listed (if_nameindex needs a netlink socket),
/// never "no interfaces".
pub fn interfaces() -> io::Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns a list terminated by a zero entry, which
    // we free with if_freenameindex.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut cur = list;
        while (*cur).if_index != 0 && !(*cur).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*cur).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*cur).if_index, name));
            cur = cur.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_is_listed() {
        let me = fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(all().unwrap().iter().any(|ns| ns.inode == me));
    }

    #[test]
    fn a_link_names_a_network_namespace_by_inode() {
        assert_eq!(link_inode(Path::new("net:[4026531840]")), Some(4026531840));
        assert_eq!(link_inode(Path::new("mnt:[4026531841]")), None);
        assert_eq!(link_inode(Path::new("net:[x]")), None);
    }

    #[test]
    fn namespace_cookie_is_stable_and_per_namespace() {
        let here = cookie()
            .expect("a socket")
            .expect("SO_NETNS_COOKIE (5.14+)");
        assert_eq!(cookie().expect("a socket"), Some(here));
        assert_ne!(here, 0);
    }

    #[test]
    fn loopback_is_an_interface() {
        assert!(interfaces().unwrap().iter().any(|(_, name)| name == "lo"));
    }
}
