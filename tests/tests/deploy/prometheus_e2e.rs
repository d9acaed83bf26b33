//! The end-to-end check: a real Prometheus with the shipped rules scrapes
//! the agent every second while real keepalive traffic runs; the counts it
//! holds are exact, the alerts fire (or stay quiet) as the rules say, and
//! every dashboard query has data that says what happened.

use keepalive_tests::containerd::Containerd;

use super::*;
use crate::{
    alerts::ALERTS,
    dashboard::{dashboard, queries, query_variables, substitute},
    web,
};

/// The agent, Prometheus scraping it, and the namespaces of the traffic.
struct World {
    pair: Pair,
    answered: Netns,
    /// Middleboxes that forget idle flows after 3 s: one resets them, one
    /// drops them.
    resetting: Middlebox,
    dropping: Middlebox,
    agent: Agent,
    prom: Prometheus,
    listen: String,
    _containerd: Containerd,
}

/// What the traffic did, by the kernel's own account.
struct Traffic {
    /// Probes the kernel sent in the answered namespace.
    answered_probes: u64,
    /// Namespace inodes: the dying and keepalive-off clients', the answered one's.
    ns_a: String,
    ns_q: String,
    /// The namespaces of the clients behind the middleboxes.
    ns_reset: String,
    ns_drop: String,
    /// The path of the resetting middlebox's server.
    reset_path: String,
    /// The idle-closing server's client's and own namespaces.
    ns_stale: String,
    ns_late: String,
    _idle_close: Pair,
    /// The keepalive-off client (at risk) and the server's ends stay open.
    _held: Vec<std::net::TcpStream>,
}

/// The `node` label the scrape adds, as the PodMonitor's relabeling does.
const NODE: &str = "kit-node";

