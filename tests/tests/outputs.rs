//! What users touch, against real traffic: `/metrics` counted exactly and
//! clean under promtool, `/sockets` with sockets that predate the agent and
//! their own keepalive options, namespace sysctls and their changes, risk
//! against a load-balancer profile, `/events`, the CLI and bad input.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::Command,
    time::Duration,
};

use keepalive_api::{
    Keepalive as Settings, Record, RecordKind, RiskReason, SocketRow, Source, TcpState,
};
use keepalive_tests::{
    agent::{self, Agent},
    metrics::{promtool_check, value},
    scenario,
    sock::{self, Keepalive},
    world::{self, Netns, Pair},
};

fn row(rows: &[SocketRow], cookie: u64) -> &SocketRow {
    rows.iter()
        .find(|r| r.cookie == cookie)
        .unwrap_or_else(|| panic!("cookie {cookie} not in /sockets: {rows:#?}"))
}

fn settings(r: &SocketRow) -> &Settings {
    r.keepalive
        .as_ref()
        .unwrap_or_else(|| panic!("no keepalive settings: {r:?}"))
}

/// (enabled, idle, interval, count) and their three sources.
fn triplet(k: &Settings) -> ((bool, f64, f64, u32), [Source; 3]) {
    (
        (k.enabled, k.idle_s, k.interval_s, k.count),
        [k.idle_source, k.interval_source, k.count_source],
    )
}

#[test]
fn metrics_count_probes_exactly_and_pass_promtool() {
    let ns = Netns::new("kam");
    let mut agent = Agent::start(&[]);
    let netns = ns.inode().to_string();
    let (_, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(4500)));
    agent.settle(Duration::from_millis(500));
    let (status, text) = agent.get("/metrics");
    assert_eq!(status, 200);
    assert!(delta >= 3, "kernel sent {delta} probes");
    let n = [("netns", netns.as_str())];
    assert_eq!(
        value(&text, "keepalive_probes_total", &n),
        Some(delta as f64),
        "{text}"
    );
    assert_eq!(
        value(&text, "keepalive_probe_acks_total", &n),
        Some(delta as f64)
    );
    // The histogram has no netns label (a pod's namespace only): the
    // node's answered probes, all of them this test's.
    assert_eq!(
        value(&text, "keepalive_probe_rtt_seconds_count", &[]),
        Some(delta as f64)
    );
    assert_eq!(
        value(&text, "keepalive_agent_events_lost_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "keepalive_agent_hook_up",
            &[("hook", "keepalive_timer")]
        ),
        Some(1.0)
    );
    let (ok, msg) = promtool_check(&text);
    assert!(ok && msg.trim().is_empty(), "promtool check metrics: {msg}");
    // Prometheus asks for OpenMetrics and gets it, same values.
    let (status, om) =
        agent.get_with_accept("/metrics", "application/openmetrics-text;version=1.0.0");
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(value(&om, "keepalive_probes_total", &n), Some(delta as f64));
    agent.stop();
}

#[test]
fn sockets_that_predate_the_agent_show_their_keepalive_settings() {
    let ns = Netns::new("kas");
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=321"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_intvl=17"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_probes=5"]);
    // Made before the agent starts: only the inventory can know them.
    let (listener, own, inherited, off) = ns.run(|| {
        let listener = sock::listen("127.0.0.1:0".parse().unwrap());
        let to = listener.local_addr().unwrap();
        let own = sock::connect(
            to,
            Some(Keepalive {
                idle: 77,
                intvl: 11,
                cnt: 4,
            }),
        );
        let inherited = sock::connect(to, None);
        socket2::SockRef::from(&inherited)
            .set_keepalive(true)
            .unwrap();
        let off = sock::connect(to, None);
        (listener, own, inherited, off)
    });
    let _accepted: Vec<_> = (0..3).map(|_| listener.accept().unwrap()).collect();
    let mut agent = Agent::start(&["--inventory-seconds", "1"]);
    let netns = ns.inode();
    let rows = agent.sockets(&format!("netns={netns}"));

    let r = row(&rows, sock::cookie(&own));
    assert_eq!(r.state, TcpState::Established);
    assert_eq!(r.local, Some(own.local_addr().unwrap()));
    assert_eq!(r.owner.as_ref().map(|o| o.pid), Some(std::process::id()));
    assert_eq!(
        triplet(settings(r)),
        ((true, 77.0, 11.0, 4), [Source::Socket; 3])
    );

    let r = row(&rows, sock::cookie(&inherited));
    let k = settings(r);
    assert_eq!(triplet(k), ((true, 321.0, 17.0, 5), [Source::Sysctl; 3]));
    assert_eq!(k.detection_s, 321.0 + 17.0 * 5.0);

    let r = row(&rows, sock::cookie(&off));
    assert!(!settings(r).enabled);
    assert_eq!(r.dead_after_s, None);

    // The namespace's sysctl changes: the agent notices, says so once, and
    // sockets that inherit it follow.
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=222"]);
    let sysctl_changed =
        |r: &Record| r.event == RecordKind::SysctlChanged && r.netns.map(u64::from) == Some(netns);
    let change = agent
        .wait_for(Duration::from_secs(5), sysctl_changed)
        .expect("no sysctl_changed event");
    assert_eq!(
        change.sysctl.as_deref(),
        Some("net.ipv4.tcp_keepalive_time")
    );
    assert_eq!((change.old_value, change.new_value), (Some(321), Some(222)));
    agent.settle(Duration::from_millis(1500));
    let rows = agent.sockets(&format!("netns={netns}"));
    assert_eq!(settings(row(&rows, sock::cookie(&inherited))).idle_s, 222.0);
    assert_eq!(settings(row(&rows, sock::cookie(&own))).idle_s, 77.0);
    let (_, text) = agent.get("/metrics");
    let n = netns.to_string();
    assert_eq!(
        value(&text, "keepalive_sysctl_time_seconds", &[("netns", &n)]),
        Some(222.0)
    );
    assert_eq!(
        value(&text, "keepalive_sysctl_probes", &[("netns", &n)]),
        Some(5.0)
    );
    let (records, _) = agent.stop();
    let changes = records.iter().filter(|r| sysctl_changed(r)).count();
    assert_eq!(changes, 1);
}

