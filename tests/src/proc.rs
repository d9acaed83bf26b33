//! A process as `/proc` shows it: its status fields, memory, threads'
//! capabilities; and the capability lists the agent declares.

use std::fs;

pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// A capability the agent requires: its number, its name, and the name
/// `setpriv` takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    pub bit: u32,
    pub name: String,
    pub setpriv: String,
}

/// A capability list of keepalive-agent's caps.rs (`REQUIRED`: held for
/// the whole run; `START_ONLY`: dropped once started), read from the
/// source so that the tests follow the lists as they change.
pub fn agent_capabilities(list: &str) -> Vec<Capability> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../keepalive-agent/src/host/caps.rs"
    );
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let caps = parse_cap_list(&text, list);
    assert!(!caps.is_empty(), "no {list} capabilities found in {path}");
    caps
}

fn parse_cap_list(text: &str, list: &str) -> Vec<Capability> {
    let Some(start) = text.find(&format!("pub const {list}:")) else {
        return Vec::new();
    };
    let body = &text[start..];
    let body = &body[..body.find("];").unwrap_or(body.len())];
    body.split("Cap(")
        .skip(1)
        .filter_map(|entry| {
            let mut fields = entry.splitn(3, ',');
            let bit = fields.next()?.trim().parse().ok()?;
            let name = fields.next()?.trim().trim_matches('"').to_string();
            let setpriv = name.strip_prefix("CAP_")?.to_ascii_lowercase();
            Some(Capability { bit, name, setpriv })
        })
        .collect()
}

/// A field of `/proc/<pid>/status` (or of a task's status file).
pub fn status_field(status_path: &str, field: &str) -> Option<String> {
    let text = fs::read_to_string(status_path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Resident memory of a process, KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    status_field(&format!("/proc/{pid}/status"), "VmRSS")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// (tid, thread name, CapEff, CapPrm) of every thread of `pid`.
pub fn thread_caps(pid: u32) -> Vec<(u32, String, u64, u64)> {
    let mut out = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task"))
        .expect("reading task dir")
        .flatten()
    {
        let p = t.path();
        let status = format!("{}/status", p.display());
        let cap = |f: &str| {
            status_field(&status, f)
                .and_then(|v| u64::from_str_radix(&v, 16).ok())
                .unwrap_or(0)
        };
        let name = fs::read_to_string(p.join("comm")).unwrap_or_default();
        out.push((
            t.file_name().to_string_lossy().parse().unwrap_or(0),
            name.trim().to_string(),
            cap("CapEff"),
            cap("CapPrm"),
        ));
    }
    out
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this process's soft descriptor limit to its hard one (tests that
/// hold thousands of sockets); returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim);
        rlim.rlim_cur = rlim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rlim);
    }
    rlim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_required_capabilities() {
        let text = "pub const REQUIRED: &[Cap] = &[\n    Cap(39, \"CAP_BPF\", \"x, y\"),\n    Cap(\n        2,\n        \"CAP_DAC_READ_SEARCH\",\n        \"z\",\n    ),\n];\npub const START_ONLY: &[Cap] = &[Cap(24, \"CAP_SYS_RESOURCE\", \"w\")];";
        let caps = parse_cap_list(text, "REQUIRED");
        assert_eq!(caps.len(), 2);
        assert_eq!((caps[0].bit, caps[0].setpriv.as_str()), (39, "bpf"));
        assert_eq!(caps[1].name, "CAP_DAC_READ_SEARCH");
        assert_eq!(caps[1].setpriv, "dac_read_search");
        let start = parse_cap_list(text, "START_ONLY");
        assert_eq!(start.len(), 1);
        assert_eq!(
            (start[0].bit, start[0].name.as_str()),
            (24, "CAP_SYS_RESOURCE")
        );
    }
}
