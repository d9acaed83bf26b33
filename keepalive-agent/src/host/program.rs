//! Which program owns a socket, as far as its keepalive knobs go: from the
//! executable's name, the task's `comm`, the command line, the libraries
//! it maps (`libpq.so`, `libjvm.so`, `libnode.so`) and, for a binary with
//! no telling name, a Go build-info section ([`go_buildinfo`]). Recognised once per process
//! (keyed by pid and start time, so a reused pid is seen afresh), during
//! the inventory and never on the ring-buffer path. A process that cannot
//! be read is `unknown`, never an error.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
    sync::Arc,
};

use keepalive_api::{Evidence, Program, ProgramInfo};

use super::go_buildinfo;

/// Recognised programs of the sockets' owners, by pid.
#[derive(Default)]
pub struct Programs {
    by_pid: HashMap<u32, Recognized>,
}

struct Recognized {
    /// `/proc/PID/stat` field 22: tells a reused pid apart.
    start_time: u64,
    info: Arc<ProgramInfo>,
}

/// Found by [`recognize_changed`], for [`Programs::update`].
pub struct Found {
    pid: u32,
    start_time: u64,
    info: ProgramInfo,
}

impl Programs {
    pub fn get(&self, pid: u32) -> Option<&ProgramInfo> {
        self.by_pid.get(&pid).map(|r| &*r.info)
    }

    /// The start time each known pid had when it was recognised.
    pub fn start_times(&self) -> HashMap<u32, u64> {
        self.by_pid
            .iter()
            .map(|(pid, r)| (*pid, r.start_time))
            .collect()
    }

    /// Takes what was found and forgets every pid no longer an owner.
    pub fn update(&mut self, found: Vec<Found>, owners: &HashSet<u32>) {
        for f in found {
            self.by_pid.insert(
                f.pid,
                Recognized {
                    start_time: f.start_time,
                    info: Arc::new(f.info),
                },
            );
        }
        self.by_pid.retain(|pid, _| owners.contains(pid));
    }
}

/// Recognises every pid of `owners` that is new or whose start time is not
/// the one in `known` (the pid was reused). Exited processes are skipped.
pub fn recognize_changed(owners: &HashSet<u32>, known: &HashMap<u32, u64>) -> Vec<Found> {
    let mut exes: HashMap<(u64, u64), ProgramInfo> = HashMap::new();
    owners
        .iter()
        .filter_map(|&pid| {
            let proc = Path::new("/proc").join(pid.to_string());
            let start_time = start_time(&proc)?;
            if known.get(&pid) == Some(&start_time) {
                return None;
            }
            let info = recognize(&proc, &mut exes);
            Some(Found {
                pid,
                start_time,
                info,
            })
        })
        .collect()
}

