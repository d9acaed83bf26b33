//! Advice in the application's own terms, against real programs: a
//! redis-server, a PostgreSQL server, nginx, psql, two Go clients built
//! here (the default dialer; `KeepAlive: -1`) and a Python client, in two
//! namespaces joined by a veth pair (clients at 192.0.2.1, servers at
//! .2). Each falls short of `aws-nlb` (350 s) in its own way; `advise
//! --idle-timeout aws-nlb --json` must name the program, its directive or
//! parameter and values that satisfy the formula (idle ≤ 175 s, interval
//! 10–30 s, count 6–9, or what the program fixes). Then every daemon and
//! client is restarted with the advised values, the Python client's
//! namespace gets the advised sysctls, and none of them is at risk.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use keepalive_tests::{
    agent::Agent,
    cli::run_agent_cli,
    daemon::{self, Daemon, User, postgres_bin},
    wait,
    world::{B_V4, Netns, Pair, sh},
};
use serde_json::Value;

const REDIS: u16 = 6379;
const NGINX: u16 = 8080;
const POSTGRES: u16 = 5432;

/// The settings of one round: what each program is started with.
struct Settings {
    redis_keepalive: u32,
    /// nginx's `so_keepalive=idle:intvl:count`.
    nginx: (u32, u32, u32),
    postgres: (u32, u32, u32),
    libpq: (u32, u32, u32),
    /// The second Go client's `net.Dialer.KeepAlive`, in Go syntax.
    go_keepalive: &'static str,
    python_keepalive: bool,
}

const SHORT_OF_NLB: Settings = Settings {
    redis_keepalive: 400,
    nginx: (400, 60, 5),
    postgres: (400, 60, 5),
    libpq: (400, 60, 5),
    go_keepalive: "-1",
    python_keepalive: false,
};

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// A scratch directory any user can write (PostgreSQL runs as nobody).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(keepalive_tests::world::unique("kaadv"));
    std::fs::create_dir_all(&dir).unwrap();
    sh(&["chmod", "0777", &dir.to_string_lossy()]);
    dir
}

/// The Go client: dials every address given with `net.Dialer{KeepAlive:
/// K}` and holds the connections.
fn build_go(dir: &Path, name: &str, keepalive: &str) -> PathBuf {
    let src = dir.join(format!("{name}.go"));
    std::fs::write(
        &src,
        format!(
            r#"package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {{
	d := net.Dialer{{KeepAlive: {keepalive}}}
	var conns []net.Conn
	for _, addr := range os.Args[1:] {{
		c, err := d.Dial("tcp", addr)
		if err != nil {{
			fmt.Println("dial:", err)
			os.Exit(1)
		}}
		conns = append(conns, c)
	}}
	fmt.Println("connected", len(conns))
	time.Sleep(time.Hour)
}}
"#
        ),
    )
    .unwrap();
    keepalive_tests::golang::build(dir, &src, name)
}

const PYTHON_CLIENT: &str = r#"
import socket, sys, time
keepalive = sys.argv[1] == "on"
conns = []
for a in sys.argv[2:]:
    host, port = a.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    if keepalive:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conns.append(s)
print("connected", len(conns), flush=True)
time.sleep(3600)
"#;

/// Everything one round runs; dropped, all of it is killed.
struct Round {
    _daemons: Vec<Daemon>,
}

/// initdb once per test (as nobody), trusting the clients' network.
fn init_postgres(dir: &Path) -> PathBuf {
    let data = dir.join("pgdata");
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(postgres_bin("initdb"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data)
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "initdb");
    let hba = data.join("pg_hba.conf");
    let mut text = std::fs::read_to_string(&hba).unwrap();
    text.push_str("host all all 192.0.2.0/24 trust\n");
    std::fs::write(&hba, text).unwrap();
    data
}

