//! The agent as a process the reliability tests can wrap (`setpriv`), give
//! an environment, kill with any signal and look into: its pid, its
//! captured stderr, the BPF programs, maps and links it holds (from
//! `/proc/<pid>/fdinfo`), its threads' capabilities and memory; plus what
//! `bpftool` sees system-wide and every namespace's `TCPKeepAlive`.
//!
//! [`crate::agent::Agent`] inherits stderr and hides its child; this one
//! captures stderr (so tests can bound and grep the log) and exposes the pid.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::{fs::MetadataExt as _, process::ExitStatusExt as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::agent::binary;

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
    "tc_egress",
    "tc_ingress",
    "dump_tcp",
];

/// Names of the maps (keepalive-ebpf/src/maps.rs).
pub const MAP_NAMES: &[&str] = &["EVENTS", "SOCKETS", "IN_FLIGHT", "COUNTERS", "SCRATCH"];

/// A running agent whose stdout (JSON lines) and stderr are captured.
pub struct Daemon {
    child: Child,
    lines: Receiver<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Every stdout record received so far, in order.
    pub records: Vec<Value>,
    pub ready: Value,
}

/// An agent that ended before printing `ready`.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: Vec<Value>,
    pub stderr: Vec<String>,
}

fn spawn_reader<R: std::io::Read + Send + 'static>(
    from: R,
    mut each: impl FnMut(String) -> bool + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if !each(line) {
                break;
            }
        }
    })
}