/// A Prometheus with the rules file as shipped (not a copy with shorter
/// `for:`: the alert that must fire has `for: 0m`, and the 15-minute one
/// is checked as pending, which proves its expression matched).
fn start() -> World {
    let pair = Pair::new();
    // The client's namespace gets its own keepalive sysctls, which the
    // sysctl table must show.
    for s in [
        "net.ipv4.tcp_keepalive_time=600",
        "net.ipv4.tcp_keepalive_intvl=30",
        "net.ipv4.tcp_keepalive_probes=5",
    ] {
        pair.a.exec(&["sysctl", "-qw", s]);
    }
    let answered = Netns::new("kaq");
    // A containerd of its own (no container in it): the runtime panels
    // have data.
    let containerd = Containerd::start();
    let socket = containerd.socket.to_string_lossy().into_owned();
    // Scraped as the DaemonSet example is: TLS with a client certificate
    // and basic auth on --listen, the per-socket endpoints on loopback.
    let secured = web::secured(
        "RequireAndVerifyClientCert",
        &[
            "--idle-timeout",
            "aws-nlb",
            "--inventory-seconds",
            "1",
            "--runtime-socket",
            &socket,
            "--node-name",
            NODE,
        ],
    );
    let listen = secured.agent.addr();
    let rules = deploy("prometheus/keepalive-rules.yml");
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n{}",
        rules.display(),
        secured.scrape_config("keepalive-agent", &format!("node: {NODE}"))
    ));
    let agent = secured.agent;
    prom.wait_for(Duration::from_secs(15), |p| {
        (!p.query(r#"up{job="keepalive-agent"} == 1"#).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped the agent:\n{}", prom.log()));
    World {
        pair,
        answered,
        resetting: Middlebox::new(3, Forget::Reset),
        dropping: Middlebox::new(3, Forget::Drop),
        agent,
        prom,
        listen,
        _containerd: containerd,
    }
}

/// In a, a 1/1/3 keepalive client whose peer vanishes and a client with
/// keepalive off (at risk against aws-nlb); in another namespace, a
/// keepalive client whose probes are answered (ACKs, RTT).
fn traffic(w: &mut World) -> Traffic {
    let server = w
        .pair
        .b
        .run(|| sock::listen(format!("{}:0", world::B_V4).parse().unwrap()));
    let to = server.local_addr().unwrap();
    let (dying, idle_off) = w
        .pair
        .a
        .run(|| (sock::connect(to, Some(FAST)), sock::connect(to, None)));
    let mut held: Vec<_> = (0..2).map(|_| server.accept().unwrap().0).collect();
    held.push(idle_off);
    let dying_cookie = sock::cookie(&dying);
    let (reset_to, drop_to) = (
        w.resetting.echo_server(false),
        w.dropping.echo_server(false),
    );
    let idle_close = Pair::new();
    let idle_server = idle_close
        .b
        .run(|| sock::listen(format!("{}:0", world::B_V4).parse().unwrap()));
    let (err, (_, _, answered_probes), blackholed) = std::thread::scope(|s| {
        let answered_client = s.spawn(|| {
            w.answered
                .run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(5500)))
        });
        // Idle past the middleboxes' 3 s: with keepalive the flow survives,
        // without it the write is reset, or vanishes.
        let survivor = s.spawn(|| idle_then_write(&w.resetting, reset_to, Some(FAST)));
        let reset = s.spawn(|| idle_then_write(&w.resetting, reset_to, None));
        let blackhole = s.spawn(|| idle_then_write(&w.dropping, drop_to, None));
        let stale = s.spawn(|| idle_close_then_reuse(&idle_close, &idle_server));
        world::drop_all_input(&w.pair.b);
        let err = w.pair.a.run(|| {
            let mut c = &dying;
            c.read(&mut [0u8; 1])
                .expect_err("read on a dead peer must fail")
        });
        assert!(
            survivor.join().unwrap().1.is_ok(),
            "keepalive kept the flow"
        );
        let reset = reset
            .join()
            .unwrap()
            .1
            .expect_err("the middlebox reset the flow");
        assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset, "{reset}");
        let (blackholed, _) = blackhole.join().unwrap();
        held.push(stale.join().unwrap());
        (
            err,
            answered_client.join().expect("answered client"),
            blackholed,
        )
    });
    w.agent
        .wait_for(Duration::from_secs(5), |r| {
            r.event == keepalive_api::RecordKind::IdleBlackhole && r.cookie == blackholed.1
        })
        .expect("the agent reported no idle_blackhole");
    held.push(blackholed.0);
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    assert!(
        answered_probes >= 3,
        "kernel sent {answered_probes} answered probes"
    );
    w.agent
        .wait_for(Duration::from_secs(5), |r| {
            r.event == keepalive_api::RecordKind::KeepaliveTimeout && r.cookie == dying_cookie
        })
        .expect("the agent reported no keepalive_timeout");
    Traffic {
        answered_probes,
        ns_a: w.pair.a.inode().to_string(),
        ns_q: w.answered.inode().to_string(),
        ns_reset: w.resetting.client.inode().to_string(),
        ns_drop: w.dropping.client.inode().to_string(),
        reset_path: middlebox::path_of(reset_to),
        ns_stale: idle_close.a.inode().to_string(),
        ns_late: idle_close.b.inode().to_string(),
        _idle_close: idle_close,
        _held: held,
    }
}

/// A server that closes its connection after 1.5 s idle, and a client
/// that writes on it 3 s after its reply: the peer's close after idle, the
/// client's stale reuse (EOF, then the RST) and the server's data after
/// close. Returns the client's stream once its RST has come.
fn idle_close_then_reuse(pair: &Pair, listener: &std::net::TcpListener) -> std::net::TcpStream {
    use std::io::{Read as _, Write as _};
    let to = listener.local_addr().unwrap();
    let (c, _, _) = middlebox::client(&pair.a, to, None);
    let (s, _) = listener.accept().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        (&s).read_exact(&mut buf).unwrap();
        (&s).write_all(&buf).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    });
    middlebox::exchange(&c).unwrap();
    server.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    (&c).write_all(b"ping")
        .expect("a write in CLOSE-WAIT leaves");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((&c).read(&mut [0u8; 4]).unwrap(), 0, "EOF first");
    c
}

/// A client behind `mb`: one exchange, 4.5 s idle, then a write. Returns
/// the stream and its cookie, and whether the write was answered (a write
/// into a dropped flow is not waited for).
fn idle_then_write(
    mb: &Middlebox,
    to: std::net::SocketAddr,
    keepalive: Option<sock::Keepalive>,
) -> ((std::net::TcpStream, u64), std::io::Result<()>) {
    let (c, cookie, _) = middlebox::client(&mb.client, to, keepalive);
    middlebox::exchange(&c).unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    let outcome = if mb.forgets_by_reset() {
        middlebox::exchange(&c)
    } else {
        std::io::Write::write_all(&mut &c, b"ping")
    };
    ((c, cookie), outcome)
}