fn start_round(pair: &Pair, dir: &Path, pgdata: &Path, s: &Settings) -> Round {
    let (a, b) = (&pair.a, &pair.b);
    let redis_port = REDIS.to_string();
    let redis_keepalive = s.redis_keepalive.to_string();
    let mut redis = Daemon::spawn(
        b,
        User::Root,
        "redis",
        &[
            "redis-server",
            "--bind",
            B_V4,
            "--port",
            &redis_port,
            "--tcp-keepalive",
            &redis_keepalive,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            &dir.to_string_lossy(),
        ],
        dir,
    );
    let (idle, intvl, count) = s.nginx;
    let mut nginx = daemon::nginx(
        b,
        dir,
        "client_header_timeout 3600s;\nkeepalive_timeout 3600s;",
        &format!(
            "listen {B_V4}:{NGINX} so_keepalive={idle}:{intvl}:{count};\nlocation / {{ return 200 \"ok\\n\"; }}"
        ),
    );
    let (idle, intvl, count) = s.postgres;
    let sockets = dir.join("pgsock");
    std::fs::create_dir_all(&sockets).unwrap();
    sh(&["chmod", "0777", &sockets.to_string_lossy()]);
    let pg_args = [
        format!("listen_addresses={B_V4}"),
        format!("port={POSTGRES}"),
        format!("unix_socket_directories={}", sockets.to_string_lossy()),
        format!("tcp_keepalives_idle={idle}"),
        format!("tcp_keepalives_interval={intvl}"),
        format!("tcp_keepalives_count={count}"),
    ];
    let postgres = postgres_bin("postgres");
    let mut argv: Vec<&str> = vec![postgres.to_str().unwrap(), "-D", pgdata.to_str().unwrap()];
    for a in &pg_args {
        argv.extend(["-c", a]);
    }
    let mut pg = Daemon::spawn(b, User::Nobody, "postgres", &argv, dir);
    redis.wait_listening(b, addr(B_V4, REDIS));
    nginx.wait_listening(b, addr(B_V4, NGINX));
    // Listening already during crash recovery (the last round was killed).
    pg.wait_log("database system is ready to accept connections");
    pg.wait_listening(b, addr(B_V4, POSTGRES));

    let (idle, intvl, count) = s.libpq;
    let conninfo = format!(
        "host={B_V4} port={POSTGRES} user=postgres dbname=postgres keepalives_idle={idle} keepalives_interval={intvl} keepalives_count={count}"
    );
    let mut psql = Daemon::spawn(
        a,
        User::Root,
        "psql",
        &["psql", &conninfo, "-c", "select pg_sleep(3600)"],
        dir,
    );
    let redis_addr = addr(B_V4, REDIS).to_string();
    let nginx_addr = addr(B_V4, NGINX).to_string();
    let go_default = build_go(dir, "go-default", "0");
    let go_second = build_go(dir, "go-second", s.go_keepalive);
    let mut clients = vec![
        Daemon::spawn(
            a,
            User::Root,
            "go-default",
            &[go_default.to_str().unwrap(), &redis_addr],
            dir,
        ),
        Daemon::spawn(
            a,
            User::Root,
            "go-second",
            &[go_second.to_str().unwrap(), &redis_addr],
            dir,
        ),
        Daemon::spawn(
            a,
            User::Root,
            "python",
            &[
                "/usr/bin/python3",
                "-c",
                PYTHON_CLIENT,
                if s.python_keepalive { "on" } else { "off" },
                &redis_addr,
                &nginx_addr,
            ],
            dir,
        ),
    ];
    for c in &mut clients {
        let connected = wait::eventually(Duration::from_secs(20), || {
            c.assert_running();
            c.log().contains("connected")
        });
        assert!(connected, "{} did not connect:\n{}", c.name, c.log());
    }
    // psql prints nothing while its query sleeps: still running is connected.
    psql.assert_running();
    let mut daemons = vec![redis, nginx, pg, psql];
    daemons.extend(clients);
    Round { _daemons: daemons }
}

/// `advise --idle-timeout aws-nlb --json`'s workloads, once every
/// program's sockets are owned and recognised.
fn advice(agent: &Agent, expected: &[(&str, &str)]) -> Vec<Value> {
    let url = format!("http://{}", agent.addr());
    let mut last = Value::Null;
    let found = wait::eventually_some(Duration::from_secs(30), || {
        let out = run_agent_cli(
            &[
                "advise",
                "--idle-timeout",
                "aws-nlb",
                "--json",
                "--agent",
                &url,
            ],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        last = serde_json::from_str(&out.stdout).unwrap();
        let workloads = last["workloads"].as_array()?.clone();
        expected
            .iter()
            .all(|(comm, program)| find(&workloads, comm, program).is_some())
            .then_some(workloads)
    });
    found.unwrap_or_else(|| {
        let workloads = last["workloads"].as_array().cloned().unwrap_or_default();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(comm, program)| find(&workloads, comm, program).is_none())
            .collect();
        panic!("not recognised: {missing:?} in {last:#}")
    })
}

/// The workload of process `comm` recognised as `program`.
fn find<'a>(workloads: &'a [Value], comm: &str, program: &str) -> Option<&'a Value> {
    workloads
        .iter()
        .find(|w| w["workload"]["comm"] == comm && w["program"] == program)
}

fn workload<'a>(workloads: &'a [Value], comm: &str, program: &str) -> &'a Value {
    find(workloads, comm, program).unwrap_or_else(|| panic!("{comm}/{program}: {workloads:#?}"))
}

