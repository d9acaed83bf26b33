//! Capabilities by name and number, the runtime's default set, and what
//! a process holds (`/proc/PID/status`).

/// containerd's default capabilities (oci.defaultUnixCaps, Docker's set),
/// which a `drop: [ALL]` removes.
pub const RUNTIME_DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Capability numbers (include/uapi/linux/capability.h).
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

pub fn cap_bit(name: &str) -> u32 {
    CAPS.iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("unknown capability {name}")) as u32
}

/// A capability set from a `/proc/PID/status` line's hex mask.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..CAPS.len())
        .filter(|b| mask >> b & 1 == 1)
        .map(|b| CAPS[b].to_string())
        .collect()
}

pub fn status_field(pid: u32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}"))
        .trim()
        .to_string()
}

pub fn cap_mask(pid: u32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).expect("a capability mask")
}
