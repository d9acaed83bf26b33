//! The fleet deployment files in `deploy/`, checked by the tools that will
//! consume them and against the real agent:
//!
//! - the alert rules pass `promtool check rules`, and `promtool test rules`
//!   shows every alert both firing and staying quiet;
//! - a real Prometheus server scraping a running agent through real
//!   keepalive traffic (answered probes, a dead peer killed by keepalive, a
//!   socket at risk) answers every dashboard query with data, and fires
//!   KeepaliveConnectionTimeouts from the rules file as shipped;
//! - the Kubernetes manifests validate against the API schemas, offline;
//! - the systemd unit passes `systemd-analyze verify`;
//! - the privileges both give the agent (capabilities, user) are enough for
//!   everything it does, and the one beyond the brief's list is needed.
//!
//! YAML is read through python3's PyYAML, which `kubernetes-validate`
//! (the schema validator) depends on.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{
    agent::{self, Agent},
    metrics::value,
    prometheus::{self, Prometheus, sample_value},
    scenario,
    sock::{self, FAST},
    world::{self, Netns, Pair},
};
use serde_json::Value;

const VALIDATOR_INSTALL: &str = "python3 -m pip install kubernetes-validate==1.37.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs a command: (success, stdout + stderr).
fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {program} {}: {e}", args.join(" ")));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Panics with the install command unless `program` is on PATH.
fn require_tool(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    assert!(found, "{program} not found on PATH: {install}");
}