impl Daemon {
    /// `keepalive-agent run --json --listen 127.0.0.1:0 EXTRA…` with
    /// `KEEPALIVE_LOG=info`; panics unless it becomes ready.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::launch(&[], extra, &[])
            .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"))
    }

    /// `PREFIX… keepalive-agent run --json --listen 127.0.0.1:0 EXTRA…` with
    /// `ENV` (KEEPALIVE_LOG defaults to info). Err when it exits first.
    pub fn launch(prefix: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon, Exited> {
        crate::require_root();
        let bin = binary();
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["run", "--json", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KEEPALIVE_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting keepalive-agent");
        let (tx, lines) = mpsc::channel();
        spawn_reader(child.stdout.take().expect("stdout"), move |line| {
            let v = serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|_| serde_json::json!({ "event": "not_json", "line": line }));
            tx.send(v).is_ok()
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err_reader = spawn_reader(child.stderr.take().expect("stderr"), move |line| {
            sink.lock().unwrap().push(line);
            true
        });
        let mut d = Daemon {
            child,
            lines,
            stderr,
            records: Vec::new(),
            ready: Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match d.lines.recv_timeout(left) {
                Ok(v) => {
                    let ready = v["event"] == "ready";
                    d.records.push(v.clone());
                    if ready {
                        d.ready = v;
                        return Ok(d);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = d.child.wait().expect("waiting for the agent");
                    let _ = err_reader.join();
                    return Err(Exited {
                        status,
                        stdout: std::mem::take(&mut d.records),
                        stderr: d.stderr(),
                    });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "agent neither ready nor gone after 20 s; stderr:\n{}",
                        d.stderr().join("\n")
                    )
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// How many stderr lines so far (a mark for [`Daemon::stderr_since`]).
    pub fn stderr_len(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    pub fn stderr_since(&self, mark: usize) -> Vec<String> {
        self.stderr.lock().unwrap()[mark..].to_vec()
    }

    /// Waits until `pred` holds for the stderr lines after `mark`.
    pub fn wait_stderr(
        &self,
        mark: usize,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.stderr_since(mark)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Collects records until one matches `pred` or `timeout` passes.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(r) = self.records.iter().find(|r| pred(r)) {
            return Some(r.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.records.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "agent exited early: {:?}; stderr:\n{}",
                    self.child.try_wait(),
                    self.stderr().join("\n")
                ),
            }
        }
        None
    }

    /// Takes in whatever arrived within `settle`.
    pub fn settle(&mut self, settle: Duration) {
        let _ = self.wait_for(settle, |_| false);
    }

    /// `host:port` of the HTTP API.
    pub fn addr(&self) -> String {
        self.ready["listen"]
            .as_str()
            .expect("listen in ready")
            .to_string()
    }

    /// GET `path`: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr());
        let resp = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body()
                .read_to_string()
                .expect("reading the response"),
        )
    }

    /// The value of one series in /metrics (labels: a subset).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        crate::metrics::value(&text, name, labels)
    }

    /// SIGTERM, then the final `stopped` record; the exit must be clean.
    pub fn stop(mut self) -> (Vec<Value>, Value) {
        self.signal(libc::SIGTERM);
        let stopped = self
            .wait_for(Duration::from_secs(10), |r| r["event"] == "stopped")
            .unwrap_or_else(|| {
                panic!(
                    "no `stopped` record after SIGTERM; stderr:\n{}",
                    self.stderr().join("\n")
                )
            });
        let status = self.child.wait().expect("waiting for the agent");
        assert!(
            status.success(),
            "agent exited with {status}; stderr:\n{}",
            self.stderr().join("\n")
        );
        (std::mem::take(&mut self.records), stopped)
    }

    /// SIGKILL: no chance to clean up. Returns the exit status.
    pub fn kill(mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.child.wait().expect("waiting for the agent")
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > deadline {
                    self.signal(libc::SIGKILL);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.wait();
        }
    }
}

/// What a short-lived command did.
#[derive(Debug)]
pub struct Outcome {
    /// None when killed (by the timeout or a signal).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs the agent binary with `args` and `env` (on top of ours), killing
/// it after `timeout`.
pub fn run_agent_cli(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Outcome {
    run_with_timeout(&[], args, env, timeout)
}

/// `PREFIX… keepalive-agent ARGS…`, killed after `timeout`.
pub fn run_with_timeout(
    prefix: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Outcome {
    let bin = binary();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting keepalive-agent");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting") {
            break s;
        }
        if Instant::now() > deadline {
            timed_out = true;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            break child.wait().expect("waiting");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        signal: status.signal(),
        timed_out,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

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

fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("reading /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
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

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// Index of each counter in the kernel's COUNTERS per-CPU array
/// (keepalive_common::counter), by the name `stopped` uses.
pub const COUNTER_NAMES: &[&str] = &[
    "timer_fires",
    "probes",
    "wire_probes",
    "wire_zero_window_probes",
    "acks",
    "keepalive_timeouts",
    "events_lost",
    "socket_map_full",
    "read_errors",
    "in_flight_full",
    "no_cookie",
    "closed_in_timer",
];

/// The kernel counters of the agent `pid`, read now from its COUNTERS map
/// (summed over CPUs), by name.
pub fn kernel_counters(pid: u32) -> BTreeMap<&'static str, u64> {
    let id = held_map(pid, "COUNTERS").to_string();
    let mut out = BTreeMap::new();
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
        if let Some(name) = COUNTER_NAMES.get(key as usize) {
            out.insert(*name, sum);
        }
    }
    out
}

fn namespace_paths() -> BTreeMap<u64, std::path::PathBuf> {
    let mut found = BTreeMap::new();
    let mut add = |path: std::path::PathBuf| {
        if let Ok(meta) = fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    };
    if let Ok(named) = fs::read_dir("/run/netns") {
        for entry in named.flatten() {
            add(entry.path());
        }
    }
    for pid in pids() {
        add(format!("/proc/{pid}/ns/net").into());
    }
    found
}

/// Interfaces in every network namespace reachable now (what the agent's
/// default `--interfaces '*'` covers).
pub fn interfaces_everywhere() -> usize {
    namespace_paths()
        .values()
        .filter_map(|path| {
            let file = fs::File::open(path).ok()?;
            std::thread::scope(|s| {
                s.spawn(|| {
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: setns on an fd we own; this thread only.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return None;
                    }
                    // Follows the thread's namespace (/sys/class/net does not).
                    let dev = fs::read_to_string("/proc/thread-self/net/dev").ok()?;
                    Some(dev.lines().skip(2).count())
                })
                .join()
                .ok()
                .flatten()
            })
        })
        .sum()
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
        "/../keepalive-agent/src/caps.rs"
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

fn parse_tcp_ext(text: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = header.iter().position(|h| *h == name)?;
    values.get(i)?.parse().ok()
}

/// `TCPKeepAlive` of every network namespace reachable now (through a
/// process living in it or an `ip netns` mount), by namespace inode.
pub fn keepalive_probes_everywhere() -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for pid in pids() {
        let Ok(meta) = fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if out.contains_key(&meta.ino()) {
            continue;
        }
        if let Some(v) = fs::read_to_string(format!("/proc/{pid}/net/netstat"))
            .ok()
            .and_then(|t| parse_tcp_ext(&t, "TCPKeepAlive"))
        {
            out.insert(meta.ino(), v);
        }
    }
    if let Ok(named) = fs::read_dir("/run/netns") {
        for entry in named.flatten() {
            let Ok(meta) = fs::metadata(entry.path()) else {
                continue;
            };
            if out.contains_key(&meta.ino()) {
                continue;
            }
            let Ok(file) = fs::File::open(entry.path()) else {
                continue;
            };
            let v = std::thread::scope(|s| {
                s.spawn(|| {
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: setns on an fd we own; this thread only.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return None;
                    }
                    fs::read_to_string("/proc/thread-self/net/netstat")
                        .ok()
                        .and_then(|t| parse_tcp_ext(&t, "TCPKeepAlive"))
                })
                .join()
                .ok()
                .flatten()
            });
            if let Some(v) = v {
                out.insert(meta.ino(), v);
            }
        }
    }
    out
}

/// Probes sent node-wide between two [`keepalive_probes_everywhere`]
/// snapshots (a namespace born in between counts from zero).
pub fn probes_between(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> u64 {
    after
        .iter()
        .map(|(ns, v)| v.saturating_sub(before.get(ns).copied().unwrap_or(0)))
        .sum()
}

/// One raw HTTP/1.1 GET with `Connection: close`: the status code, or None
/// when nothing (or no status line) came back within `timeout`.
pub fn raw_get_status(addr: &str, target: &[u8], timeout: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n");
    s.write_all(&req).ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && line.len() < 200 {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&line);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A deterministic pseudo-random generator (SplitMix64) for property loops.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdinfo_fields() {
        let t = "pos:\t0\nflags:\t02000002\nlink_type:\ttcx\nlink_id:\t1362\nprog_id:\t926\n";
        assert_eq!(fdinfo_field(t, "link_id").as_deref(), Some("1362"));
        assert_eq!(fdinfo_field(t, "link_type").as_deref(), Some("tcx"));
        assert_eq!(fdinfo_field(t, "map_id"), None);
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }

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

    #[test]
    fn sums_probe_deltas() {
        let before = BTreeMap::from([(1, 10), (2, 5)]);
        let after = BTreeMap::from([(1, 12), (2, 5), (3, 4)]);
        assert_eq!(probes_between(&before, &after), 6);
    }
}