/// The agent at its defaults (no `--inventory-seconds`): the setsockopt
/// hook follows option changes, inventories only reconcile (every 120 s),
/// so what `/sockets` says after a change within two seconds, with one
/// inventory done, came from the hook.
#[test]
fn keepalive_options_set_after_connect_are_in_sockets_at_once() {
    let ns = Netns::new("kaopt");
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=321"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_intvl=17"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_probes=5"]);
    let agent = Agent::start(&[]);
    let (_, text) = agent.get("/metrics");
    assert_eq!(
        value(&text, "keepalive_agent_hook_up", &[("hook", "setsockopt")]),
        Some(1.0),
        "the setsockopt hook is not live"
    );
    let netns = ns.inode();
    let fast = Keepalive {
        idle: 30,
        intvl: 5,
        cnt: 3,
    };
    let (listener, before, after, off_later, refused) = ns.run(|| {
        let listener = sock::listen("127.0.0.1:0".parse().unwrap());
        let to = listener.local_addr().unwrap();
        // Set before connect: its ESTABLISHED event carries them.
        let before = sock::connect(to, Some(fast));
        let after = sock::connect(to, None);
        let off_later = sock::connect(to, Some(fast));
        let refused = sock::connect(to, Some(fast));
        (listener, before, after, off_later, refused)
    });
    let _accepted: Vec<_> = (0..4).map(|_| listener.accept().unwrap()).collect();
    let inventories = || {
        let (_, text) = agent.get("/metrics");
        value(
            &text,
            "keepalive_agent_scan_last_success_timestamp_seconds",
            &[("scan", "inventory")],
        )
    };
    let first_inventory = inventories();
    // Changed once connected: only the hook can tell before 120 s.
    sock::set_keepalive(&socket2::SockRef::from(&after), fast);
    socket2::SockRef::from(&off_later)
        .set_keepalive(false)
        .unwrap();
    let einval = socket2::SockRef::from(&refused)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(40_000)));
    assert!(einval.is_err(), "TCP_KEEPIDLE 40000 accepted");
    let expected = [
        (sock::cookie(&before), (true, 30.0, 5.0, 3)),
        (sock::cookie(&after), (true, 30.0, 5.0, 3)),
        (sock::cookie(&off_later), (false, 30.0, 5.0, 3)),
        (sock::cookie(&refused), (true, 30.0, 5.0, 3)),
    ];
    let seen = |rows: &[SocketRow]| -> Vec<(u64, (bool, f64, f64, u32))> {
        expected
            .iter()
            .map(|(c, _)| {
                let k = rows
                    .iter()
                    .find(|r| r.cookie == *c)
                    .and_then(|r| r.keepalive.clone());
                (*c, k.map(|k| triplet(&k).0).unwrap_or_default())
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut rows = agent.sockets(&format!("netns={netns}"));
    while seen(&rows) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        rows = agent.sockets(&format!("netns={netns}"));
    }
    assert_eq!(seen(&rows), expected);
    assert_eq!(
        settings(row(&rows, sock::cookie(&after))).idle_source,
        Source::Socket
    );
    assert_eq!(inventories(), first_inventory, "an inventory ran");
    // The risk gauges follow: three on, one off (and the listener's
    // accepted ends, which inherit the sysctls with keepalive off).
    let (_, text) = agent.get("/metrics");
    let n = netns.to_string();
    assert_eq!(
        value(
            &text,
            "keepalive_sockets",
            &[("netns", &n), ("keepalive", "on")]
        ),
        Some(3.0)
    );
}

/// The at-risk gauges by reason, and established sockets by keepalive on/off.
fn assert_risk_metrics(agent: &Agent, netns: u64) {
    let (_, text) = agent.get("/metrics");
    let n = netns.to_string();
    let gauge = |name, label: (&str, &str)| value(&text, name, &[("netns", &n), label]);
    assert_eq!(
        gauge("keepalive_sockets_at_risk", ("reason", "keepalive_off")),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            "keepalive_sockets_at_risk",
            ("reason", "idle_exceeds_timeout")
        ),
        Some(1.0)
    );
    assert_eq!(gauge("keepalive_sockets", ("keepalive", "on")), Some(2.0));
    assert_eq!(gauge("keepalive_sockets", ("keepalive", "off")), Some(1.0));
}

