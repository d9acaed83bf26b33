//! A memory-limited control group for the agent under test, on either
//! cgroup layout: the unified (v2) hierarchy when it has the memory
//! controller (`memory.max`, `memory.peak`, `memory.events`), else the v1
//! memory controller (`memory.limit_in_bytes`, `memory.max_usage_in_bytes`,
//! `memory.oom_control`). Removed on drop, after its processes are gone.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

/// Which layout the group is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub struct MemoryCgroup {
    pub path: PathBuf,
    pub version: Version,
}

fn write(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {}: {e}", path.display()));
}

fn read_u64(path: &Path, key: Option<&str>) -> u64 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let value = match key {
        None => text.trim(),
        Some(k) => text
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {k} in {}: {text}", path.display())),
    };
    value
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {value:?}: {e}", path.display()))
}

/// Where the memory controller is: the unified hierarchy's root when it
/// has it, else v1's memory hierarchy.
fn memory_root() -> (PathBuf, Version) {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let has_v2_memory =
        fs::read_to_string(v2).is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    let (base, version) = if has_v2_memory {
        (PathBuf::from("/sys/fs/cgroup"), Version::V2)
    } else {
        (PathBuf::from("/sys/fs/cgroup/memory"), Version::V1)
    };
    assert!(base.is_dir(), "no memory controller at {}", base.display());
    (base, version)
}

impl MemoryCgroup {
    /// The existing group at `path` (a container's, as its runtime made
    /// it), not removed on drop.
    pub fn existing(path: &str) -> std::mem::ManuallyDrop<MemoryCgroup> {
        let (base, version) = memory_root();
        let path = base.join(path.trim_start_matches('/'));
        assert!(path.is_dir(), "no memory cgroup at {}", path.display());
        std::mem::ManuallyDrop::new(MemoryCgroup { path, version })
    }

    /// The group's memory limit, bytes.
    pub fn limit(&self) -> u64 {
        match self.version {
            Version::V2 => read_u64(&self.path.join("memory.max"), None),
            Version::V1 => read_u64(&self.path.join("memory.limit_in_bytes"), None),
        }
    }

    /// A new group limited to `limit` bytes.
    pub fn new(name: &str, limit: u64) -> MemoryCgroup {
        let (base, version) = memory_root();
        let path = base.join(crate::world::unique(name));
        fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let g = MemoryCgroup { path, version };
        match version {
            Version::V2 => write(&g.path.join("memory.max"), &limit.to_string()),
            Version::V1 => write(&g.path.join("memory.limit_in_bytes"), &limit.to_string()),
        }
        g
    }

    /// A `Launch` prefix that moves the agent into the group before exec.
    pub fn prefix(&self) -> Vec<String> {
        let procs = self.path.join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$@\"", procs.display()),
            "sh".into(),
        ]
    }

    /// The group's peak memory use so far, bytes.
    pub fn peak(&self) -> u64 {
        match self.version {
            Version::V2 => read_u64(&self.path.join("memory.peak"), None),
            Version::V1 => read_u64(&self.path.join("memory.max_usage_in_bytes"), None),
        }
    }

    /// Processes of the group the kernel killed for memory.
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V2 => read_u64(&self.path.join("memory.events"), Some("oom_kill")),
            Version::V1 => read_u64(&self.path.join("memory.oom_control"), Some("oom_kill")),
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A group can be removed once its processes have exited.
        crate::wait::eventually(Duration::from_secs(5), || {
            fs::remove_dir(&self.path).is_ok()
        });
    }
}
