//! The agent's own process: resource limits and how its allocator hands
//! memory back.

/// Large buffers (a ring-buffer batch, an inventory, a `/sockets` reply)
/// come and go with the node's socket count. glibc raises its mmap
/// threshold after the first such buffer is freed and from then on serves
/// them from the heap, which it keeps: a fixed threshold hands every large
/// buffer back to the kernel when it is freed.
pub fn bound_allocator_retention() {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
}

/// Hands memory freed after a large, passing allocation back to the
/// kernel: glibc keeps it otherwise, and the agent's RSS would stay at its
/// start-up and inventory peaks.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
pub fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Raises the soft limit on open files to the hard one (a unit without
/// `LimitNOFILE`, a container runtime's default of 1024): the agent holds
/// a descriptor per namespace it visits, per link and per HTTP client.
/// Returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) } != 0 {
        log::warn!("reading RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
        return 1024;
    }
    if rlim.rlim_cur < rlim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: rlim.rlim_max,
            rlim_max: rlim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            log::debug!(
                "raised RLIMIT_NOFILE from {} to {}",
                rlim.rlim_cur,
                rlim.rlim_max
            );
            return rlim.rlim_max;
        }
        log::warn!(
            "raising RLIMIT_NOFILE to {}: {}",
            rlim.rlim_max,
            std::io::Error::last_os_error()
        );
    }
    rlim.rlim_cur
}

/// Descriptors kept for the agent's own work (namespaces, iterators,
/// links, /proc), never handed to HTTP clients.
pub const RESERVED_FDS: u64 = 256;

/// HTTP connections allowed at once: what was asked, but never more than
/// half of what the descriptor limit leaves beyond the reserve.
pub fn connection_cap(asked: u64, nofile: u64) -> usize {
    let room = nofile.saturating_sub(RESERVED_FDS) / 2;
    asked.min(room).max(1) as usize
}

/// The most descriptors the TC attachments may bring the process to: the
/// limit less the API's connections and half the reserve (namespaces,
/// iterators and `/proc` while they are read).
pub fn attachment_ceiling(max_connections: u64, nofile: u64) -> u64 {
    nofile
        .saturating_sub(connection_cap(max_connections, nofile) as u64)
        .saturating_sub(RESERVED_FDS / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_leave_the_api_its_connections() {
        assert_eq!(attachment_ceiling(256, 1024), 640);
        assert_eq!(attachment_ceiling(256, 1 << 20), (1 << 20) - 256 - 128);
        assert_eq!(attachment_ceiling(256, 100), 0);
    }

    #[test]
    fn connections_leave_the_reserve_free() {
        assert_eq!(connection_cap(256, 1024), 256);
        assert_eq!(connection_cap(1000, 1024), 384);
        assert_eq!(connection_cap(256, 300), 22);
        assert_eq!(connection_cap(256, 10), 1);
    }
}

/// One BPF map this process holds, as `/proc/self/fdinfo` describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapMemory {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// What the kernel charges for it (`memlock`), bytes.
    pub bytes: u64,
}

/// The BPF maps this process holds, each once (by map id).
pub fn bpf_maps() -> Vec<MapMemory> {
    let mut seen = std::collections::BTreeMap::new();
    let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    for fd in fds.flatten() {
        let Ok(text) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        if let Some((id, map)) = parse_map_fdinfo(&text) {
            seen.insert(id, map);
        }
    }
    seen.into_values().collect()
}

/// `BPF_MAP_TYPE_RINGBUF`.
pub const MAP_TYPE_RINGBUF: u32 = 27;

/// A ring buffer's pages beside its data: the consumer and producer
/// positions and the header (`RINGBUF_NR_META_PAGES` + 1 in
/// kernel/bpf/ringbuf.c).
const RINGBUF_META_BYTES: u64 = 3 * 4096;

/// What the kernel charges for a map whose `memlock` line says 0: before
/// 6.4 (`map_mem_usage`) fdinfo computes it from the key and value sizes
/// (`bpf_map_memory_footprint`), both 0 for a ring buffer, whose data
/// pages are `max_entries` bytes.
fn charged_bytes(map_type: u32, max_entries: u32, memlock: u64) -> u64 {
    if memlock == 0 && map_type == MAP_TYPE_RINGBUF {
        u64::from(max_entries) + RINGBUF_META_BYTES
    } else {
        memlock
    }
}

/// (map id, its description) from one fdinfo file; None for other fds.
fn parse_map_fdinfo(text: &str) -> Option<(u64, MapMemory)> {
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    let id = field("map_id")?;
    let (map_type, max_entries) = (field("map_type")? as u32, field("max_entries")? as u32);
    Some((
        id,
        MapMemory {
            map_type,
            key_size: field("key_size")? as u32,
            value_size: field("value_size")? as u32,
            max_entries,
            bytes: charged_bytes(map_type, max_entries, field("memlock").unwrap_or(0)),
        },
    ))
}

#[cfg(test)]
mod map_tests {
    use super::*;

    #[test]
    fn reads_a_map_fdinfo() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\nkey_size:\t8\nvalue_size:\t48\nmax_entries:\t65536\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t5768512\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(
            parse_map_fdinfo(t),
            Some((
                42,
                MapMemory {
                    map_type: 1,
                    key_size: 8,
                    value_size: 48,
                    max_entries: 65536,
                    bytes: 5768512
                }
            ))
        );
        assert_eq!(parse_map_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn a_ring_buffer_without_memlock_is_charged_its_pages() {
        // 5.15's fdinfo of a 16 MiB ring buffer: memlock from key and value
        // sizes (0); 6.4 and later say what it takes.
        let t = "map_type:\t27\nkey_size:\t0\nvalue_size:\t0\nmax_entries:\t16777216\nmemlock:\t0\nmap_id:\t7\n";
        assert_eq!(parse_map_fdinfo(t).unwrap().1.bytes, 16777216 + 3 * 4096);
        let t = t.replace("memlock:\t0", "memlock:\t16801792");
        assert_eq!(parse_map_fdinfo(&t).unwrap().1.bytes, 16801792);
        // Another map's 0 stays 0.
        let t = "map_type:\t1\nkey_size:\t8\nvalue_size:\t8\nmax_entries:\t1\nmemlock:\t0\nmap_id:\t8\n";
        assert_eq!(parse_map_fdinfo(t).unwrap().1.bytes, 0);
    }
}