/// advise: the sysctl lines, and only the socket the sysctls cannot fix.
fn assert_advise_lists_only(agent: &Agent, at_risk: SocketAddr, fixed: &[SocketAddr]) {
    let url = format!("http://{}", agent.addr());
    let out = Command::new(agent::binary())
        .args(["advise", "--idle-timeout", "aws-nlb", "--agent", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "net.ipv4.tcp_keepalive_time = 175",
        "net.ipv4.tcp_keepalive_intvl = 29",
        "net.ipv4.tcp_keepalive_probes = 9",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // Rows name the local endpoint second.
    let listed = |local: SocketAddr| {
        let local = local.to_string();
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
    };
    assert!(listed(at_risk), "{text}");
    for local in fixed {
        assert!(!listed(*local), "{local} listed:\n{text}");
    }
}

#[test]
fn risk_is_flagged_against_a_load_balancer_profile() {
    let pair = Pair::new();
    let server: SocketAddr = format!("{}:0", world::B_V4).parse().unwrap();
    let listener = pair.b.run(|| sock::listen(server));
    let to = listener.local_addr().unwrap();
    let (off, long_idle, short_idle) = pair.a.run(|| {
        let off = sock::connect(to, None);
        let long_idle = sock::connect(to, None);
        socket2::SockRef::from(&long_idle)
            .set_keepalive(true)
            .unwrap();
        let short_idle = sock::connect(
            to,
            Some(Keepalive {
                idle: 60,
                intvl: 10,
                cnt: 6,
            }),
        );
        (off, long_idle, short_idle)
    });
    let _accepted: Vec<_> = (0..3).map(|_| listener.accept().unwrap()).collect();
    let agent = Agent::start(&["--idle-timeout", "aws-nlb", "--inventory-seconds", "1"]);
    let netns = pair.a.inode();
    let rows = agent.sockets(&format!("netns={netns}&risk=true"));
    let risky: Vec<u64> = rows.iter().map(|r| r.cookie).collect();
    assert_eq!(risky.len(), 2, "{rows:#?}");
    let risk = |r: &SocketRow| r.risk.clone().unwrap_or_else(|| panic!("no risk: {r:?}"));
    let r = risk(row(&rows, sock::cookie(&off)));
    assert_eq!(
        (r.profile.as_str(), r.reason, r.idle_timeout_s),
        ("aws-nlb", RiskReason::KeepaliveOff, 350)
    );
    let r = risk(row(&rows, sock::cookie(&long_idle)));
    assert_eq!(r.reason, RiskReason::IdleExceedsTimeout);
    assert!(!risky.contains(&sock::cookie(&short_idle)));

    assert_risk_metrics(&agent, netns);
    let locals = |s: &std::net::TcpStream| s.local_addr().unwrap();
    assert_advise_lists_only(
        &agent,
        locals(&off),
        &[locals(&long_idle), locals(&short_idle)],
    );
    agent.stop();
}

#[test]
fn events_stream_delivers_every_probe_and_filters() {
    let ns = Netns::new("kae");
    let agent = Agent::start(&[]);
    let url = format!(
        "http://{}/events?event=probe_sent&netns={}",
        agent.addr(),
        ns.inode()
    );
    let resp = ureq::get(&url).call().expect("GET /events");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(resp.into_body().into_reader())
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (cookie, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<Record> = rx
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(delta >= 2);
    assert_eq!(lines.len(), delta as usize, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.event == RecordKind::ProbeSent && l.cookie == cookie)
    );
    agent.stop();
}

#[test]
fn bad_input_is_a_clear_error() {
    let agent = Agent::start(&[]);
    for (path, status) in [
        ("/sockets?port=abc", 400),
        ("/sockets?colour=red", 400),
        ("/events?event=nope", 400),
        ("/sockets?state=open", 400),
        ("/nope", 404),
        ("/healthz", 200),
    ] {
        let (got, body) = agent.get(path);
        assert_eq!(got, status, "GET {path}: {body}");
        assert!(
            !body.trim().is_empty() && body.trim().lines().count() == 1,
            "GET {path}: {body:?}"
        );
    }
    agent.stop();
    for args in [
        vec!["run", "--idle-timeout", "aws-nbl"],
        vec!["run", "--ring-buffer-bytes", "1000"],
        vec!["run", "--timer-mode", "kprobe"],
        vec!["sockets", "--port", "70000"],
        vec!["nonsense"],
    ] {
        let out = Command::new(agent::binary()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.lines().next().unwrap_or("").starts_with("error:"),
            "{args:?}: {err}"
        );
    }
    // No agent listening: one sentence and a failure, not a panic.
    let out = Command::new(agent::binary())
        .args(["sockets", "--agent", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is `keepalive-agent run` running?") && !err.contains("panicked"),
        "{err}"
    );
}