/// The only fix of a workload, checked against the formula: idle at most
/// half of 350 s, interval 10–30 s, count 6–9 (or the count the program
/// fixes).
fn the_fix<'a>(w: &'a Value, kind: &str, fixed_count: Option<u64>) -> &'a Value {
    let fixes = w["fixes"].as_array().unwrap();
    assert_eq!(fixes.len(), 1, "{w:#}");
    let fix = &fixes[0];
    assert_eq!(fix["kind"], kind, "{w:#}");
    assert_eq!(fix["timeout"]["profile"], "aws-nlb");
    let v = &fix["values"];
    let (idle, intvl, count) = (
        v["idle_s"].as_u64().unwrap(),
        v["intvl_s"].as_u64().unwrap(),
        v["count"].as_u64().unwrap(),
    );
    assert!((1..=175).contains(&idle), "{v}");
    assert!((10..=30).contains(&intvl), "{v}");
    match fixed_count {
        Some(c) => assert_eq!(count, c),
        None => assert!((6..=9).contains(&count), "{v}"),
    }
    fix
}

fn values(fix: &Value) -> (u32, u32, u32) {
    let v = &fix["values"];
    let n = |k: &str| v[k].as_u64().unwrap() as u32;
    (n("idle_s"), n("intvl_s"), n("count"))
}

