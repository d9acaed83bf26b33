//! The BPF objects the agent holds and what the kernel holds system-wide:
//! from `/proc/<pid>/fdinfo` and `bpftool`, so tests can prove nothing is
//! left behind and read the agent's maps without the agent.

use std::{collections::BTreeSet, fs, process::Command};

use keepalive_api::KernelCounters;
use keepalive_common::COUNTER_SLOTS;
use serde_json::Value;

use crate::proc::pids;

/// Names of the kernel programs (keepalive-ebpf/src/main.rs).
pub const PROGRAM_NAMES: &[&str] = &[
    "timer_expire_entry",
    "timer_expire_exit",
    "keepalive_timer_entry",
    "keepalive_timer_exit",
    "write_timer_entry",
    "write_timer_exit",
    "inet_sock_set_state",
    "inet_sk_error_report",
    "tcp_receive_reset",
    "tcp_send_reset",
    "tc_egress",
    "tc_ingress",
    "dump_tcp",
];

/// Names of the maps (keepalive-ebpf/src/maps.rs).
pub const MAP_NAMES: &[&str] = &[
    "EVENTS",
    "SOCKETS",
    "IN_FLIGHT",
    "COUNTERS",
    "SCRATCH",
    "CLOSED",
];

/// BPF object ids, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BpfIds {
    pub progs: BTreeSet<u64>,
    pub maps: BTreeSet<u64>,
    pub links: BTreeSet<u64>,
    /// Link ids of TCX links (`link_type: tcx` in fdinfo).
    pub tcx_links: BTreeSet<u64>,
}

impl BpfIds {
    /// The ids of `self` that are also in `other`.
    pub fn common(&self, other: &BpfIds) -> BpfIds {
        let both = |a: &BTreeSet<u64>, b: &BTreeSet<u64>| a.intersection(b).copied().collect();
        BpfIds {
            progs: both(&self.progs, &other.progs),
            maps: both(&self.maps, &other.maps),
            links: both(&self.links, &other.links),
            tcx_links: both(&self.tcx_links, &other.links),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }
}

fn fdinfo_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Programs, maps and links a process holds file descriptors to.
pub fn held_by(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if !target.starts_with("anon_inode:bpf") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(info) = fs::read_to_string(info) else {
            continue;
        };
        let id = |k: &str| fdinfo_field(&info, k).and_then(|v| v.parse::<u64>().ok());
        if let Some(link) = id("link_id") {
            ids.links.insert(link);
            if fdinfo_field(&info, "link_type").as_deref() == Some("tcx") {
                ids.tcx_links.insert(link);
            }
            if let Some(p) = id("prog_id") {
                ids.progs.insert(p);
            }
        } else if let Some(p) = id("prog_id") {
            ids.progs.insert(p);
        } else if let Some(m) = id("map_id") {
            ids.maps.insert(m);
        }
    }
    ids
}

/// Every BPF object any live process holds a descriptor to.
pub fn held_by_anyone() -> BpfIds {
    let mut all = BpfIds::default();
    for pid in pids() {
        let ids = held_by(pid);
        all.progs.extend(ids.progs);
        all.maps.extend(ids.maps);
        all.links.extend(ids.links);
        all.tcx_links.extend(ids.tcx_links);
    }
    all
}

/// `bpftool ARGS… -j`, parsed.
pub fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .expect("running bpftool (Debian package bpftool)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {text}"))
}

/// A live BPF object as bpftool lists it.
#[derive(Clone, Debug)]
pub struct Object {
    pub id: u64,
    pub name: String,
}

fn objects(kind: &str) -> Vec<Object> {
    bpftool(&[kind, "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| Object {
            id: o["id"].as_u64().unwrap_or(0),
            name: o["name"]
                .as_str()
                .or(o["tp_name"].as_str())
                .unwrap_or("")
                .to_string(),
        })
        .collect()
}

/// Every program, map and link in the kernel now.
pub fn live() -> (Vec<Object>, Vec<Object>, Vec<Object>) {
    (objects("prog"), objects("map"), objects("link"))
}

/// The ids in `ids` that still exist in the kernel.
pub fn still_alive(ids: &BpfIds) -> BpfIds {
    let (progs, maps, links) = live();
    let set = |v: &[Object]| v.iter().map(|o| o.id).collect::<BTreeSet<u64>>();
    ids.common(&BpfIds {
        progs: set(&progs),
        maps: set(&maps),
        links: set(&links),
        tcx_links: BTreeSet::new(),
    })
}

/// Programs and maps named like ours that no live process holds: leaks.
pub fn orphans() -> Vec<String> {
    let (progs, maps, _) = live();
    let held = held_by_anyone();
    let mut out = Vec::new();
    for p in progs {
        if PROGRAM_NAMES.contains(&p.name.as_str()) && !held.progs.contains(&p.id) {
            out.push(format!("prog {} {}", p.id, p.name));
        }
    }
    for m in maps {
        if MAP_NAMES.contains(&m.name.as_str()) && !held.maps.contains(&m.id) {
            out.push(format!("map {} {}", m.id, m.name));
        }
    }
    out
}

/// The id of the map called `name` that process `pid` holds.
pub fn held_map(pid: u32, name: &str) -> u64 {
    let held = held_by(pid);
    objects("map")
        .into_iter()
        .find(|m| m.name == name && held.maps.contains(&m.id))
        .unwrap_or_else(|| panic!("process {pid} holds no map named {name}"))
        .id
}

/// Keys of a hash map keyed by u64 (little endian), via `bpftool map dump`.
pub fn u64_keys(map_id: u64) -> Vec<u64> {
    let id = map_id.to_string();
    bpftool(&["map", "dump", "id", &id])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| u64::from_le_bytes(bytes_of(&e["key"]).try_into().expect("8-byte key")))
        .collect()
}

fn bytes_of(v: &Value) -> Vec<u8> {
    v.as_array()
        .expect("byte array")
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

/// The kernel counters of the agent `pid`, read now from its COUNTERS map
/// (summed over CPUs): slot i is the i-th field of [`KernelCounters`].
pub fn kernel_counters(pid: u32) -> KernelCounters {
    let id = held_map(pid, "COUNTERS").to_string();
    let mut slots = [0u64; COUNTER_SLOTS as usize];
    for e in bpftool(&["map", "dump", "id", &id])
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let key = u32::from_le_bytes(bytes_of(&e["key"]).try_into().expect("4-byte key"));
        let sum: u64 = e["values"]
            .as_array()
            .expect("per-CPU values")
            .iter()
            .map(|v| u64::from_le_bytes(bytes_of(&v["value"]).try_into().expect("u64")))
            .sum();
        if let Some(slot) = slots.get_mut(key as usize) {
            *slot = sum;
        }
    }
    KernelCounters::from_slots(slots)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_fdinfo_fields() {
        let t = "pos:\t0\nflags:\t02000002\nlink_type:\ttcx\nlink_id:\t1362\nprog_id:\t926\n";
        assert_eq!(super::fdinfo_field(t, "link_id").as_deref(), Some("1362"));
        assert_eq!(super::fdinfo_field(t, "link_type").as_deref(), Some("tcx"));
        assert_eq!(super::fdinfo_field(t, "map_id"), None);
    }
}