/// Every document of a YAML file, as JSON.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running python3 ({VALIDATOR_INSTALL} brings PyYAML): {e}"));
    assert!(
        out.status.success(),
        "reading {} with python3 + PyYAML ({VALIDATOR_INSTALL} brings PyYAML): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

// ---------------------------------------------------------------------------
// Alert rules
// ---------------------------------------------------------------------------

const ALERTS: [&str; 6] = [
    "KeepaliveConnectionTimeouts",
    "KeepaliveSocketsAtRisk",
    "KeepaliveAgentLosingEvents",
    "KeepaliveAgentTableFull",
    "KeepaliveAgentDown",
    "KeepaliveAgentHookDown",
];

fn alert_rules() -> Vec<Value> {
    yaml(&deploy("prometheus/keepalive-rules.yml"))[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_tested_firing_and_quiet() {
    require_tool("promtool", "apt-get install prometheus (cargo xtask setup)");
    let dir = deploy("prometheus");
    let rules_path = dir.join("keepalive-rules.yml");
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        ALERTS.into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(names.len(), rules.len(), "recording rules or duplicates");
    for r in &rules {
        let name = &r["alert"];
        assert!(
            ["critical", "warning", "info"]
                .contains(&r["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        for a in ["summary", "description", "runbook"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| s.len() > 20),
                "{name}: annotation {a}"
            );
        }
    }

    let (ok, out) = run(
        "promtool",
        &["check", "rules", rules_path.to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{out}"
    );

    let test_path = dir.join("keepalive-rules.test.yml");
    let (ok, out) = run(
        "promtool",
        &["test", "rules", test_path.to_str().unwrap()],
        Some(&dir),
    );
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");

    // Every alert is expected to fire in some case and to stay quiet in
    // another (promtool compares the full label and annotation sets).
    let tests = &yaml(&test_path)[0];
    assert_eq!(strings(&tests["rule_files"]), vec!["keepalive-rules.yml"]);
    let mut firing: BTreeMap<String, usize> = BTreeMap::new();
    let mut quiet: BTreeMap<String, usize> = BTreeMap::new();
    for t in tests["tests"].as_array().expect("tests") {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let n = case["exp_alerts"].as_array().map_or(0, Vec::len);
            if n == 0 {
                *quiet.entry(name).or_default() += 1;
            } else {
                *firing.entry(name).or_default() += n;
            }
        }
    }
    for a in ALERTS {
        assert!(
            firing.get(a).is_some_and(|n| *n > 0),
            "{a} never expected to fire"
        );
        assert!(
            quiet.get(a).is_some_and(|n| *n > 0),
            "{a} never expected to stay quiet"
        );
    }
    eprintln!(
        "promtool: {} alerts, expected firing {firing:?}, quiet {quiet:?}",
        ALERTS.len()
    );

    // The second branch of KeepaliveConnectionTimeouts (a series created
    // by its first timeout) is load-bearing: without it the tests fail.
    let tmp = prometheus::temp_dir("keepalive-rules");
    let mut doc = yaml(&rules_path)[0].clone();
    for g in doc["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r["alert"] == "KeepaliveConnectionTimeouts" {
                r["expr"] =
                    r#"increase(keepalive_connection_timeouts_total{cause="keepalive"}[5m]) > 0"#
                        .into();
            }
        }
    }
    std::fs::write(tmp.join("keepalive-rules.yml"), doc.to_string()).unwrap();
    std::fs::copy(&test_path, tmp.join("keepalive-rules.test.yml")).unwrap();
    let (ok, out) = run(
        "promtool",
        &["test", "rules", "keepalive-rules.test.yml"],
        Some(&tmp),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        !ok && out.contains("alertname: KeepaliveConnectionTimeouts") && out.contains("node-a"),
        "increase() alone should miss node-a's first timeout:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// Dashboard
// ---------------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/keepalive.json"))).expect("dashboard JSON")
}

/// Every panel, rows' collapsed children included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// (panel title, refId, expr) of every query.
fn queries(d: &Value) -> Vec<(String, String, String)> {
    panels(d)
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    (
                        p["title"].as_str().unwrap_or("").to_string(),
                        t["refId"].as_str().unwrap_or("").to_string(),
                        t["expr"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Grafana's variables as Prometheus sees them with "All" selected, and
/// Grafana's interval macros at values a 1 s scrape supports.
fn substitute(expr: &str, vars: &[String]) -> String {
    let mut e = expr
        .replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$__range", "1m");
    for v in vars {
        e = e
            .replace(&format!("${{{v}}}"), ".*")
            .replace(&format!("${v}"), ".*");
    }
    assert!(!e.contains('$'), "undeclared variable in {expr}");
    e
}

fn query_variables(d: &Value) -> Vec<(String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["definition"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn dashboard_is_provisioning_ready() {
    let d = dashboard();
    assert_eq!(d["uid"], "keepalive-agent");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let vars = d["templating"]["list"].as_array().expect("variables");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let names: Vec<String> = vars
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    for v in ["node", "netns"] {
        assert!(names.iter().any(|n| n == v), "variable {v}");
    }
    for (name, def) in query_variables(&d) {
        assert!(def.starts_with("label_values("), "{name}: {def}");
    }
    // Every panel and query on the variable data source (no data source
    // uid baked in: provisioning into any Grafana works).
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} wider than the grid");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let qs = queries(&d);
    let keys: BTreeSet<(&str, &str)> = qs.iter().map(|q| (q.0.as_str(), q.1.as_str())).collect();
    assert_eq!(
        keys.len(),
        qs.len(),
        "panel titles + refIds name each query once"
    );
    let var_names: Vec<String> = names.into_iter().filter(|n| n != "datasource").collect();
    for (title, _, expr) in &qs {
        substitute(expr, &var_names);
        assert!(
            expr.contains("keepalive_") || expr.contains("up{"),
            "{title}: {expr}"
        );
    }
    // The panels the issue asks for, by what they query.
    let all: String = qs
        .iter()
        .map(|q| q.2.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "rate(keepalive_probes_total",
        "rate(keepalive_probe_acks_total",
        "histogram_quantile(0.5, sum by (le, instance) (rate(keepalive_probe_rtt_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, instance) (rate(keepalive_probe_rtt_seconds_bucket",
        "sum by (cause, port) (rate(keepalive_connection_timeouts_total",
        "keepalive_sockets{keepalive=\"off\"",
        "sum by (profile, reason) (keepalive_sockets_at_risk",
        "keepalive_sysctl_time_seconds",
        "keepalive_sysctl_intvl_seconds",
        "keepalive_sysctl_probes",
        "rate(keepalive_agent_events_lost_total",
        "rate(keepalive_agent_socket_map_full_total",
        "keepalive_agent_hook_up",
        "keepalive_agent_tc_interfaces",
    ] {
        assert!(all.contains(needle), "no panel queries {needle}");
    }
    // Provisioning files point at a folder and a Prometheus data source.
    let provider = &yaml(&deploy("grafana/provisioning/dashboards/keepalive.yaml"))[0];
    assert_eq!(provider["providers"][0]["type"], "file");
    assert!(provider["providers"][0]["options"]["path"].is_string());
    let datasource = &yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"))[0];
    assert_eq!(datasource["datasources"][0]["type"], "prometheus");
    eprintln!(
        "dashboard: {} panels, {} queries, variables {var_names:?}",
        panels(&d).len(),
        qs.len()
    );
}

/// The end-to-end check: a real Prometheus with the shipped rules scrapes
/// the agent every second while real keepalive traffic runs.
#[test]
fn dashboard_queries_and_alerts_work_on_a_real_prometheus() {
    let started = Instant::now();
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
    let mut agent = Agent::start(&["--idle-timeout", "aws-nlb", "--inventory-seconds", "1"]);
    let listen = agent.addr();
    let rules = deploy("prometheus/keepalive-rules.yml");
    // The rules file as shipped, not a copy with shorter `for:`: the alert
    // that must fire has `for: 0m`, and the 15-minute one is checked as
    // pending, which proves its expression matched.
    let prom = Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: keepalive-agent\n    static_configs:\n      - targets: [\"{listen}\"]\n",
        rules.display()
    ));
    prom.wait_for(Duration::from_secs(15), |p| {
        (!p.query(r#"up{job="keepalive-agent"} == 1"#).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped the agent:\n{}", prom.log()));

    // Traffic: in a, a 1/1/3 keepalive client whose peer vanishes and a
    // client with keepalive off (at risk against aws-nlb); in another
    // namespace, a keepalive client whose probes are answered (ACKs, RTT).
    let server = pair
        .b
        .run(|| sock::listen(format!("{}:0", world::B_V4).parse().unwrap()));
    let to = server.local_addr().unwrap();
    let (dying, _idle_off) = pair
        .a
        .run(|| (sock::connect(to, Some(FAST)), sock::connect(to, None)));
    let _accepted: Vec<_> = (0..2).map(|_| server.accept().unwrap()).collect();
    let dying_cookie = sock::cookie(&dying);
    let (err, (_, _, answered_probes)) = std::thread::scope(|s| {
        let answered_client = s.spawn(|| {
            answered
                .run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(5500)))
        });
        world::drop_all_input(&pair.b);
        let err = pair.a.run(|| {
            let mut c = &dying;
            c.read(&mut [0u8; 1])
                .expect_err("read on a dead peer must fail")
        });
        (err, answered_client.join().expect("answered client"))
    });
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    assert!(
        answered_probes >= 3,
        "kernel sent {answered_probes} answered probes"
    );
    agent
        .wait_for(Duration::from_secs(5), |r| {
            r.event == keepalive_api::RecordKind::KeepaliveTimeout && r.cookie == dying_cookie
        })
        .expect("the agent reported no keepalive_timeout");
    let ns_a = pair.a.inode().to_string();
    let ns_q = answered.inode().to_string();

    // Prometheus holds the exact counts, scraped at least twice since.
    let q = |promql: String| -> Option<f64> {
        let r = prom.query(&promql);
        r.first().map(sample_value)
    };
    let settled = prom.wait_for(Duration::from_secs(10), |_| {
        let killed = q(format!(
            r#"keepalive_connection_timeouts_total{{cause="keepalive",netns="{ns_a}"}}"#
        ))?;
        let samples = q(format!(
            r#"count_over_time(keepalive_connection_timeouts_total{{cause="keepalive",netns="{ns_a}"}}[30s])"#
        ))?;
        let probes_q = q(format!(r#"sum(keepalive_probes_total{{netns="{ns_q}"}})"#))?;
        (samples >= 2.0 && probes_q == answered_probes as f64).then_some(killed)
    });
    assert_eq!(
        settled,
        Some(1.0),
        "one keepalive kill in a, {answered_probes} probes in the answered namespace"
    );
    assert_eq!(
        q(format!(r#"sum(keepalive_probes_total{{netns="{ns_a}"}})"#)),
        Some(f64::from(FAST.cnt))
    );
    assert_eq!(
        q(format!(
            r#"sum(keepalive_probe_acks_total{{netns="{ns_q}"}})"#
        )),
        Some(answered_probes as f64)
    );

    // The alert from the shipped rules fires for that namespace.
    let fired = prom
        .wait_for(Duration::from_secs(10), |p| {
            p.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "KeepaliveConnectionTimeouts"
                    && a["labels"]["netns"] == ns_a.as_str()
                    && a["state"] == "firing"
            })
        })
        .unwrap_or_else(|| {
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
        fired["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| r.contains("net.ipv4.tcp_keepalive_time") && r.contains(&listen)),
        "{fired:#}"
    );
    // KeepaliveSocketsAtRisk's expression matches the keepalive-off client
    // (pending: its `for` is 15 minutes).
    let at_risk = prom
        .wait_for(Duration::from_secs(10), |p| {
            p.alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "KeepaliveSocketsAtRisk"
                    && a["labels"]["netns"] == ns_a.as_str()
            })
        })
        .expect("KeepaliveSocketsAtRisk not pending for the keepalive-off socket");
    assert_eq!(at_risk["state"], "pending");
    assert_eq!(
        (
            at_risk["labels"]["profile"].as_str(),
            at_risk["labels"]["reason"].as_str()
        ),
        (Some("aws-nlb"), Some("keepalive_off"))
    );
    let alerts = prom.alerts();
    let firing: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert_eq!(
        firing,
        BTreeSet::from(["KeepaliveConnectionTimeouts"]),
        "{alerts:#?}"
    );
    for quiet in [
        "KeepaliveAgentDown",
        "KeepaliveAgentHookDown",
        "KeepaliveAgentLosingEvents",
        "KeepaliveAgentTableFull",
    ] {
        assert!(
            !alerts.iter().any(|a| a["labels"]["alertname"] == quiet),
            "{quiet} active: {alerts:#?}"
        );
    }
    let rules_loaded = prom.rules();
    assert_eq!(rules_loaded.len(), ALERTS.len());
    for r in &rules_loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
    }

    // Every dashboard query returns data.
    let d = dashboard();
    let vars: Vec<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let mut results: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for (title, ref_id, expr) in queries(&d) {
        let promql = substitute(&expr, &vars);
        let r = prom.query(&promql);
        assert!(
            !r.is_empty(),
            "panel {title:?} ({ref_id}) has no data:\n{promql}"
        );
        results.insert((title, ref_id), r);
    }
    let of = |title: &str, ref_id: &str, netns: &str| -> Option<f64> {
        results[&(title.to_string(), ref_id.to_string())]
            .iter()
            .find(|s| s["metric"]["netns"] == netns)
            .map(sample_value)
    };
    // The panels say what happened: answered probes at 100 %, the dead
    // peer's at 0 % (not missing), its probes unanswered, loopback RTTs.
    assert!(
        of("ACK ratio", "A", &ns_q).is_some_and(|v| v > 0.99),
        "{results:#?}"
    );
    assert_eq!(of("ACK ratio", "A", &ns_a), Some(0.0));
    assert!(of("Unanswered probes /s", "A", &ns_a).is_some_and(|v| v > 0.0));
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
    assert_eq!(
        (
            of(sysctl, "A", &ns_a),
            of(sysctl, "B", &ns_a),
            of(sysctl, "C", &ns_a),
            of(sysctl, "D", &ns_a)
        ),
        (Some(600.0), Some(30.0), Some(5.0), Some(750.0)),
        "time, intvl, probes, dead peer detected after"
    );
    let killed = results[&(
        "Connections killed since agent start".to_string(),
        "A".to_string(),
    )]
        .iter()
        .find(|s| s["metric"]["netns"] == ns_a.as_str() && s["metric"]["cause"] == "keepalive")
        .map(sample_value);
    assert_eq!(killed, Some(1.0));
    assert!(
        results[&("Hooks".to_string(), "A".to_string())]
            .iter()
            .all(|s| sample_value(s) == 1.0)
    );
    assert_eq!(
        of("Sockets at risk", "A", &ns_a),
        Some(1.0),
        "the keepalive-off client"
    );

    // The variables list this agent and both namespaces.
    for (name, def) in query_variables(&d) {
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let values = prom.label_values(label.trim(), &substitute(selector.trim(), &vars));
        match name.as_str() {
            "node" => assert!(values.contains(&listen), "node: {values:?}"),
            "netns" => assert!(
                values.contains(&ns_a) && values.contains(&ns_q),
                "netns: {values:?}"
            ),
            other => assert!(!values.is_empty(), "{other}: no values"),
        }
    }

    // Every metric family the agent exports appears on the dashboard.
    let (_, text) = agent.get("/metrics");
    let all_exprs: String = queries(&d)
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

    eprintln!(
        "prometheus e2e: {} queries with data, {answered_probes} answered probes, {} dead-peer probes, 1 keepalive kill, alerts firing {firing:?}, in {:.1?}",
        results.len(),
        FAST.cnt,
        started.elapsed()
    );
    drop(prom);
    agent.stop();
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

/// Kubernetes versions to validate against: the first with the
/// `appArmorProfile` field the DaemonSet uses, and the newest the pinned
/// validator bundles.
const K8S_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let mut args = vec![
        "-m",
        "kubernetes_validate",
        "--strict",
        "--quiet",
        "-k",
        version,
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    run("python3", &args, None)
}

/// Panics with the install command unless python3 has kubernetes-validate
/// at the pinned version (which bundles the schemas of K8S_VERSIONS).
fn require_validator() {
    let (ok, out) = run("python3", &["-m", "kubernetes_validate", "--version"], None);
    assert!(
        ok && out.trim() == "1.37.0",
        "kubernetes-validate 1.37.0 not installed for python3 ({}): {VALIDATOR_INSTALL}",
        out.trim()
    );
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    require_validator();
    let dir = deploy("kubernetes");
    let kustomization = &yaml(&dir.join("kustomization.yaml"))[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml resources vs files");

    // Kubernetes API objects against the bundled OpenAPI schemas; the
    // PodMonitor is a CRD the validator has no schema for: its shape is
    // checked below.
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    let mut api_files = Vec::new();
    for f in &on_disk {
        let docs = yaml(&dir.join(f));
        assert_eq!(docs.len(), 1, "{f}: one object per file");
        let kind = docs[0]["kind"].as_str().expect("kind").to_string();
        if !docs[0]["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            api_files.push(dir.join(f));
        }
        objects.insert(kind, docs[0].clone());
    }
    for version in K8S_VERSIONS {
        let (ok, out) = validate(&api_files, version);
        assert!(
            ok && !out.contains("ERROR") && !out.contains("WARN"),
            "kubernetes-validate --strict -k {version}:\n{out}"
        );
    }
    // The validator is strict: an unknown field fails.
    let tmp = prometheus::temp_dir("keepalive-k8s");
    let bad = tmp.join("daemonset.yaml");
    std::fs::write(
        &bad,
        read(&dir.join("daemonset.yaml")).replace(
            "      hostPID: true\n",
            "      hostPID: true\n      hostPIDs: true\n",
        ),
    )
    .unwrap();
    let (ok, out) = validate(std::slice::from_ref(&bad), K8S_VERSIONS[1]);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        !ok && out.contains("hostPIDs"),
        "a misspelt field passed:\n{out}"
    );

    let ns = objects["Namespace"]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        objects["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for (kind, o) in &objects {
        if kind != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], ns, "{kind}");
        }
    }

    // The DaemonSet: least privilege, host namespaces, read-only host paths.
    let ds = &objects["DaemonSet"];
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    assert_eq!(
        (pod["hostNetwork"].as_bool(), pod["hostPID"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["serviceAccountName"],
        objects["ServiceAccount"]["metadata"]["name"]
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists"
                && t.get("key").is_none()
                && t.get("effect").is_none()),
        "tolerates every taint"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        DAEMONSET_CAPS.iter().map(|s| s.to_string()).collect()
    );
    let env = container_env(c);
    assert_eq!(
        env.get("KEEPALIVE_LISTEN").map(String::as_str),
        Some("0.0.0.0:9977")
    );
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(port["containerPort"], 9977);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/healthz"),
        ("livenessProbe", "/livez"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    for (k, v) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        assert!(c["resources"][k][v].is_string(), "resources.{k}.{v}");
    }
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["hostPath"]["path"]
                    .as_str()
                    .expect("only hostPath volumes"),
            )
        })
        .collect();
    assert_eq!(
        volumes.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["/sys/kernel/btf", "/boot", "/run/netns"]),
        "no /proc from the host: hostPID shows the host's processes"
    );
    for m in c["volumeMounts"].as_array().unwrap() {
        assert_eq!(m["readOnly"], true, "{m}");
        assert_eq!(
            m["mountPath"].as_str(),
            volumes.get(m["name"].as_str().unwrap()).copied(),
            "mounted where the agent looks"
        );
        if m["mountPath"] == "/run/netns" {
            assert_eq!(m["mountPropagation"], "HostToContainer");
        }
    }

    // Service and PodMonitor find the pods and the port by name.
    let svc = &objects["Service"];
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let pm = &objects["PodMonitor"];
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    for sel in [
        &svc["spec"]["selector"],
        &pm["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in sel.as_object().expect("selector") {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k}");
        }
    }
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    // job = the pod label jobLabel names, matched by KeepaliveAgentDown.
    let job = pod_labels[pm["spec"]["jobLabel"].as_str().expect("jobLabel")]
        .as_str()
        .unwrap();
    assert!(job.starts_with("keepalive-agent"), "job {job}");

    // The image: the Dockerfile copies the release binary to where it runs it.
    let dockerfile = read(&deploy("docker/Dockerfile"));
    let copy = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY "))
        .expect("COPY");
    let (src, dest) = copy.split_once(' ').unwrap();
    assert_eq!(src, "target/release/keepalive-agent");
    assert!(repo().join(src).is_file(), "{src} not built");
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{dest}\"]")),
        "ENTRYPOINT runs {dest}"
    );
    assert_eq!(strings(&c["args"]), vec!["run"]);
    eprintln!(
        "kubernetes: {} API objects valid against {K8S_VERSIONS:?}, PodMonitor shape checked",
        api_files.len()
    );
}

