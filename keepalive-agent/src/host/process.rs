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
