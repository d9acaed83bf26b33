//! Capabilities: the agent checks at start that it holds what it needs
//! (and says which are missing, instead of failing later with EPERM deep in
//! a BPF call), and drops what it no longer needs once attached.

use std::fs;

/// A capability by number (linux/capability.h) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u32, pub &'static str, pub &'static str);

/// Needed for the whole run: loading/attaching programs and reading maps,
/// TC attachment, entering other network namespaces (TC, inventory,
/// sysctls), and `/proc/<pid>/{ns,fd}` of other users' processes.
pub const REQUIRED: &[Cap] = &[
    Cap(39, "CAP_BPF", "load BPF programs and maps"),
    Cap(
        38,
        "CAP_PERFMON",
        "attach tracing programs, read kernel memory from them",
    ),
    Cap(12, "CAP_NET_ADMIN", "attach TC classifiers"),
    Cap(
        21,
        "CAP_SYS_ADMIN",
        "enter other network namespaces (setns)",
    ),
    Cap(
        19,
        "CAP_SYS_PTRACE",
        "open /proc/<pid>/ns/net, /proc/<pid>/fd, exe and maps of other processes (owners, their programs)",
    ),
    // /proc/<pid>/fd is mode 0500 owned by the process' user: listing it
    // for another user's process is a DAC check, not a ptrace one.
    Cap(
        2,
        "CAP_DAC_READ_SEARCH",
        "list /proc/<pid>/fd of other users' processes (socket owners)",
    ),
    Cap(
        34,
        "CAP_SYSLOG",
        "read kernel addresses from /proc/kallsyms",
    ),
];

/// Needed only while starting (checked with the rest, then dropped).
pub const START_ONLY: &[Cap] = &[
    Cap(
        34,
        "CAP_SYSLOG",
        "read kernel addresses from /proc/kallsyms",
    ),
    Cap(
        24,
        "CAP_SYS_RESOURCE",
        "raise RLIMIT_MEMLOCK on kernels before 5.11",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("reading /proc/self/status: {0}")]
    Read(std::io::Error),
    #[error("missing capabilities: {0}")]
    Missing(String),
    #[error("dropping capabilities: {0}")]
    Drop(std::io::Error),
}

/// The effective set, as a bit mask.
fn effective() -> Result<u64, CapsError> {
    let status = fs::read_to_string("/proc/self/status").map_err(CapsError::Read)?;
    Ok(parse_cap_eff(&status).unwrap_or(0))
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

fn missing(eff: u64) -> Vec<Cap> {
    REQUIRED
        .iter()
        .copied()
        .filter(|c| eff & (1 << c.0) == 0)
        .collect()
}

/// Fails with every missing capability and what it is for.
pub fn check() -> Result<(), CapsError> {
    let gone = missing(effective()?);
    if gone.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = gone
        .iter()
        .map(|c| format!("{} (to {})", c.1, c.2))
        .collect();
    Err(CapsError::Missing(list.join(", ")))
}

/// Removes the start-only capabilities from the effective and permitted
/// sets (a later compromise of the process cannot use them). Affects the
/// calling thread and the threads it starts afterwards.
pub fn drop_start_only() -> Result<Vec<&'static str>, CapsError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut header = Header {
        version: V3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data words, as
    // documented in capget(2).
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(CapsError::Drop(std::io::Error::last_os_error()));
        }
    }
    let mut dropped = Vec::new();
    for cap in START_ONLY {
        let (word, bit) = ((cap.0 / 32) as usize, 1u32 << (cap.0 % 32));
        if data[word].permitted & bit != 0 {
            data[word].effective &= !bit;
            data[word].permitted &= !bit;
            dropped.push(cap.1);
        }
    }
    // SAFETY: as above.
    unsafe {
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(CapsError::Drop(std::io::Error::last_os_error()));
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_set() {
        assert_eq!(
            parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn names_what_is_missing() {
        let all = u64::MAX;
        assert!(missing(all).is_empty());
        let without_bpf = all & !(1 << 39);
        assert_eq!(missing(without_bpf), vec![REQUIRED[0]]);
        assert_eq!(missing(0).len(), REQUIRED.len());
    }
}
