//! Which program owns a socket, as far as its keepalive knobs go: from the
//! executable's name, the task's `comm`, the command line, the libraries
//! it maps (`libpq.so`, `libjvm.so`, `libnode.so`) and, for a binary with
//! no telling name, a Go build-info section. Recognised once per process
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
use object::{Object, ObjectSection, ReadCache, ReadCacheOps, ReadRef};

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
                let found = go_version(proc).map_or(ProgramInfo::UNKNOWN, |version| ProgramInfo {
                    program: Program::Go,
                    evidence: Evidence::GoBuildInfo,
                    version,
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
    let maps = BufReader::new(File::open(proc.join("maps")).ok()?);
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

/// Build info's magic, at the start of `.go.buildinfo`
/// (`debug/buildinfo` in Go's standard library).
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// The most one read of an executable may take: its section headers (64
/// bytes each, 65535 at most). Any process can run a binary whose headers
/// declare a section of any size (the kernel ignores section headers; a
/// sparse file costs nothing): every size comes from the file, so none is
/// read unbounded.
const MAX_ELF_READ: u64 = 4 << 20;

/// A Go version is a few dozen bytes (`go1.22.5`, `go1.23rc1`,
/// `go1.21.0-X:boringcrypto` is refused like anything else unusual).
const MAX_GO_VERSION: usize = 64;

/// Go build info refused as unlike any Go toolchain's: counted for the
/// agent's metrics (`keepalive_agent_untrusted_refused_total`).
pub static GO_BUILDINFO_REFUSED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// A [`ReadCache`] whose every read is at most [`MAX_ELF_READ`] bytes
/// (strings are bounded by `object` itself, to 4 KiB).
struct Bounded<'a, R: ReadCacheOps>(&'a ReadCache<R>);

// By hand: derived ones would ask R to be Copy; only a reference is copied.
impl<R: ReadCacheOps> Clone for Bounded<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: ReadCacheOps> Copy for Bounded<'_, R> {}

impl<'a, R: ReadCacheOps> ReadRef<'a> for Bounded<'a, R> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size > MAX_ELF_READ {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'a [u8], ()> {
        self.0.read_bytes_at_until(range, delimiter)
    }
}

/// A Go binary's toolchain version: Some(None) for a Go binary whose
/// version is not inline (Go < 1.18 stores pointers) or is refused, None
/// for any other. Reads the headers and the start of that section only
/// (its 32-byte header and the version after it), whatever size the
/// section claims.
fn go_version(proc: &Path) -> Option<Option<String>> {
    go_version_of(File::open(proc.join("exe")).ok()?)
}

fn go_version_of(file: File) -> Option<Option<String>> {
    let cache = ReadCache::new(file);
    let elf = object::File::parse(Bounded(&cache)).ok()?;
    let section = elf.section_by_name(".go.buildinfo")?;
    let (offset, size) = section.file_range()?;
    // Header, the version's uvarint length (one byte for a short one),
    // the version.
    let wanted = size.min((32 + 10 + MAX_GO_VERSION) as u64);
    let data = Bounded(&cache).read_bytes_at(offset, wanted).ok()?;
    buildinfo_version(data)
}

/// The version in the start of a `.go.buildinfo` section (see
/// [`go_version`]).
fn buildinfo_version(data: &[u8]) -> Option<Option<String>> {
    if !data.starts_with(GO_BUILDINFO_MAGIC) || data.len() < 32 {
        return None;
    }
    // Flag 2: version and module info inline at offset 32, each a uvarint
    // length then the bytes.
    const FLAGS_VERSION_INLINE: u8 = 2;
    if data[15] & FLAGS_VERSION_INLINE == 0 {
        return Some(None);
    }
    let version = uvarint(&data[32..]).and_then(|(len, used)| {
        let start = 32 + used;
        data.get(start..start.checked_add(len)?)
    });
    match version.and_then(go_version_text) {
        Some(v) => Some(Some(v)),
        None => {
            GO_BUILDINFO_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(None)
        }
    }
}