fn container_env(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------

/// `Key=value` lines of the unit, last one wins.
fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_verifies_and_keeps_what_the_agent_needs() {
    require_tool("systemd-analyze", "apt-get install systemd");
    let unit_path = deploy("systemd/keepalive-agent.service");
    let text = read(&unit_path);
    let s = unit_settings(&text);
    const EXEC: &str = "/usr/local/bin/keepalive-agent run --quiet";
    assert_eq!(s["ExecStart"], EXEC);
    assert_eq!(s["Restart"], "on-failure");
    assert_eq!(s["DynamicUser"], "yes", "not root");
    assert_eq!(s["NoNewPrivileges"], "yes");
    assert_eq!(s["ProtectSystem"], "strict");
    assert_eq!(s["LimitMEMLOCK"], "infinity");
    let caps =
        |k: &str| -> BTreeSet<String> { s[k].split_whitespace().map(String::from).collect() };
    let want: BTreeSet<String> = UNIT_CAPS.iter().map(|c| c.to_string()).collect();
    assert_eq!(caps("CapabilityBoundingSet"), want);
    assert_eq!(caps("AmbientCapabilities"), want);
    assert_eq!(
        caps("RestrictAddressFamilies"),
        ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
            .map(String::from)
            .into()
    );
    // What would break the agent: kallsyms hidden (ProtectKernelTunables),
    // CAP_SYSLOG removed (ProtectKernelLogs), other processes hidden, the
    // host's network or capabilities out of reach.
    for off in [
        "ProtectKernelTunables",
        "ProtectKernelLogs",
        "ProcSubset",
        "PrivateNetwork",
        "PrivateUsers",
    ] {
        assert!(s.get(off).is_none_or(|v| v == "no"), "{off}={}", s[off]);
    }
    assert!(s.get("ProtectProc").is_none_or(|v| v == "default"));

    // systemd-analyze checks that ExecStart exists: verify a copy that runs
    // the binary built here, identical otherwise.
    let binary = agent::binary();
    let tmp = prometheus::temp_dir("keepalive-unit");
    let copy = tmp.join("keepalive-agent.service");
    std::fs::write(
        &copy,
        text.replace(
            "ExecStart=/usr/local/bin/keepalive-agent",
            &format!("ExecStart={}", binary.canonicalize().unwrap().display()),
        ),
    )
    .unwrap();
    let copy_s = copy.to_str().unwrap();
    let (ok, out) = run("systemd-analyze", &["verify", copy_s], None);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    let (_, out) = run(
        "systemd-analyze",
        &["security", "--offline=yes", copy_s],
        None,
    );
    let _ = std::fs::remove_dir_all(&tmp);
    let exposure: f64 = out
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for keepalive-agent.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(
        exposure <= 4.0,
        "systemd-analyze security: exposure {exposure}\n{out}"
    );
    eprintln!("systemd: verify clean, exposure {exposure}");
}

// ---------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------

/// capabilities.add of the DaemonSet.
const DAEMONSET_CAPS: [&str; 8] = [
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
const UNIT_CAPS: [&str; 7] = [
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
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.0.try_wait() {
                if Instant::now() > deadline {
                    let _ = self.0.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.wait();
        }
    }
}

fn last_os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Starts the agent binary as `p` says, with only `env` in its environment
/// (as a container or a unit would).
fn spawn_agent(p: &Privileges, args: &[&str], env: &BTreeMap<String, String>, log: &Path) -> Proc {
    let last_cap: u32 = read(Path::new("/proc/sys/kernel/cap_last_cap"))
        .trim()
        .parse()
        .unwrap();
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
    let uid = p.uid;
    let mut cmd = Command::new(agent::binary());
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
            for c in 0..=last_cap {
                if mask & (1 << c) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) != 0
                {
                    return Err(last_os_error());
                }
            }
            if let Some(uid) = uid {
                if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(uid, uid, uid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(last_os_error());
                }
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
                let header = Header {
                    version: 0x2008_0522,
                    pid: 0,
                };
                let (lo, hi) = (mask as u32, (mask >> 32) as u32);
                let data = [
                    Data {
                        effective: lo,
                        permitted: lo,
                        inheritable: lo,
                    },
                    Data {
                        effective: hi,
                        permitted: hi,
                        inheritable: hi,
                    },
                ];
                if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                    return Err(last_os_error());
                }
                for c in 0..=last_cap {
                    if mask & (1 << c) != 0
                        && libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            c as libc::c_ulong,
                            0,
                            0,
                        ) != 0
                    {
                        return Err(last_os_error());
                    }
                }
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
    local: String,
    remote: String,
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
    let local = sock::endpoint(client.local_addr().unwrap());
    let remote = sock::endpoint(client.peer_addr().unwrap());
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
    let resp = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.into_body().read_to_string().ok()?))
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status_field(pid: u32, field: &str) -> String {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// What the agent does with `p`, checked against the kernel.
struct Outcome {
    owner_pid: Option<u64>,
}

fn run_with(
    p: &Privileges,
    base_env: &BTreeMap<String, String>,
    args: &[&str],
    held: &HeldByNobody,
    check_pipeline: bool,
) -> Outcome {
    // A namespace only `ip netns` knows (no process in it yet), with its
    // own sysctl: the agent must find it through /run/netns.
    let ns = Netns::new("kdp");
    ns.exec(&["sysctl", "-qw", "net.ipv4.tcp_keepalive_time=123"]);
    let port = prometheus::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut env = base_env.clone();
    // Loopback here, where the DaemonSet says 0.0.0.0: the test opens no
    // port to the network.
    env.insert("KEEPALIVE_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert("KEEPALIVE_INVENTORY_SECONDS".into(), "1".into());
    let tmp = prometheus::temp_dir("keepalive-privileges");
    let log = tmp.join("agent.log");
    let agent = spawn_agent(p, args, &env, &log);
    let pid = agent.0.id();
    let healthy = poll(Duration::from_secs(30), || {
        http_get(&format!("{base}/healthz")).filter(|(s, _)| *s == 200)
    });
    let log_text = read(&log);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        healthy.is_some(),
        "{}: /healthz never 200:\n{log_text}",
        p.what
    );

    // Runs with exactly these privileges: no capability beyond them.
    let eff = u64::from_str_radix(&status_field(pid, "CapEff:"), 16).unwrap();
    let mask: u64 = p.caps.iter().map(|c| 1u64 << c).sum();
    assert_eq!(eff & !mask, 0, "{}: CapEff {eff:x} beyond {mask:x}", p.what);
    let uid = status_field(pid, "Uid:");
    let want_uid = p.uid.unwrap_or(0).to_string();
    assert!(
        uid.split_whitespace().all(|u| u == want_uid),
        "{}: Uid {uid}",
        p.what
    );

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
    let sysctl = poll(Duration::from_secs(10), || {
        let (_, text) = http_get(&format!("{base}/metrics"))?;
        value(&text, "keepalive_sysctl_time_seconds", &[("netns", &ino)])
    });
    assert_eq!(
        sysctl,
        Some(123.0),
        "{}: sysctl of an `ip netns` namespace",
        p.what
    );

    let mut probes = 0;
    if check_pipeline {
        // Probes and their ACKs counted exactly, in that namespace.
        let (_, _, delta) =
            ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
        assert!(delta >= 2, "kernel sent {delta} probes");
        let mut seen = (None, None);
        let counted = poll(Duration::from_secs(5), || {
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
        probes = delta;
    }

    // The owner of a socket that only a nobody process holds.
    let owner = |want: bool| {
        let (_, body) = http_get(&format!("{base}/sockets"))?;
        let rows: Value = serde_json::from_str(&body).ok()?;
        let row = rows.as_array()?.iter().find(|r| {
            r["local"] == held.local.as_str()
                && r["remote"] == held.remote.as_str()
                && r["state"] == "ESTAB"
        })?;
        let pid = row["owner"]["pid"].as_u64();
        (pid.is_some() == want).then_some(pid)
    };
    let owner_pid = poll(Duration::from_secs(4), || owner(true))
        .or_else(|| owner(false))
        .unwrap_or_else(|| panic!("{}: socket {} not in /sockets", p.what, held.local));
    drop(agent);
    let held: Vec<&str> = (0..64)
        .filter(|c| eff & (1 << c) != 0)
        .map(cap_name)
        .collect();
    eprintln!(
        "{}: healthy, uid {want_uid}, effective {held:?}, all hooks up, `ip netns` sysctl read, {probes} probes/acks = kernel, owner of nobody's socket {owner_pid:?}",
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
    let ds_env = container_env(c);
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

    // CAP_DAC_READ_SEARCH, beyond the issue's list, is what finds owners
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
