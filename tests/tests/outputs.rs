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

use keepalive_tests::{
    agent::{self, Agent},
    metrics::{promtool_check, value},
    scenario,
    sock::{self, Keepalive},
    world::{self, Netns, Pair},
};
use serde_json::Value;

fn row(rows: &Value, cookie: u64) -> &Value {
    rows.as_array()
        .expect("/sockets is an array")
        .iter()
        .find(|r| r["cookie"] == cookie)
        .unwrap_or_else(|| panic!("cookie {cookie} not in /sockets: {rows:#}"))
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
    assert_eq!(
        value(&text, "keepalive_probe_rtt_seconds_count", &n),
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
    let rows = agent.get_json(&format!("/sockets?netns={netns}"));

    let r = row(&rows, sock::cookie(&own));
    assert_eq!(r["state"], "ESTAB");
    assert_eq!(r["local"], sock::endpoint(own.local_addr().unwrap()));
    assert_eq!(r["owner"]["pid"], std::process::id());
    let k = &r["keepalive"];
    assert_eq!(
        (
            k["enabled"].clone(),
            k["idle_s"].clone(),
            k["interval_s"].clone(),
            k["count"].clone()
        ),
        (true.into(), 77.0.into(), 11.0.into(), 4.into())
    );
    assert_eq!(
        (
            k["idle_source"].as_str(),
            k["interval_source"].as_str(),
            k["count_source"].as_str()
        ),
        (Some("socket"), Some("socket"), Some("socket"))
    );

    let r = row(&rows, sock::cookie(&inherited));
    let k = &r["keepalive"];
    assert_eq!(
        (
            k["enabled"].clone(),
            k["idle_s"].clone(),
            k["interval_s"].clone(),
            k["count"].clone()
        ),
        (true.into(), 321.0.into(), 17.0.into(), 5.into())
    );
    assert_eq!(k["idle_source"], "sysctl");
    assert_eq!(k["detection_s"], 321.0 + 17.0 * 5.0);

    let r = row(&rows, sock::cookie(&off));
    assert_eq!(r["keepalive"]["enabled"], false);
    assert_eq!(r["dead_after_s"], Value::Null);

    // The namespace's sysctl changes: the agent notices, says so once, and
    // sockets that inherit it follow.
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=222"]);
    let change = agent
        .wait_for(Duration::from_secs(5), |r| {
            r["event"] == "sysctl_changed" && r["netns"] == netns
        })
        .expect("no sysctl_changed event");
    assert_eq!(change["sysctl"], "net.ipv4.tcp_keepalive_time");
    assert_eq!(
        (change["old_value"].clone(), change["new_value"].clone()),
        (321.into(), 222.into())
    );
    agent.settle(Duration::from_millis(1500));
    let rows = agent.get_json(&format!("/sockets?netns={netns}"));
    assert_eq!(
        row(&rows, sock::cookie(&inherited))["keepalive"]["idle_s"],
        222.0
    );
    assert_eq!(row(&rows, sock::cookie(&own))["keepalive"]["idle_s"], 77.0);
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
    let changes = records
        .iter()
        .filter(|r| r["event"] == "sysctl_changed" && r["netns"] == netns)
        .count();
    assert_eq!(changes, 1);
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
    let rows = agent.get_json(&format!("/sockets?netns={netns}&risk=true"));
    let risky: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cookie"].as_u64().unwrap())
        .collect();
    assert_eq!(risky.len(), 2, "{rows:#}");
    let r = row(&rows, sock::cookie(&off));
    assert_eq!(
        (r["risk"]["profile"].as_str(), r["risk"]["reason"].as_str()),
        (Some("aws-nlb"), Some("keepalive_off"))
    );
    assert_eq!(r["risk"]["idle_timeout_s"], 350);
    let r = row(&rows, sock::cookie(&long_idle));
    assert_eq!(r["risk"]["reason"], "idle_exceeds_timeout");
    assert!(!risky.contains(&sock::cookie(&short_idle)));

    let (_, text) = agent.get("/metrics");
    let n = netns.to_string();
    assert_eq!(
        value(
            &text,
            "keepalive_sockets_at_risk",
            &[("netns", &n), ("reason", "keepalive_off")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "keepalive_sockets_at_risk",
            &[("netns", &n), ("reason", "idle_exceeds_timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "keepalive_sockets",
            &[("netns", &n), ("keepalive", "on")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "keepalive_sockets",
            &[("netns", &n), ("keepalive", "off")]
        ),
        Some(1.0)
    );

    // advise: the sysctl lines, and only the socket the sysctls cannot fix.
    let url = format!("http://{}", agent.ready["listen"].as_str().unwrap());
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
    let listed = |local: String| {
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
    };
    assert!(listed(sock::endpoint(off.local_addr().unwrap())), "{text}");
    assert!(
        !listed(sock::endpoint(long_idle.local_addr().unwrap())),
        "{text}"
    );
    assert!(
        !listed(sock::endpoint(short_idle.local_addr().unwrap())),
        "{text}"
    );
    agent.stop();
}

#[test]
fn events_stream_delivers_every_probe_and_filters() {
    let ns = Netns::new("kae");
    let agent = Agent::start(&[]);
    let url = format!(
        "http://{}/events?event=probe_sent&netns={}",
        agent.ready["listen"].as_str().unwrap(),
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
    let lines: Vec<Value> = rx
        .try_iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    assert!(delta >= 2);
    assert_eq!(lines.len(), delta as usize, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l["event"] == "probe_sent" && l["cookie"] == cookie)
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