/// Field 22 of `/proc/PID/stat`, counted after the parenthesised comm
/// (which may itself hold spaces and parentheses).
fn start_time(proc: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The program of the process at `proc` (`/proc/PID`). `exes` keeps the
/// answers of binaries whose name said nothing, by (device, inode), so a
/// hundred workers of one Go binary are read once.
pub fn recognize(proc: &Path, exes: &mut HashMap<(u64, u64), ProgramInfo>) -> ProgramInfo {
    let exe = std::fs::read_link(proc.join("exe")).ok();
    let exe_name = exe.as_deref().and_then(Path::file_name).map(|n| {
        n.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_owned()
    });
    let comm = super::procfs::read_lossy(proc.join("comm"))
        .map(|c| c.trim_end().to_owned())
        .ok();
    let named = [
        (exe_name.as_deref(), Evidence::Exe),
        (comm.as_deref(), Evidence::Comm),
    ]
    .into_iter()
    .find_map(|(name, evidence)| Some((by_name(name?)?, evidence)));
    match named {
        // A JVM is told apart by its main class; a Python by the libpq it
        // may have loaded (psycopg): that is where its keepalive is set.
        Some((Program::Java, evidence)) => java(proc, evidence),
        Some((Program::Python, evidence)) => match library(proc) {
            Some(Program::Libpq) => info(Program::Libpq, Evidence::Library),
            _ => info(Program::Python, evidence),
        },
        Some((program, evidence)) => info(program, evidence),
        None => match library(proc) {
            Some(Program::Java) => java(proc, Evidence::Library),
            Some(program) => info(program, Evidence::Library),
            None => {
                let key = exe_key(proc);
                if let Some(known) = key.and_then(|k| exes.get(&k)) {
                    return known.clone();
                }
                let found = go_buildinfo::version(proc).map_or(ProgramInfo::UNKNOWN, |version| {
                    ProgramInfo {
                        program: Program::Go,
                        evidence: Evidence::GoBuildInfo,
                        version,
                    }
                });
                if let Some(k) = key {
                    exes.insert(k, found.clone());
                }
                found
            }
        },
    }
}

fn info(program: Program, evidence: Evidence) -> ProgramInfo {
    ProgramInfo {
        program,
        evidence,
        version: None,
    }
}

/// Programs whose executable or task name says what they are.
fn by_name(name: &str) -> Option<Program> {
    let program = match name {
        "postgres" | "postmaster" => Program::Postgres,
        // Debian's redis-server is a link to redis-check-rdb, which tells
        // itself apart by argv[0]; its comm stays redis-server.
        "redis-server" | "valkey-server" => Program::Redis,
        "pgbouncer" => Program::Pgbouncer,
        "haproxy" => Program::Haproxy,
        "nginx" => Program::Nginx,
        // OpenSSH ≥ 9.8 serves each connection from sshd-session.
        "sshd" | "sshd-session" => Program::Sshd,
        "ssh" => Program::Ssh,
        "mysqld" | "mariadbd" => Program::MysqlServer,
        "mysql" | "mariadb" => Program::MysqlClient,
        "node" | "nodejs" => Program::Node,
        "java" => Program::Java,
        "psql" | "pgbench" | "pg_dump" | "pg_basebackup" | "pg_receivewal" => Program::Libpq,
        n if n.starts_with("python") => Program::Python,
        _ => return None,
    };
    Some(program)
}

/// A JVM running Elasticsearch or OpenSearch, else plain Java.
fn java(proc: &Path, evidence: Evidence) -> ProgramInfo {
    let mut cmdline = Vec::new();
    let read = File::open(proc.join("cmdline"))
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut cmdline))
        .is_ok();
    let search = |needle: &[u8]| cmdline.windows(needle.len()).any(|w| w == needle);
    if read && (search(b"org.elasticsearch.") || search(b"org.opensearch.")) {
        return info(Program::Elasticsearch, Evidence::Cmdline);
    }
    info(Program::Java, evidence)
}

/// Lines of `/proc/PID/maps` read at most: a process controls how many
/// mappings it has (60000 make a 231 MB file), and a program's libraries
/// are mapped at start, among its first few thousand.
const MAX_MAPS_LINES: usize = 16384;

/// The first telling library in the process's mappings.
fn library(proc: &Path) -> Option<Program> {
    library_in(BufReader::new(File::open(proc.join("maps")).ok()?))
}

/// [`library`] from the text of a `/proc/PID/maps`.
pub fn library_in(maps: impl BufRead) -> Option<Program> {
    let mut lines = maps.lines().map_while(Result::ok).take(MAX_MAPS_LINES);
    lines.find_map(|line| {
        let file = line.rsplit('/').next()?;
        // Wheels bundle their own copies: libpq-9a8b7c6d.so.5.16.
        if file.starts_with("libpq") && file.contains(".so") {
            Some(Program::Libpq)
        } else if file.starts_with("libjvm.so") {
            Some(Program::Java)
        } else if file.starts_with("libnode.so") {
            Some(Program::Node)
        } else {
            None
        }
    })
}

fn exe_key(proc: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(proc.join("exe")).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_our_own_process() {
        assert_eq!(by_name("redis-server"), Some(Program::Redis));
        assert_eq!(by_name("python3.11"), Some(Program::Python));
        assert_eq!(by_name("psql"), Some(Program::Libpq));
        assert_eq!(by_name("sshd-session"), Some(Program::Sshd));
        assert_eq!(by_name("curl"), None);
        // The test binary is Rust: nothing telling, never an error.
        let me = recognize(Path::new("/proc/self"), &mut HashMap::new());
        assert_eq!(me.program, Program::Unknown);
        assert!(start_time(Path::new("/proc/self")).is_some());
        assert_eq!(
            recognize(Path::new("/proc/4294967295"), &mut HashMap::new()),
            ProgramInfo::UNKNOWN
        );
    }
}
