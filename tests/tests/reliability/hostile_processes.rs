//! Processes any local user can run, each against the agent under the
//! DaemonSet's 256 MiB memory limit, as the red team ran them as nobody
//! (uid 65534): a Go binary whose section headers claim a 512 MiB
//! `.go.buildinfo`, a process with 60000 mappings, and processes in cgroups
//! of the user's own named like a pod's container and like a system unit.
//! Each time the agent stays up within its memory, names what it can
//! trust and nothing it cannot.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use keepalive_api::{Program, SocketRow};
use keepalive_tests::{cgroup::MemoryCgroup, prometheus::temp_dir, rng, wait::eventually_some};

use super::*;

/// The agent's limit in the shipped DaemonSet.
const LIMIT: u64 = 256 << 20;

/// Connects to its own listener on 127.0.0.1:PORT with keepalive and
/// holds both ends; prints "ready".
const GO_PROGRAM: &str = r#"package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err == nil {
				defer c.Close()
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Println("ready")
	time.Sleep(time.Hour)
}
"#;

/// Maps a file 60000 times (alternating protections, so that no two
/// mappings merge), then connects to its own listener and holds it.
const MAPPINGS_PROGRAM: &str = r#"
import ctypes, os, socket, sys, tempfile
port = int(sys.argv[1])
f = tempfile.TemporaryFile()
f.write(b"\0" * 8192)
f.flush()
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
for i in range(60000):
    # PROT_READ, or PROT_READ|PROT_WRITE; MAP_PRIVATE
    if libc.mmap(None, 4096, 1 if i % 2 else 3, 2, f.fileno(), 4096 * (i % 2)) in (None, ctypes.c_void_p(-1).value):
        sys.exit("mmap: errno %d" % ctypes.get_errno())
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen()
c = socket.create_connection(("127.0.0.1", port))
a, _ = srv.accept()
print("ready", flush=True)
sys.stdin.read()
"#;

/// A process of nobody's, killed on drop.
struct Nobody(Child);