fn change(fix: &Value) -> String {
    fix["change"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

const EXPECTED: &[(&str, &str)] = &[
    ("redis-server", "redis"),
    ("nginx", "nginx"),
    ("postgres", "postgres"),
    ("psql", "libpq"),
    ("go-default", "go"),
    ("go-second", "go"),
    ("python3", "python"),
];

#[test]
fn each_program_is_told_its_own_setting_and_the_fix_works() {
    let pair = Pair::new();
    let dir = scratch();
    let pgdata = init_postgres(&dir);
    let agent = Agent::start(&["--inventory-seconds", "1"]);

    let round = start_round(&pair, &dir, &pgdata, &SHORT_OF_NLB);
    let w = advice(&agent, EXPECTED);

    let redis = workload(&w, "redis-server", "redis");
    let fix = the_fix(redis, "socket_timing", Some(3));
    let (redis_idle, _, _) = values(fix);
    assert!(
        change(fix).starts_with(&format!("tcp-keepalive {redis_idle}")),
        "{fix:#}"
    );
    assert_eq!(fix["recommends"], "socket");

    let nginx = w
        .iter()
        .find(|w| w["program"] == "nginx" && w["side"] == "inbound")
        .unwrap_or_else(|| panic!("{w:#?}"));
    let fix = the_fix(nginx, "socket_timing", None);
    let nginx_values = values(fix);
    let (i, n, c) = nginx_values;
    assert!(
        change(fix).contains(&format!("so_keepalive={i}s:{n}s:{c}")),
        "{fix:#}"
    );
    assert!(
        fix["alternative"]
            .as_str()
            .unwrap()
            .contains("so_keepalive=on")
    );

    let pg = workload(&w, "postgres", "postgres");
    let fix = the_fix(pg, "socket_timing", None);
    let pg_values = values(fix);
    let (i, n, c) = pg_values;
    for line in [
        format!("tcp_keepalives_idle = {i}"),
        format!("tcp_keepalives_interval = {n}"),
        format!("tcp_keepalives_count = {c}"),
    ] {
        assert!(change(fix).contains(&line), "{line}: {fix:#}");
    }

    let psql = workload(&w, "psql", "libpq");
    let fix = the_fix(psql, "socket_timing", None);
    let libpq_values = values(fix);
    let (i, n, c) = libpq_values;
    assert!(
        change(fix).contains(&format!(
            "keepalives_idle={i} keepalives_interval={n} keepalives_count={c}"
        )),
        "{fix:#}"
    );

    // The default dialer is on (15 s, set on the socket): not at risk.
    let go_default = workload(&w, "go-default", "go");
    assert_eq!(go_default["at_risk"], 0, "{go_default:#}");
    assert_eq!(go_default["evidence"], "go_buildinfo");
    assert!(go_default["version"].as_str().unwrap().starts_with("go1."));
    let s = &go_default["settings"][0]["keepalive"];
    assert_eq!(
        (s["idle_s"].as_f64(), &s["idle_source"]),
        (Some(15.0), &Value::from("socket"))
    );
    // KeepAlive: -1 is off, and the advice says so.
    let go_off = workload(&w, "go-second", "go");
    let fix = the_fix(go_off, "switch_on", None);
    assert_eq!(fix["reason"], "keepalive_off");
    assert!(
        fix["why"]
            .as_str()
            .unwrap()
            .contains("keep-alive probes are disabled"),
        "{fix:#}"
    );
    let go_version = go_off["version"].as_str().unwrap();
    let expected_switch = if go_release_at_least(go_version, 23) {
        "KeepAliveConfig{Enable: true, Idle: -1"
    } else {
        "net.Dialer{KeepAlive: 0}"
    };
    assert!(
        change(fix).contains(expected_switch),
        "{go_version}: {fix:#}"
    );
    // Before 1.23 the switch sets Go's own 15 s: no sysctl applies.
    let sysctls_apply = !fix["sysctls"].as_array().unwrap().is_empty();
    assert_eq!(
        sysctls_apply,
        go_release_at_least(go_version, 23),
        "{fix:#}"
    );

    // A Python client with keepalive off: setsockopt, then the sysctls
    // of its own namespace.
    let python = workload(&w, "python3", "python");
    let fix = the_fix(python, "switch_on", None);
    assert!(change(fix).contains("socket.SO_KEEPALIVE, 1"), "{fix:#}");
    let sysctls: Vec<&str> = fix["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let python_sysctl = values(fix);
    let (i, n, c) = python_sysctl;
    assert_eq!(
        sysctls,
        [
            format!("net.ipv4.tcp_keepalive_time = {i}"),
            format!("net.ipv4.tcp_keepalive_intvl = {n}"),
            format!("net.ipv4.tcp_keepalive_probes = {c}"),
        ]
    );
    assert_eq!(fix["sysctl_scope"]["kind"], "netns");
    assert_eq!(fix["sysctl_scope"]["inode"], pair.a.inode());
    assert_eq!(python["connections"], 2);
    assert_eq!(python["destinations"].as_array().unwrap().len(), 2);

    assert_text_and_markdown(&agent, redis_idle, pg_values);

    // The fixes, as advised: every program restarted with its values, the
    // Python client with SO_KEEPALIVE and its namespace's sysctls.
    drop(round);
    set_sysctls(&pair.a, python_sysctl);
    let fixed = Settings {
        redis_keepalive: redis_idle,
        nginx: nginx_values,
        postgres: pg_values,
        libpq: libpq_values,
        go_keepalive: "0",
        python_keepalive: true,
    };
    let _round = start_round(&pair, &dir, &pgdata, &fixed);
    let settled = wait::eventually_some(Duration::from_secs(30), || {
        let w = advice(&agent, EXPECTED);
        let at_risk: Vec<String> = EXPECTED
            .iter()
            .filter_map(|(comm, program)| {
                let w = workload(&w, comm, program);
                (w["at_risk"] != 0).then(|| format!("{comm}: {w:#}"))
            })
            .collect();
        at_risk.is_empty().then_some(w)
    });
    let w = settled.unwrap_or_else(|| panic!("still at risk after the fixes"));
    let python = workload(&w, "python3", "python");
    let s = &python["settings"][0]["keepalive"];
    assert_eq!(s["idle_source"], "sysctl", "{python:#}");
    assert_eq!(s["idle_s"].as_f64(), Some(f64::from(python_sysctl.0)));
    let _ = std::fs::remove_dir_all(&dir);
}

fn go_release_at_least(version: &str, minor: u32) -> bool {
    version
        .strip_prefix("go1.")
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= minor)
}

fn set_sysctls(ns: &Netns, (idle, intvl, count): (u32, u32, u32)) {
    for (name, value) in [
        ("net.ipv4.tcp_keepalive_time", idle),
        ("net.ipv4.tcp_keepalive_intvl", intvl),
        ("net.ipv4.tcp_keepalive_probes", count),
    ] {
        ns.exec(&["sysctl", "-qw", &format!("{name}={value}")]);
    }
}

/// The same advice as text and as Markdown.
fn assert_text_and_markdown(agent: &Agent, redis_idle: u32, (idle, _, _): (u32, u32, u32)) {
    let url = format!("http://{}", agent.addr());
    let run = |format: &str| {
        let out = run_agent_cli(
            &[
                "advise",
                "--idle-timeout",
                "aws-nlb",
                "--format",
                format,
                "--agent",
                &url,
            ],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        out.stdout
    };
    let text = run("text");
    for line in [
        format!("tcp-keepalive {redis_idle}"),
        format!("tcp_keepalives_idle = {idle}"),
        "net.ipv4.tcp_keepalive_time = 175".to_string(),
    ] {
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    let md = run("markdown");
    assert!(md.starts_with("## TCP keepalive advice"), "{md}");
    assert!(
        md.contains("| process redis-server | Redis server (`redis`) |"),
        "{md}"
    );
    assert!(md.contains(&format!("tcp-keepalive {redis_idle}")), "{md}");
    assert!(md.contains("```"), "{md}");
}
