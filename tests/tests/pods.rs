//! Kubernetes identity from a real containerd: pods with their own network
//! namespaces (a sandbox and an app container joining it), a hostNetwork
//! pod, and a host process, each with keepalive sockets of known settings.
//! The agent must name pod, namespace, container and pod uid for every
//! socket and event, count each pod's probes exactly as its namespace's
//! `TCPKeepAlive`, label a pod's keepalive kill (event, counter, firing
//! alert on a real Prometheus), and keep working while containerd is down.

use std::{fs, path::Path, time::Duration};

use keepalive_api::{Record, RecordKind, SocketRow};
use keepalive_tests::{
    agent::{Agent, Launch},
    containerd::{Containerd, Driver, Net, Pod},
    keepalive_pod::{PROGRAM, netns_of, ready_port, run_pod},
    netstat,
    prometheus::{Prometheus, free_port},
    sock::{Keepalive, connect, listen},
    wait::{eventually, eventually_some},
    world,
};

/// The agent asking the test's containerd, series without `netns`.
fn agent_for(c: &Containerd, extra: &[&str]) -> Agent {
    let socket = c.socket.to_string_lossy().into_owned();
    let mut args = vec![
        "--runtime-socket",
        socket.as_str(),
        "--inventory-seconds",
        "1",
    ];
    args.extend_from_slice(extra);
    Agent::launch(Launch {
        args: &args,
        env: &[("KEEPALIVE_NETNS_LABEL", "false")],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"))
}

fn rows_of(agent: &Agent, query: &str) -> Vec<SocketRow> {
    agent.sockets(query)
}

/// Every row of `pod`'s namespace names it, its container and uid.
fn assert_named(rows: &[SocketRow], pod: &Pod, container: Option<&str>) {
    assert!(!rows.is_empty(), "no socket of pod {}", pod.name);
    for r in rows {
        assert_eq!(r.pod.as_deref(), Some(pod.name.as_str()), "{r:#?}");
        assert_eq!(
            r.namespace.as_deref(),
            Some(pod.namespace.as_str()),
            "{r:#?}"
        );
        assert_eq!(r.pod_uid.as_deref(), Some(pod.uid.as_str()), "{r:#?}");
        assert_eq!(r.container.as_deref(), container, "{r:#?}");
    }
}

#[test]
fn pods_are_named_in_sockets_events_and_metrics() {
    let mut c = Containerd::start();
    let mut agent = agent_for(&c, &[]);
    let web = run_pod(
        &mut c,
        Pod::new("web-0", "shop"),
        Driver::Cgroupfs,
        7000,
        (1, 1, 9),
        false,
    );
    let db = run_pod(
        &mut c,
        Pod::new("db-0", "data"),
        Driver::Systemd,
        7001,
        (2, 1, 9),
        false,
    );
    // A hostNetwork pod and a host process, both on the host's loopback.
    let host_pod = Pod::new("node-exporter-x", "infra");
    let host_port = free_port();
    let hp = c.run(
        &host_pod,
        Some("exporter"),
        Net::Host,
        Driver::Cgroupfs,
        &[("ka.py", PROGRAM)],
        &[
            "/usr/bin/python3",
            "/tmp/ka.py",
            &host_port.to_string(),
            "1",
            "1",
            "9",
        ],
    );
    let (hp_root, hp_pid) = (hp.rootfs.clone(), hp.pid);
    let host_listener = listen("127.0.0.1:0".parse().unwrap());
    let host_addr = host_listener.local_addr().unwrap();
    let host_client = connect(
        host_addr,
        Some(Keepalive {
            idle: 1,
            intvl: 1,
            cnt: 9,
        }),
    );
    let (_host_server, _) = host_listener.accept().unwrap();
    let web_port = ready_port(&web.app_root);
    let db_port = ready_port(&db.app_root);
    let hp_port = ready_port(&hp_root);
    // Probes flow (1 s idle, 1 s interval, loopback answers).
    std::thread::sleep(Duration::from_secs(4));

    // /sockets names every socket of each pod's namespace, filtered by pod.
    let named = eventually(Duration::from_secs(15), || {
        let rows = rows_of(&agent, "pod=web-0&namespace=shop");
        rows.len() >= 3 && rows.iter().all(|r| r.container.is_some())
    });
    assert!(named, "{:#?}", rows_of(&agent, ""));
    let web_ns = netns_of(web.sandbox_pid);
    let web_rows: Vec<SocketRow> = rows_of(&agent, "")
        .into_iter()
        .filter(|r| r.netns == Some(web_ns))
        .collect();
    assert_named(&web_rows, &web.pod, Some("app"));
    let db_rows = rows_of(&agent, "namespace=data");
    assert!(
        db_rows
            .iter()
            .all(|r| r.netns == Some(netns_of(db.sandbox_pid)))
    );
    assert_named(&db_rows, &db.pod, Some("app"));
    // The hostNetwork pod's socket is the pod's, the host's is nobody's,
    // though both live in the host's namespace.
    let hp_rows = rows_of(&agent, &format!("port={hp_port}"));
    // The pod's client to its own listener: an earlier connection of ours
    // to the agent may have left the same ephemeral port in TIME-WAIT.
    let hp_client: Vec<SocketRow> = hp_rows
        .into_iter()
        .filter(|r| {
            r.local.map(|a| a.port()) == Some(hp_port)
                && r.remote.map(|a| a.port()) == Some(host_port)
        })
        .collect();
    assert_named(&hp_client, &host_pod, Some("exporter"));
    assert_eq!(
        hp_client[0].netns,
        Some(netns_of(std::process::id())),
        "host network"
    );
    let mine = rows_of(&agent, &format!("port={}", host_addr.port()));
    let me = mine
        .iter()
        .find(|r| r.local == Some(host_client.local_addr().unwrap()))
        .expect("the host process's socket");
    assert_eq!(
        (me.pod.as_deref(), me.namespace.as_deref()),
        (None, None),
        "{me:#?}"
    );
    assert_eq!(me.owner.as_ref().map(|o| o.pid), Some(std::process::id()));
    assert!(
        rows_of(&agent, "namespace=")
            .iter()
            .any(|r| r.cookie == me.cookie)
    );

    // Events: each pod's probes carry its names (timer context: the names
    // come from the socket's recorded owner).
    for (pod, port) in [
        (&web.pod, web_port),
        (&db.pod, db_port),
        (&host_pod, hp_port),
    ] {
        let probe = agent
            .wait_for(Duration::from_secs(10), |r: &Record| {
                r.event == RecordKind::ProbeSent && r.local.map(|a| a.port()) == Some(port)
            })
            .unwrap_or_else(|| panic!("no probe of {}", pod.name));
        assert_eq!(probe.pod.as_deref(), Some(pod.name.as_str()), "{probe:#?}");
        assert_eq!(probe.namespace.as_deref(), Some(pod.namespace.as_str()));
        assert_eq!(probe.pod_uid.as_deref(), Some(pod.uid.as_str()));
        assert!(probe.container.is_some());
    }

    // Metrics: each pod's probes equal its namespace's TCPKeepAlive, once
    // its app is gone (the sandbox keeps the namespace) and the last
    // counts are in.
    for p in [&web, &db] {
        c.remove(&p.app_id);
    }
    std::thread::sleep(Duration::from_secs(3));
    for p in [&web, &db] {
        let kernel = netstat::tcp_ext_of(p.sandbox_pid, "TCPKeepAlive") as f64;
        let labels = [
            ("namespace", p.pod.namespace.as_str()),
            ("pod", p.pod.name.as_str()),
        ];
        let counted = eventually_some(Duration::from_secs(10), || {
            agent
                .metric("keepalive_probes_total", &labels)
                .filter(|v| *v == kernel)
        });
        assert!(
            kernel >= 2.0,
            "{} sent too few probes: {kernel}",
            p.pod.name
        );
        assert_eq!(
            counted,
            Some(kernel),
            "keepalive_probes_total{{pod={}}} against the namespace's TCPKeepAlive",
            p.pod.name
        );
    }
    let hp_probes = agent.metric(
        "keepalive_probes_total",
        &[
            ("namespace", "infra"),
            ("pod", "node-exporter-x"),
            ("container", "exporter"),
        ],
    );
    assert!(hp_probes.is_some_and(|v| v >= 2.0), "{hp_probes:?}");
    let (_, text) = agent.get("/metrics");
    // Only the namespace gauges carry `netns` without --netns-label.
    let keepalive_series = text.lines().filter(|l| {
        l.starts_with("keepalive_")
            && !l.starts_with("keepalive_sysctl")
            && !l.starts_with("keepalive_conntrack")
    });
    for line in keepalive_series {
        assert!(!line.contains("netns="), "{line}");
    }
    // The sysctl gauges stay per namespace, naming the pod that owns it.
    let sysctl = agent.metric(
        "keepalive_sysctl_time_seconds",
        &[
            ("netns", &web_ns.to_string()),
            ("namespace", "shop"),
            ("pod", "web-0"),
        ],
    );
    assert!(sysctl.is_some(), "{text}");
    eprintln!(
        "pods: web-0 and db-0 named and counted exactly, hostNetwork pod {} (pid {hp_pid}) told from the host",
        host_pod.name
    );
    agent.stop();
}

#[test]
fn a_keepalive_kill_in_a_pod_names_the_pod_in_event_counter_and_alert() {
    let mut c = Containerd::start();
    let agent = agent_for(&c, &[]);
    let listen = agent.addr();
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/keepalive-rules.yml");
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: keepalive-agent\n    static_configs:\n      - targets: [\"{listen}\"]\n",
        rules.display()
    ));
    let mut agent = agent;
    // History first: a Prometheus that never saw the counter at 0 rightly
    // does not alert on a kill from before its time.
    prom.wait_for(Duration::from_secs(20), |p| {
        (!p.query(r#"keepalive_agent_kernel_keepalive_timeouts_total offset 2s"#)
            .is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped the agent:\n{}", prom.log()));
    // The server's answers are dropped once the client connected: its
    // 1/1/3 keepalive gives up after about 4 s with ETIMEDOUT.
    let web = run_pod(
        &mut c,
        Pod::new("web-1", "shop"),
        Driver::Cgroupfs,
        7100,
        (1, 1, 3),
        false,
    );
    let port = ready_port(&web.app_root);
    world::load_nft_at(
        web.sandbox_pid,
        "table inet kapod {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    tcp sport 7100 drop\n  }\n}\n",
    );
    let result = eventually_some(Duration::from_secs(20), || {
        fs::read_to_string(web.app_root.join("tmp/result")).ok()
    });
    assert_eq!(
        result.as_deref(),
        Some("ETIMEDOUT"),
        "the application's errno"
    );
    let killed = agent
        .wait_for(Duration::from_secs(10), |r: &Record| {
            r.event == RecordKind::KeepaliveTimeout && r.local.map(|a| a.port()) == Some(port)
        })
        .expect("a keepalive_timeout event");
    assert_eq!(killed.pod.as_deref(), Some("web-1"), "{killed:#?}");
    assert_eq!(killed.namespace.as_deref(), Some("shop"));
    assert_eq!(killed.container.as_deref(), Some("app"));
    let labels = [
        ("namespace", "shop"),
        ("pod", "web-1"),
        ("cause", "keepalive"),
    ];
    assert_eq!(
        agent.metric("keepalive_connection_timeouts_total", &labels),
        Some(1.0)
    );
    // The alert fires for that pod, its description naming it (the
    // summary is the same for every pod a notification groups).
    let alert = prom
        .wait_for(Duration::from_secs(30), |p| {
            p.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "KeepaliveConnectionTimeouts"
                    && a["state"] == "firing"
                    && a["labels"]["pod"] == "web-1"
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "KeepaliveConnectionTimeouts never fired for web-1: {:#?}\nseries: {:#?}\nrules: {:#?}",
                prom.alerts(),
                prom.query("keepalive_connection_timeouts_total"),
                prom.rules()
            )
        });
    assert_eq!(alert["labels"]["namespace"], "shop");
    let description = alert["annotations"]["description"].as_str().unwrap_or("");
    assert!(description.contains("pod shop/web-1"), "{description}");
    assert!(alert["labels"].get("netns").is_none(), "{alert:#?}");
    drop(prom);
    agent.stop();
}

#[test]
fn containerd_down_keeps_events_flowing_and_names_fall_back_to_the_cgroup() {
    let mut c = Containerd::start();
    let mut agent = agent_for(&c, &[]);
    let web = run_pod(
        &mut c,
        Pod::new("web-2", "shop"),
        Driver::Cgroupfs,
        7200,
        (1, 1, 20),
        false,
    );
    let web_port = ready_port(&web.app_root);
    assert!(eventually(Duration::from_secs(15), || {
        rows_of(&agent, "pod=web-2").len() >= 3
    }));
    // A second pod, created now but opening its sockets only later.
    let late = run_pod(
        &mut c,
        Pod::new("late-0", "shop"),
        Driver::Systemd,
        7201,
        (1, 1, 20),
        true,
    );
    c.stop_daemon();
    fs::write(late.app_root.join("tmp/go"), "").unwrap();
    let late_port = ready_port(&late.app_root);
    let late_ns = netns_of(late.sandbox_pid);
    // Named from the cgroup path: the pod uid, no name; counted as failed.
    let fallback = eventually_some(Duration::from_secs(15), || {
        rows_of(&agent, "")
            .into_iter()
            .find(|r| r.local.map(|a| a.port()) == Some(late_port) && r.owner.is_some())
    })
    .expect("the late pod's client socket");
    assert_eq!(fallback.pod, None, "{fallback:#?}");
    assert_eq!(fallback.pod_uid.as_deref(), Some(late.pod.uid.as_str()));
    assert_eq!(fallback.netns, Some(late_ns));
    let failed = eventually_some(Duration::from_secs(10), || {
        agent
            .metric(
                "keepalive_agent_runtime_lookups_total",
                &[("result", "failed")],
            )
            .filter(|v| *v >= 1.0)
    });
    assert!(failed.is_some(), "failed lookups counted");
    assert_eq!(agent.metric("keepalive_agent_runtime_up", &[]), Some(0.0));
    let under_uid = eventually(Duration::from_secs(10), || {
        agent
            .metric("keepalive_probes_total", &[("pod", late.pod.uid.as_str())])
            .is_some()
    });
    assert!(
        under_uid,
        "the late pod's probes under its uid: {}",
        agent.get("/metrics").1
    );
    // Known identities stay, events keep flowing.
    let before = agent.records.len();
    let probe = agent
        .wait_for(Duration::from_secs(10), |r: &Record| {
            r.event == RecordKind::ProbeSent && r.local.map(|a| a.port()) == Some(web_port)
        })
        .map(|_| agent.records.len() > before);
    assert_eq!(probe, Some(true));
    let last_web = agent
        .records
        .iter()
        .rev()
        .find(|r| r.event == RecordKind::ProbeSent && r.local.map(|a| a.port()) == Some(web_port))
        .cloned()
        .unwrap();
    assert_eq!(last_web.pod.as_deref(), Some("web-2"));
    // containerd back: the late pod is named after the retry interval.
    c.restart_daemon();
    let named = eventually_some(Duration::from_secs(30), || {
        rows_of(&agent, "pod=late-0")
            .into_iter()
            .find(|r| r.local.map(|a| a.port()) == Some(late_port))
    });
    let named = named.expect("the late pod named once containerd is back");
    assert_eq!(named.namespace.as_deref(), Some("shop"));
    assert_eq!(named.container.as_deref(), Some("app"));
    assert_eq!(agent.metric("keepalive_agent_runtime_up", &[]), Some(1.0));
    agent.stop();
}