/// A version as Go's toolchains write it: at most [`MAX_GO_VERSION`]
/// bytes of `[0-9A-Za-z.+-]`; anything else is refused.
fn go_version_text(bytes: &[u8]) -> Option<String> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-');
    (!bytes.is_empty() && bytes.len() <= MAX_GO_VERSION && bytes.iter().all(allowed))
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn uvarint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(9) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
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
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
        // The test binary is Rust: nothing telling, never an error.
        let me = recognize(Path::new("/proc/self"), &mut HashMap::new());
        assert_eq!(me.program, Program::Unknown);
        assert!(start_time(Path::new("/proc/self")).is_some());
        assert_eq!(
            recognize(Path::new("/proc/4294967295"), &mut HashMap::new()),
            ProgramInfo::UNKNOWN
        );
    }

    /// An ELF64 whose `.go.buildinfo` section header declares `size`
    /// bytes at 4096, holding the build info header and `version`; the
    /// file is sparse up to the declared end (the red team's 12 KiB file).
    fn crafted_elf(size: u64, version: &[u8]) -> File {
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4..7].copy_from_slice(&[2, 1, 1]);
        let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(&mut elf, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut elf, 18, &62u16.to_le_bytes()); // x86-64
        put(&mut elf, 20, &1u32.to_le_bytes());
        put(&mut elf, 40, &64u64.to_le_bytes()); // e_shoff
        put(&mut elf, 52, &64u16.to_le_bytes()); // e_ehsize
        put(&mut elf, 54, &56u16.to_le_bytes());
        put(&mut elf, 58, &64u16.to_le_bytes()); // e_shentsize
        put(&mut elf, 60, &3u16.to_le_bytes()); // e_shnum
        put(&mut elf, 62, &1u16.to_le_bytes()); // e_shstrndx
        let names = b"\0.shstrtab\0.go.buildinfo\0";
        let section = |b: &mut Vec<u8>, i: usize, name: u32, kind: u32, off: u64, len: u64| {
            let at = 64 + i * 64;
            b[at..at + 4].copy_from_slice(&name.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
            b[at + 24..at + 32].copy_from_slice(&off.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&len.to_le_bytes());
        };
        section(&mut elf, 1, 1, 3, 256, names.len() as u64);
        section(&mut elf, 2, 11, 1, 4096, size);
        put(&mut elf, 256, names);
        let mut info = GO_BUILDINFO_MAGIC.to_vec();
        info.extend_from_slice(&[8, 2]);
        info.resize(32, 0);
        let mut len = version.len();
        while len >= 0x80 {
            info.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        info.push(len as u8);
        info.extend_from_slice(version);
        elf.extend_from_slice(&info);
        let path = std::env::temp_dir().join(format!("ka-elf-{}-{size}", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(4096 + size).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_section_of_any_declared_size_is_read_only_for_its_version() {
        // 32 GiB declared (more than the machine's memory, in a sparse
        // file): only the header and the version are read.
        let file = crafted_elf(32 << 30, b"go1.22.5");
        assert_eq!(go_version_of(file), Some(Some("go1.22.5".into())));
    }

    #[test]
    fn a_version_unlike_go_s_is_refused_and_counted() {
        let refused = || GO_BUILDINFO_REFUSED.load(std::sync::atomic::Ordering::Relaxed);
        let before = refused();
        let control = vec![0x1b; 1 << 20];
        assert_eq!(go_version_of(crafted_elf(2 << 20, &control)), Some(None));
        assert_eq!(
            go_version_of(crafted_elf(4096, b"go1.22\n[fake]")),
            Some(None)
        );
        assert!(refused() >= before + 2);
        assert_eq!(go_version_text(b"go1.23rc1"), Some("go1.23rc1".into()));
        assert_eq!(go_version_text(&[b'1'; 65]), None);
    }
}
