//! The privileges the DaemonSet and the unit give the agent: enough for everything it does, each one needed.

use keepalive_api::{SocketRow, TcpState};
use keepalive_tests::wait::eventually_some;

use super::*;
use crate::kubernetes::container_env;
use crate::systemd::unit_settings;

/// capabilities.add of the DaemonSet.
pub(crate) const DAEMONSET_CAPS: [&str; 8] = [
    "BPF",
    "PERFMON",
    "NET_ADMIN",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYSLOG",
    "SYS_RESOURCE",
];
/// The unit's capabilities: the DaemonSet's but CAP_SYS_RESOURCE
/// (LimitMEMLOCK does its job).
pub(crate) const UNIT_CAPS: [&str; 7] = [
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_NET_ADMIN",
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYSLOG",
];

fn cap_number(name: &str) -> u32 {
    match name.trim_start_matches("CAP_") {
        "DAC_READ_SEARCH" => 2,
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "SYSLOG" => 34,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("no number for capability {other} in this test"),
    }
}

fn cap_name(n: u32) -> &'static str {
    match n {
        2 => "CAP_DAC_READ_SEARCH",
        12 => "CAP_NET_ADMIN",
        19 => "CAP_SYS_PTRACE",
        21 => "CAP_SYS_ADMIN",
        24 => "CAP_SYS_RESOURCE",
        34 => "CAP_SYSLOG",
        38 => "CAP_PERFMON",
        39 => "CAP_BPF",
        _ => "another capability",
    }
}

/// How a deployment starts the agent.
struct Privileges {
    what: &'static str,
    caps: Vec<u32>,
    /// None: root, with the bounding set cut to `caps` (a container).
    /// Some: that uid with `caps` as ambient capabilities (DynamicUser).
    uid: Option<u32>,
}

/// A child stopped with SIGTERM, then SIGKILL, on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        agent::terminate(&mut self.0);
    }
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// The capabilities of `p` this test process can pass on (the rest are
/// not in its own bounding set: said, and left out).
fn capability_mask(p: &Privileges) -> u64 {
    let mut mask = 0u64;
    for &c in &p.caps {
        // SAFETY: prctl with plain integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0, 0, 0) } == 1 {
            mask |= 1 << c;
        } else {
            eprintln!(
                "{}: this test process lacks {} (not in its bounding set): running without it",
                p.what,
                cap_name(c)
            );
        }
    }
    mask
}

/// Becomes `uid` keeping exactly `mask` as permitted, effective,
/// inheritable and ambient capabilities (what systemd's DynamicUser with
/// AmbientCapabilities does).
///
/// # Safety
/// Only between fork and exec: async-signal-safe syscalls on plain values.
unsafe fn become_user_with(uid: u32, mask: u64, last_cap: u32) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: plain syscalls on integers and on structs that live here.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
            || libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(uid, uid, uid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(last_os_error());
        }
        let header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let (lo, hi) = (mask as u32, (mask >> 32) as u32);
        let set = |v| Data {
            effective: v,
            permitted: v,
            inheritable: v,
        };
        let data = [set(lo), set(hi)];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(last_os_error());
        }
        for c in (0..=last_cap).filter(|c| mask & (1 << c) != 0) {
            let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
            if libc::prctl(libc::PR_CAP_AMBIENT, raise, c as libc::c_ulong, 0, 0) != 0 {
                return Err(last_os_error());
            }
        }
    }
    Ok(())
}

/// Starts the agent binary as `p` says, with only `env` in its environment
/// (as a container or a unit would), its stderr into `log`.
fn spawn_agent(p: &Privileges, args: &[&str], env: &BTreeMap<String, String>, log: &Path) -> Proc {
    let last_cap: u32 = read(Path::new("/proc/sys/kernel/cap_last_cap"))
        .trim()
        .parse()
        .unwrap();
    let mask = capability_mask(p);
    let uid = p.uid;
    let mut cmd = agent::command(&[]);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // SAFETY: only async-signal-safe syscalls between fork and exec, on
    // values computed before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for c in (0..=last_cap).filter(|c| mask & (1 << c) == 0) {
                if libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(last_os_error());
                }
            }
            if let Some(uid) = uid {
                become_user_with(uid, mask, last_cap)?;
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(last_os_error());
            }
            Ok(())
        });
    }
    Proc(cmd.spawn().expect("starting the agent"))
}

/// A TCP connection on loopback whose client end only a process of uid
/// 65534 (nobody) holds: `/proc/<pid>/fd` of that process is mode 0500,
/// owned by nobody.
struct HeldByNobody {
    holder: Proc,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
    _listener: TcpListener,
    _server: TcpStream,
}