impl Nobody {
    /// Runs `argv` as uid 65534, first writing its pid into `cgroup`'s
    /// `cgroup.procs` if given; waits for its "ready" line.
    fn run(argv: &[&str], cgroup: Option<&Path>) -> Nobody {
        let mut cmd = Command::new("sh");
        let procs = cgroup.map(|c| c.join("cgroup.procs"));
        cmd.arg("-c").arg(match &procs {
            Some(p) => format!(
                "echo $$ > {} && exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"",
                p.display()
            ),
            None => "exec setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"".into(),
        });
        cmd.arg("sh").args(argv);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv");
        let mut line = String::new();
        use std::io::BufRead as _;
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the hostile process's output");
        assert_eq!(line.trim(), "ready", "{argv:?} did not start: {line}");
        Nobody(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Nobody {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent under a 256 MiB memory cgroup, inventories every second.
fn limited_agent(memory: &MemoryCgroup) -> Daemon {
    let prefix = memory.prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    Daemon::launch(Launch {
        prefix: &prefix,
        args: &["--inventory-seconds", "1"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"))
}

/// The agent's row for the client socket on `port` owned by `pid`.
fn client_row(agent: &Daemon, port: u16, pid: u32) -> Option<SocketRow> {
    agent
        .sockets(&format!("port={port}"))
        .into_iter()
        .find(|r| {
            r.remote.map(|a| a.port()) == Some(port) && r.owner.as_ref().map(|o| o.pid) == Some(pid)
        })
}

fn assert_within_limit(agent: &Daemon, memory: &MemoryCgroup, what: &str) {
    let (status, _) = agent.get("/healthz");
    assert_eq!(status, 200, "{what}: /healthz");
    assert_eq!(memory.oom_kills(), 0, "{what}: the agent was OOM-killed");
    eprintln!(
        "{what}: agent peak {:.1} MiB of {} MiB",
        memory.peak() as f64 / (1 << 20) as f64,
        LIMIT >> 20
    );
}

/// Builds [`GO_PROGRAM`], then makes its `.go.buildinfo` section header
/// claim 512 MiB (the kernel ignores section headers: it still runs).
fn go_binary_claiming_512_mib(dir: &Path) -> PathBuf {
    let src = dir.join("main.go");
    std::fs::write(&src, GO_PROGRAM).unwrap();
    let out = keepalive_tests::golang::build(dir, &src, "hostile-go");
    let mut elf = std::fs::read(&out).unwrap();
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&elf, 0x28),
        u16_at(&elf, 0x3a),
        u16_at(&elf, 0x3c),
        u16_at(&elf, 0x3e),
    );
    let names = u64_at(&elf, shoff + shstrndx * shentsize + 24);
    let header = (0..shnum)
        .map(|i| shoff + i * shentsize)
        .find(|h| {
            let name = names + u32::from_le_bytes(elf[*h..*h + 4].try_into().unwrap()) as usize;
            elf[name..].starts_with(b".go.buildinfo\0")
        })
        .expect("a Go binary has .go.buildinfo");
    elf[header + 32..header + 40].copy_from_slice(&(512u64 << 20).to_le_bytes());
    std::fs::write(&out, &elf).unwrap();
    out
}

#[test]
fn a_go_binary_claiming_a_512_mib_build_info_is_read_for_its_version_only() {
    let dir = temp_dir("keepalive-hostile-go");
    let binary = go_binary_claiming_512_mib(&dir);
    let memory = MemoryCgroup::new("ka-hostile-go", LIMIT);
    let agent = limited_agent(&memory);
    let port = keepalive_tests::prometheus::free_port();
    let go = Nobody::run(&[binary.to_str().unwrap(), &port.to_string()], None);
    let row = eventually_some(Duration::from_secs(20), || {
        client_row(&agent, port, go.pid())
            .filter(|r| r.owner.as_ref().and_then(|o| o.program.as_ref()).is_some())
    })
    .expect("the Go program's socket, recognised");
    let program = row.owner.unwrap().program.unwrap();
    assert_eq!(program.program, Program::Go, "{program:?}");
    assert!(
        program
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("go1.")),
        "{program:?}"
    );
    // Inventories go on reading it.
    std::thread::sleep(Duration::from_secs(3));
    assert_within_limit(&agent, &memory, "a 512 MiB .go.buildinfo");
    drop(go);
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_process_with_60000_mappings_is_named_without_stalling_the_inventory() {
    let memory = MemoryCgroup::new("ka-hostile-maps", LIMIT);
    let agent = limited_agent(&memory);
    let port = keepalive_tests::prometheus::free_port();
    let p = Nobody::run(
        &[
            "/usr/bin/python3",
            "-c",
            MAPPINGS_PROGRAM,
            &port.to_string(),
        ],
        None,
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.pid()))
        .map(|m| m.lines().count())
        .unwrap_or(0);
    assert!(maps >= 60000, "{maps} mappings");
    let row = eventually_some(Duration::from_secs(20), || {
        client_row(&agent, port, p.pid())
            .filter(|r| r.owner.as_ref().and_then(|o| o.program.as_ref()).is_some())
    })
    .expect("the process's socket, named");
    assert_eq!(row.owner.unwrap().program.unwrap().program, Program::Python);
    std::thread::sleep(Duration::from_secs(3));
    let took = agent
        .metric(
            "keepalive_agent_scan_duration_seconds",
            &[("scan", "inventory")],
        )
        .expect("the inventory's duration");
    eprintln!("{maps} mappings: the last inventory took {:.3} s", took);
    assert_within_limit(&agent, &memory, "60000 mappings");
    drop(p);
    agent.stop();
}

/// A cgroup in nobody's own delegated subtree (`user@65534.service`, as
/// systemd delegates one to every user), in the unified hierarchy.
fn delegated(name: &str) -> PathBuf {
    let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        .expect("a cgroup v2 hierarchy (pure v2, or v1's /sys/fs/cgroup/unified)");
    let dir = unified
        .join("user.slice/user-65534.slice/user@65534.service")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn remove_up_to_user_slice(dir: &Path) {
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.ends_with("user.slice") {
            break;
        }
        let _ = std::fs::remove_dir(d);
        at = d.parent();
    }
}

#[test]
fn a_users_cgroups_named_like_a_pod_or_a_unit_name_nothing() {
    let uid = format!(
        "{}_{}_{}_{}_{}",
        &rng::hex(8),
        &rng::hex(4),
        &rng::hex(4),
        &rng::hex(4),
        &rng::hex(12)
    );
    let container = rng::hex(64);
    let as_pod = delegated(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{container}.scope"
    ));
    let as_unit = delegated("postgresql.service");
    let memory = MemoryCgroup::new("ka-hostile-cgroup", LIMIT);
    let agent = limited_agent(&memory);
    let (p1, p2) = (
        keepalive_tests::prometheus::free_port(),
        keepalive_tests::prometheus::free_port(),
    );
    let program = r#"
import socket, sys
port = int(sys.argv[1])
srv = socket.socket(); srv.bind(("127.0.0.1", port)); srv.listen()
c = socket.create_connection(("127.0.0.1", port)); a, _ = srv.accept()
print("ready", flush=True); sys.stdin.read()
"#;
    let fake_pod = Nobody::run(
        &["/usr/bin/python3", "-c", program, &p1.to_string()],
        Some(&as_pod),
    );
    let fake_unit = Nobody::run(
        &["/usr/bin/python3", "-c", program, &p2.to_string()],
        Some(&as_unit),
    );
    for (port, pid, what) in [(p1, fake_pod.pid(), "pod"), (p2, fake_unit.pid(), "unit")] {
        let row = eventually_some(Duration::from_secs(20), || client_row(&agent, port, pid))
            .unwrap_or_else(|| panic!("the {what} impersonator's socket"));
        let owner = row.owner.clone().unwrap();
        // The user's own manager is what the path can be trusted for.
        assert_eq!(
            (
                row.pod_uid.as_deref(),
                owner.container_id.as_deref(),
                owner.service.as_deref()
            ),
            (None, None, Some("user@65534.service")),
            "a {what} named from a user's own cgroup: {row:#?}"
        );
    }
    let (_, text) = agent.get("/metrics");
    assert!(
        !text.contains(&uid.replace('_', "-")),
        "the fake pod uid in /metrics"
    );
    assert!(
        !text.contains("service=\"postgresql.service\""),
        "the fake unit in /metrics"
    );
    assert_within_limit(&agent, &memory, "impersonating cgroups");
    drop((fake_pod, fake_unit));
    agent.stop();
    remove_up_to_user_slice(&as_pod);
    remove_up_to_user_slice(&as_unit);
}

/// Listens on 127.0.0.1:PORT and connects to itself N times, holding
/// every end; with "keepalive", each client probes every second. Prints
/// "ready".
const FILL_PROGRAM: &str = r#"
import socket, sys
port, n, keepalive = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "keepalive"
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen(n)
held = []
for i in range(n):
    c = socket.socket()
    if keepalive:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    c.connect(("127.0.0.1", port))
    held.append(c)
    held.append(srv.accept()[0])
print("ready", flush=True)
sys.stdin.read()
"#;

/// Nobody fills a 64-socket table, and the kernel's socket map with 100
/// probing sockets, all its own; root's new keepalive connection (in a
/// namespace of its own, to count its probes) still appears, both ends,
/// its probes counted exactly: the filler's sockets make room in the
/// table, and the kernel map keeps a quarter for other users (finding 4:
/// first come was first kept, in both).
#[test]
fn a_user_filling_the_socket_table_does_not_hide_another_users_connection() {
    let agent = Daemon::launch(Launch {
        args: &["--max-sockets", "64", "--inventory-seconds", "1"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"));
    let fill_port = keepalive_tests::prometheus::free_port();
    let filler = Nobody::run(
        &[
            "/usr/bin/python3",
            "-c",
            FILL_PROGRAM,
            &fill_port.to_string(),
            "100",
            "keepalive",
        ],
        None,
    );
    // Inventories take the filler's sockets in until the table is full,
    // and its probes fill its share of the kernel map.
    let refused = eventually_some(Duration::from_secs(10), || {
        agent
            .metric("keepalive_agent_sockets_refused_total", &[])
            .filter(|v| *v > 0.0)
    })
    .expect("a full table refuses the filler's sockets");
    let share_refused = eventually_some(Duration::from_secs(10), || {
        agent
            .metric("keepalive_agent_socket_map_share_refused_total", &[])
            .filter(|v| *v > 0.0)
    })
    .expect("the kernel map refuses the filler's sockets past its share");
    let nobody_rows = agent.sockets("").iter().filter(|r| r.uid == 65534).count();
    let ns = Netns::new("kshare");
    let before = ns.run(|| tcp_ext("TCPKeepAlive"));
    let (client, server) = ns.run(|| keepalive_pairs(1).pop().unwrap());
    let cookie = sock::cookie(&client);
    std::thread::sleep(Duration::from_secs(4));
    let (low, row, high) = eventually_some(Duration::from_secs(10), || {
        let low = ns.run(|| tcp_ext("TCPKeepAlive")) - before;
        let row = agent.sockets("").into_iter().find(|r| r.cookie == cookie)?;
        let high = ns.run(|| tcp_ext("TCPKeepAlive")) - before;
        (row.probes > 0).then_some((low, row, high))
    })
    .expect("root's keepalive connection, with its probes, in a table nobody filled");
    let evicted = agent
        .metric("keepalive_agent_sockets_evicted_total", &[])
        .unwrap_or(0.0);
    let rows = agent.sockets("");
    let nobody = rows.iter().filter(|r| r.uid == 65534).count();
    eprintln!(
        "table of 64: nobody held {nobody_rows} before root connected (refused {refused}, \
         kernel map share refused {share_refused}); root's keepalive end: {} probes \
         (its namespace's TCPKeepAlive {low}..={high}); nobody then {nobody} of 64, evicted {evicted}",
        row.probes
    );
    assert_eq!(row.uid, 0, "{row:?}");
    assert!(
        (low..=high).contains(&row.probes),
        "{} probes counted, TCPKeepAlive {low}..={high}",
        row.probes
    );
    assert!(
        evicted >= 1.0,
        "keepalive_agent_sockets_evicted_total {evicted}"
    );
    // Both ends of root's connection hold a place; the filler never all.
    let accepted = sock::cookie(&server);
    assert!(
        rows.iter().any(|r| r.cookie == accepted),
        "root's accepted end"
    );
    assert!(nobody < 64, "the filler holds the whole table");
    drop((client, server, filler));
    agent.stop();
}