/// One number from an instant query.
fn scalar(prom: &Prometheus, promql: &str) -> Option<f64> {
    prom.query(promql).first().map(sample_value)
}

/// Prometheus holds the exact counts, scraped at least twice since.
fn assert_counts_scraped(prom: &Prometheus, t: &Traffic) {
    let (ns_a, ns_q) = (&t.ns_a, &t.ns_q);
    let settled = prom.wait_for(Duration::from_secs(10), |p| {
        let killed = scalar(
            p,
            &format!(r#"keepalive_connection_timeouts_total{{cause="keepalive",netns="{ns_a}"}}"#),
        )?;
        let samples = scalar(
            p,
            &format!(
                r#"count_over_time(keepalive_connection_timeouts_total{{cause="keepalive",netns="{ns_a}"}}[30s])"#
            ),
        )?;
        let probes_q = scalar(p, &format!(r#"sum(keepalive_probes_total{{netns="{ns_q}"}})"#))?;
        // The middleboxes' series too, scraped twice (rates need two samples).
        let ns_drop = &t.ns_drop;
        let blackholes = scalar(
            p,
            &format!(r#"count_over_time(keepalive_idle_blackholes_total{{netns="{ns_drop}"}}[30s])"#),
        )?;
        (samples >= 2.0 && blackholes >= 2.0 && probes_q == t.answered_probes as f64)
            .then_some(killed)
    });
    assert_eq!(
        settled,
        Some(1.0),
        "one keepalive kill in a, {} probes in the answered namespace",
        t.answered_probes
    );
    assert_eq!(
        scalar(
            prom,
            &format!(r#"sum(keepalive_probes_total{{netns="{ns_a}"}})"#)
        ),
        Some(f64::from(FAST.cnt))
    );
    assert_eq!(
        scalar(
            prom,
            &format!(r#"sum(keepalive_probe_acks_total{{netns="{ns_q}"}})"#)
        ),
        Some(t.answered_probes as f64)
    );
}

/// The alert named `name` for namespace `ns` (firing, or active at all),
/// waited for.
fn alert(prom: &Prometheus, name: &str, ns: &str, firing: bool) -> Option<Value> {
    prom.wait_for(Duration::from_secs(10), |p| {
        p.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == name
                && a["labels"]["netns"] == ns
                && (!firing || a["state"] == "firing")
        })
    })
}

/// The timeout alert fires for that namespace, at-risk is pending, the
/// rest stay quiet, and every rule evaluates. Returns what fired.
fn assert_alerts(prom: &Prometheus, t: &Traffic, listen: &str) -> BTreeSet<String> {
    let fired = alert(prom, "KeepaliveConnectionTimeouts", &t.ns_a, true).unwrap_or_else(|| {
        panic!(
            "KeepaliveConnectionTimeouts did not fire: {:#?}",
            prom.alerts()
        )
    });
    assert_eq!(fired["labels"]["cause"], "keepalive");
    // Value 1, the counter itself: the branch for a series created by its
    // first timeout fired (increase() alone sees nothing here).
    assert_eq!(
        fired["value"].as_str().and_then(|v| v.parse::<f64>().ok()),
        Some(1.0),
        "{fired:#}"
    );
    assert_eq!(fired["labels"]["severity"], "warning");
    assert!(
        fired["annotations"]["description"]
            .as_str()
            .is_some_and(|r| r.contains("ETIMEDOUT") && r.contains(listen)),
        "{fired:#}"
    );
    assert!(
        fired["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|r| r.ends_with("runbooks.md#keepaliveconnectiontimeouts")),
        "{fired:#}"
    );
    // Its `for` is 15 minutes: pending proves the expression matched the
    // keepalive-off client.
    let at_risk = alert(prom, "KeepaliveSocketsAtRisk", &t.ns_a, false)
        .expect("KeepaliveSocketsAtRisk not pending for the keepalive-off socket");
    assert_eq!(at_risk["state"], "pending");
    let labels = &at_risk["labels"];
    assert_eq!(
        (labels["profile"].as_str(), labels["reason"].as_str()),
        (Some("aws-nlb"), Some("keepalive_off"))
    );
    // Each middlebox's alert, for its client's namespace.
    for (name, ns) in [
        ("KeepaliveIdleResets", &t.ns_reset),
        ("KeepaliveIdleBlackholes", &t.ns_drop),
        ("KeepaliveStaleReuse", &t.ns_stale),
        ("KeepaliveDataAfterClose", &t.ns_late),
    ] {
        let a = alert(prom, name, ns, true)
            .unwrap_or_else(|| panic!("{name} for {ns}: {:#?}", prom.alerts()));
        assert!(
            a["annotations"]["runbook_url"]
                .as_str()
                .is_some_and(|r| r.ends_with(&format!("#{}", name.to_lowercase()))),
            "{a:#}"
        );
    }
    let reset = alert(prom, "KeepaliveIdleResets", &t.ns_reset, true).unwrap();
    assert_eq!(reset["labels"]["class"], "idle_reset");
    let alerts = prom.alerts();
    let firing: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
        .collect();
    assert_eq!(
        firing,
        BTreeSet::from(
            [
                "KeepaliveConnectionTimeouts",
                "KeepaliveIdleResets",
                "KeepaliveIdleBlackholes",
                "KeepaliveStaleReuse",
                "KeepaliveDataAfterClose",
            ]
            .map(String::from)
        ),
        "{alerts:#?}"
    );
    for quiet in [
        "KeepaliveAgentDown",
        "KeepaliveAgentAbsent",
        "KeepaliveAgentHookDown",
        "KeepaliveAgentLosingEvents",
        "KeepaliveAgentTableFull",
        "KeepaliveAgentKernelReadErrors",
        "KeepaliveAgentWebConfigReloadFailed",
    ] {
        assert!(
            !alerts.iter().any(|a| a["labels"]["alertname"] == quiet),
            "{quiet} active: {alerts:#?}"
        );
    }
    let rules_loaded = prom.rules();
    let alerting = rules_loaded
        .iter()
        .filter(|r| r["type"] == "alerting")
        .count();
    assert_eq!(alerting, ALERTS.len());
    // The recording rules record: the dashboard's per-workload rates.
    for record in rules_loaded.iter().filter(|r| r["type"] == "recording") {
        let name = record["name"].as_str().unwrap_or_default();
        // rate() needs two samples of a series the last events created.
        prom.wait_for(Duration::from_secs(15), |p| {
            (!p.query(name).is_empty()).then_some(())
        })
        .unwrap_or_else(|| panic!("recording rule {name} has no data"));
    }
    for r in &rules_loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
    }
    firing
}

/// Each dashboard query's samples, by (panel title, query ref).
type Results = BTreeMap<(String, String), Vec<Value>>;

/// Every dashboard query returns data.
fn dashboard_results(prom: &Prometheus, d: &Value, vars: &[String]) -> Results {
    let mut results = Results::new();
    for (title, ref_id, expr) in queries(d) {
        let promql = substitute(&expr, vars);
        let r = prom.query(&promql);
        assert!(
            !r.is_empty(),
            "panel {title:?} ({ref_id}) has no data:\n{promql}"
        );
        results.insert((title, ref_id), r);
    }
    results
}

/// The sample of panel `title`, query `ref_id`, whose labels all match.
fn sample(results: &Results, title: &str, ref_id: &str, labels: &[(&str, &str)]) -> Option<f64> {
    results[&(title.to_string(), ref_id.to_string())]
        .iter()
        .find(|s| labels.iter().all(|(k, v)| s["metric"][k] == *v))
        .map(sample_value)
}

/// The panels say what happened: answered probes at 100 %, the dead
/// peer's at 0 % (not missing), its probes unanswered, loopback RTTs, the
/// namespace's sysctls, the kill, the hooks, the socket at risk.
fn assert_panels(results: &Results, t: &Traffic) {
    let (a, q) = ([("netns", t.ns_a.as_str())], [("netns", t.ns_q.as_str())]);
    assert!(
        sample(results, "ACK ratio", "A", &q).is_some_and(|v| v > 0.99),
        "{results:#?}"
    );
    assert_eq!(sample(results, "ACK ratio", "A", &a), Some(0.0));
    assert!(sample(results, "Unanswered probes /s", "A", &a).is_some_and(|v| v > 0.0));
    for r in ["A", "B"] {
        for s in &results[&("Probe RTT".to_string(), r.to_string())] {
            let rtt = sample_value(s);
            assert!(
                rtt.is_finite() && rtt > 0.0 && rtt < 1.0,
                "probe RTT {r}: {rtt}"
            );
        }
    }
    let sysctl = "net.ipv4.tcp_keepalive_* per node and namespace";
    let sysctls: Vec<Option<f64>> = ["A", "B", "C", "D"]
        .into_iter()
        .map(|r| sample(results, sysctl, r, &a))
        .collect();
    assert_eq!(
        sysctls,
        [Some(600.0), Some(30.0), Some(5.0), Some(750.0)],
        "time, intvl, probes, dead peer detected after"
    );
    let killed = [("netns", t.ns_a.as_str()), ("cause", "keepalive")];
    assert_eq!(
        sample(
            results,
            "Connections killed in the time range",
            "A",
            &killed
        ),
        Some(1.0)
    );
    let hooks = &results[&("Hooks".to_string(), "A".to_string())];
    assert!(hooks.iter().all(|s| sample_value(s) == 1.0));
    assert_eq!(
        sample(results, "Sockets at risk", "A", &a),
        Some(1.0),
        "the keepalive-off client"
    );
    let reset = [("netns", t.ns_reset.as_str()), ("class", "idle_reset")];
    let since = "Resets and blackholes in the time range";
    assert_eq!(sample(results, since, "A", &reset), Some(1.0));
    let dropped = [("netns", t.ns_drop.as_str())];
    assert_eq!(sample(results, since, "B", &dropped), Some(1.0));
    let path = [("path", t.reset_path.as_str())];
    let learned = "Path idle timeouts learned";
    let survived = sample(results, learned, "A", &path).expect("a survived gap");
    let fatal = sample(results, learned, "B", &path).expect("a fatal gap");
    assert!(
        (1.0..3.0).contains(&survived) && fatal >= 3.0,
        "{survived} < 3 <= {fatal}"
    );
    let ct = "Node conntrack per namespace";
    let routers = &results[&(ct.to_string(), "A".to_string())];
    assert!(
        routers.iter().any(|s| sample_value(s) == 3.0),
        "{routers:#?}"
    );
}

/// The variables list this agent's job and node, and no pod.
fn assert_variables(prom: &Prometheus, d: &Value, vars: &[String], t: &Traffic) {
    for (name, def) in query_variables(d) {
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let values = prom.label_values(label.trim(), &substitute(selector.trim(), vars));
        match name.as_str() {
            // The node label the PodMonitor adds (here the scrape config).
            "node" => assert_eq!(values, [NODE], "node"),
            "job" => assert_eq!(values, ["keepalive-agent"], "job"),
            // The kit's namespaces are `ip netns` ones and its processes
            // the host's: none of their series may name a pod or namespace
            // (other containers on the node may).
            "namespace" | "pod" => {
                for ns in [&t.ns_a, &t.ns_q] {
                    let own =
                        prom.label_values(&name, &format!("keepalive_sockets{{netns=\"{ns}\"}}"));
                    assert!(own.is_empty(), "{name} of netns {ns}: {own:?}");
                }
            }
            "cluster" => assert!(values.is_empty(), "cluster: {values:?}"),
            other => panic!("variable {other} is not checked"),
        }
    }
}

/// Every metric family the agent exports appears on the dashboard.
fn assert_every_family_on_the_dashboard(agent: &Agent, d: &Value) {
    let (_, text) = agent.get("/metrics");
    let all_exprs: String = queries(d)
        .into_iter()
        .map(|q| q.2)
        .collect::<Vec<_>>()
        .join("\n");
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 20, "{text}");
    let missing: Vec<&&str> = families
        .iter()
        .filter(|f| !all_exprs.contains(**f))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics on no dashboard panel: {missing:?}"
    );
}

#[test]
fn dashboard_queries_and_alerts_work_on_a_real_prometheus() {
    let started = Instant::now();
    let mut w = start();
    let t = traffic(&mut w);
    assert_counts_scraped(&w.prom, &t);
    let firing = assert_alerts(&w.prom, &t, &w.listen);
    let d = dashboard();
    let vars: Vec<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let results = dashboard_results(&w.prom, &d, &vars);
    assert_panels(&results, &t);
    assert_variables(&w.prom, &d, &vars, &t);
    assert_every_family_on_the_dashboard(&w.agent, &d);
    eprintln!(
        "prometheus e2e: {} queries with data, {} answered probes, {} dead-peer probes, 1 keepalive kill, alerts firing {firing:?}, in {:.1?}",
        results.len(),
        t.answered_probes,
        FAST.cnt,
        started.elapsed()
    );
    drop(w.prom);
    w.agent.stop();
}