fn socket_held_by_nobody() -> HeldByNobody {
    let listener = sock::listen("127.0.0.1:0".parse().unwrap());
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd = client.as_raw_fd();
    let mut cmd = Command::new("sleep");
    cmd.arg("120").stdin(Stdio::null());
    // SAFETY: async-signal-safe syscalls only.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if !ok
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(last_os_error());
            }
            Ok(())
        });
    }
    let holder = Proc(cmd.spawn().expect("starting sleep as nobody"));
    let local = client.local_addr().unwrap();
    let remote = client.peer_addr().unwrap();
    drop(client);
    HeldByNobody {
        holder,
        local,
        remote,
        _listener: listener,
        _server: server,
    }
}

fn http_get(url: &str) -> Option<(u16, String)> {
    keepalive_tests::http::try_get(url, "*/*").ok()
}

fn status_field(pid: u32, field: &str) -> String {
    keepalive_tests::proc::status_field(&format!("/proc/{pid}/status"), field)
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

/// What the agent does with `p`, checked against the kernel.
struct Outcome {
    owner_pid: Option<u64>,
}

/// The agent started as `p` says, healthy, on a loopback port; and a
/// namespace only `ip netns` knows (no process in it yet), with its own
/// sysctl: the agent must find it through /run/netns.
fn start_healthy(
    p: &Privileges,
    base_env: &BTreeMap<String, String>,
    args: &[&str],
) -> (Proc, String, Netns) {
    let ns = Netns::new("kdp");
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=123"]);
    let port = prometheus::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut env = base_env.clone();
    // A port of its own on loopback (the DaemonSet's own listeners are
    // replaced where its env is read).
    env.insert("KEEPALIVE_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert("KEEPALIVE_INVENTORY_SECONDS".into(), "1".into());
    // Its namespace is an `ip netns` one: series told apart by inode.
    env.insert("KEEPALIVE_NETNS_LABEL".into(), "true".into());
    let tmp = prometheus::temp_dir("keepalive-privileges");
    let log = tmp.join("agent.log");
    let agent = spawn_agent(p, args, &env, &log);
    let healthy = eventually_some(Duration::from_secs(30), || {
        http_get(&format!("{base}/healthz")).filter(|(s, _)| *s == 200)
    });
    let log_text = read(&log);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        healthy.is_some(),
        "{}: /healthz never 200:\n{log_text}",
        p.what
    );
    (agent, base, ns)
}

/// Runs with exactly these privileges: no capability beyond them, and as
/// that user. Returns (CapEff, uid).
fn assert_exact_privileges(p: &Privileges, pid: u32) -> (u64, String) {
    // Runs with exactly these privileges: no capability beyond them.
    let eff = u64::from_str_radix(&status_field(pid, "CapEff"), 16).unwrap();
    let mask: u64 = p.caps.iter().map(|c| 1u64 << c).sum();
    assert_eq!(eff & !mask, 0, "{}: CapEff {eff:x} beyond {mask:x}", p.what);
    let uid = status_field(pid, "Uid");
    let want_uid = p.uid.unwrap_or(0).to_string();
    assert!(
        uid.split_whitespace().all(|u| u == want_uid),
        "{}: Uid {uid}",
        p.what
    );

    (eff, want_uid)
}

/// Every hook up, and the `ip netns` namespace's sysctl read.
fn assert_hooks_and_sysctl(p: &Privileges, base: &str, ns: &Netns) {
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.starts_with("keepalive_agent_hook_up{"))
            .all(|l| l.ends_with(" 1")),
        "{}: {text}",
        p.what
    );
    assert!(value(&text, "keepalive_agent_tc_interfaces", &[]).is_some_and(|v| v >= 1.0));
    let ino = ns.inode().to_string();
    let sysctl = eventually_some(Duration::from_secs(10), || {
        let (_, text) = http_get(&format!("{base}/metrics"))?;
        value(&text, "keepalive_sysctl_time_seconds", &[("netns", &ino)])
    });
    assert_eq!(
        sysctl,
        Some(123.0),
        "{}: sysctl of an `ip netns` namespace",
        p.what
    );
}

/// Probes and their ACKs counted exactly, in that namespace.
fn assert_pipeline(p: &Privileges, base: &str, ns: &Netns) -> u64 {
    let ino = ns.inode().to_string();
    // Probes and their ACKs counted exactly, in that namespace.
    let (_, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
    assert!(delta >= 2, "kernel sent {delta} probes");
    let mut seen = (None, None);
    let counted = eventually_some(Duration::from_secs(5), || {
        let (_, text) = http_get(&format!("{base}/metrics"))?;
        seen = (
            value(&text, "keepalive_probes_total", &[("netns", &ino)]),
            value(&text, "keepalive_probe_acks_total", &[("netns", &ino)]),
        );
        (seen == (Some(delta as f64), Some(delta as f64))).then_some(())
    });
    assert!(
        counted.is_some(),
        "{}: (probes, acks) in {ino} = {seen:?}, the kernel sent {delta}",
        p.what
    );
    delta
}

/// The owner of a socket that only a nobody process holds (None when the
/// agent cannot see it).
fn owner_of(p: &Privileges, base: &str, held: &HeldByNobody) -> Option<u64> {
    let owner = |want: bool| {
        let (_, body) = http_get(&format!("{base}/sockets"))?;
        let rows: Vec<SocketRow> = serde_json::from_str(&body).ok()?;
        let row = rows.into_iter().find(|r| {
            r.local == Some(held.local)
                && r.remote == Some(held.remote)
                && r.state == TcpState::Established
        })?;
        let pid = row.owner.map(|o| u64::from(o.pid));
        (pid.is_some() == want).then_some(pid)
    };
    eventually_some(Duration::from_secs(4), || owner(true))
        .or_else(|| owner(false))
        .unwrap_or_else(|| panic!("{}: socket {} not in /sockets", p.what, held.local))
}

fn run_with(
    p: &Privileges,
    base_env: &BTreeMap<String, String>,
    args: &[&str],
    held: &HeldByNobody,
    check_pipeline: bool,
) -> Outcome {
    let (agent, base, ns) = start_healthy(p, base_env, args);
    let (eff, want_uid) = assert_exact_privileges(p, agent.0.id());
    assert_hooks_and_sysctl(p, &base, &ns);
    let probes = if check_pipeline {
        assert_pipeline(p, &base, &ns)
    } else {
        0
    };
    let owner_pid = owner_of(p, &base, held);
    drop(agent);
    let caps: Vec<&str> = (0..64)
        .filter(|c| eff & (1 << c) != 0)
        .map(cap_name)
        .collect();
    eprintln!(
        "{}: healthy, uid {want_uid}, effective {caps:?}, all hooks up, `ip netns` sysctl read, {probes} probes/acks = kernel, owner of nobody's socket {owner_pid:?}",
        p.what
    );
    Outcome { owner_pid }
}

#[test]
fn deployed_privileges_are_enough_for_the_agent_and_each_is_needed() {
    keepalive_tests::require_root();
    // The DaemonSet's environment and arguments, its capabilities as root.
    let ds = &yaml(&deploy("kubernetes/daemonset.yaml"))[0];
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    let ds_caps: Vec<u32> = strings(&c["securityContext"]["capabilities"]["add"])
        .iter()
        .map(|n| cap_number(n))
        .collect();
    let mut ds_env = container_env(c);
    // One plain loopback listener here, where the DaemonSet puts TLS on
    // the node's address (the web suite's subject) and the per-socket
    // endpoints on 127.0.0.1:9977: the test opens no port to the network
    // and needs no Secret.
    ds_env.insert("KEEPALIVE_LISTEN".into(), "127.0.0.1:0".into());
    for secured in ["KEEPALIVE_LOCAL_LISTEN", "KEEPALIVE_WEB_CONFIG_FILE"] {
        ds_env.remove(secured);
    }
    let ds_args_owned = strings(&c["args"]);
    let ds_args: Vec<&str> = ds_args_owned.iter().map(String::as_str).collect();
    // The unit's command line and capabilities, as a transient user.
    let unit = unit_settings(&read(&deploy("systemd/keepalive-agent.service")));
    let unit_caps: Vec<u32> = unit["AmbientCapabilities"]
        .split_whitespace()
        .map(cap_number)
        .collect();
    let unit_args: Vec<&str> = unit["ExecStart"].split_whitespace().skip(1).collect();

    let held = socket_held_by_nobody();
    let held_pid = u64::from(held.holder.0.id());

    let daemonset = Privileges {
        what: "DaemonSet (root, capabilities.add)",
        caps: ds_caps.clone(),
        uid: None,
    };
    let o = run_with(&daemonset, &ds_env, &ds_args, &held, true);
    assert_eq!(o.owner_pid, Some(held_pid), "{}", daemonset.what);

    let systemd = Privileges {
        what: "systemd unit (DynamicUser, AmbientCapabilities)",
        caps: unit_caps,
        // The first uid of systemd's DynamicUser range.
        uid: Some(61184),
    };
    let o = run_with(&systemd, &BTreeMap::new(), &unit_args, &held, true);
    assert_eq!(o.owner_pid, Some(held_pid), "{}", systemd.what);

    // CAP_DAC_READ_SEARCH, beyond the list, is what finds owners
    // among other users' processes: without it the agent refuses to start
    // and names it, rather than running with owners silently unknown.
    let without = Privileges {
        what: "DaemonSet without CAP_DAC_READ_SEARCH",
        caps: ds_caps.iter().copied().filter(|c| *c != 2).collect(),
        uid: None,
    };
    let tmp = prometheus::temp_dir("keepalive-no-dac");
    let log = tmp.join("agent.log");
    let mut agent = spawn_agent(&without, &ds_args, &ds_env, &log);
    let status = agent.0.wait().expect("waiting for the agent");
    let text = read(&log);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        !status.success(),
        "{}: started anyway:\n{text}",
        without.what
    );
    assert!(
        text.contains("missing capabilities: CAP_DAC_READ_SEARCH") && !text.contains("panicked"),
        "{}: {text}",
        without.what
    );
}
