//! The Grafana dashboard: provisioning-ready, and every query answered by a real Prometheus scraping a real agent, with the alerts firing from the rules as shipped.

use super::*;

pub(crate) fn dashboard() -> Value {
    serde_json::from_str(&read(&deploy("grafana/keepalive.json"))).expect("dashboard JSON")
}

/// Every panel, rows' collapsed children included.
pub(crate) fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        out.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    out
}

/// (panel title, refId, expr) of every query.
pub(crate) fn queries(d: &Value) -> Vec<(String, String, String)> {
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
pub(crate) fn substitute(expr: &str, vars: &[String]) -> String {
    let mut e = expr
        .replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        // The whole life of the test's Prometheus: "since" panels count from
        // the first sample.
        .replace("$__range", "1h");
    for v in vars {
        e = e
            .replace(&format!("${{{v}}}"), ".*")
            .replace(&format!("${v}"), ".*");
    }
    assert!(!e.contains('$'), "undeclared variable in {expr}");
    e
}

pub(crate) fn query_variables(d: &Value) -> Vec<(String, String)> {
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

/// Its uid and title, a data source variable and the label variables.
fn assert_variables(d: &Value) -> Vec<String> {
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
    for v in ["cluster", "job", "node", "namespace", "pod"] {
        assert!(names.iter().any(|n| n == v), "variable {v}");
    }
    for (name, def) in query_variables(d) {
        assert!(def.starts_with("label_values("), "{name}: {def}");
    }
    names
}

/// Every panel and query on the variable data source (no data source uid
/// baked in: provisioning into any Grafana works), on the grid, none
/// overlapping.
fn assert_panels_on_the_grid(d: &Value) {
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels(d) {
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
}

/// Each query named once, on the agent's metrics, and the panels the
/// dashboard must have, by what they query. Returns how many queries.
fn assert_queries(d: &Value, names: Vec<String>) -> (usize, Vec<String>) {
    let qs = queries(d);
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
            expr.contains("keepalive_") || expr.contains("up{") || expr.contains("process_"),
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
        "sum by (class, port) (rate(keepalive_connection_resets_total",
        "sum by (instance, namespace, pod, netns, port) ((increase(keepalive_idle_blackholes_total",
        "rate(process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "keepalive_agent_scan_duration_seconds",
        "keepalive_agent_web_config_last_reload_successful",
        "topk(10, sum by (namespace, pod) (increase(keepalive_connection_timeouts_total",
        "topk(10, sum by (namespace, pod) (keepalive_sockets_at_risk",
        "max by (path) (keepalive_path_idle_survived_seconds",
        "min by (path) (keepalive_path_idle_fatal_seconds",
        "keepalive_conntrack_tcp_timeout_established_seconds",
    ] {
        assert!(all.contains(needle), "no panel queries {needle}");
    }
    (qs.len(), var_names)
}

/// Provisioning files point at a folder and a Prometheus data source.
/// The monitoring mixins' conventions: rates in `pps`, no raw counter
/// shown as "since" (a restart resets it: increase over the range
/// instead), links to the runbooks from the dashboard and the panels
/// alerts are about.
fn assert_mixin_conventions(d: &Value) {
    let mut linked = 0;
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or_default();
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert_ne!(unit, "reqps", "{title}: rates are pps");
        assert!(!title.contains("since agent start"), "{title}");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let counter_shown_raw =
                expr.contains("_total{") && !expr.contains("rate(") && !expr.contains("increase(");
            assert!(!counter_shown_raw, "{title}: a raw counter: {expr}");
        }
        linked += p["links"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| {
                l["url"]
                    .as_str()
                    .is_some_and(|u| u.contains("runbooks.md#"))
            })
            .count();
    }
    assert!(linked >= 8, "{linked} panels link to a runbook");
    assert!(
        d["links"].as_array().into_iter().flatten().any(|l| l["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("docs/runbooks.md"))),
        "no dashboard link to the runbooks"
    );
}

fn assert_provisioning_files() {
    let provider = &yaml(&deploy("grafana/provisioning/dashboards/keepalive.yaml"))[0];
    assert_eq!(provider["providers"][0]["type"], "file");
    assert!(provider["providers"][0]["options"]["path"].is_string());
    let datasource = &yaml(&deploy("grafana/provisioning/datasources/prometheus.yaml"))[0];
    assert_eq!(datasource["datasources"][0]["type"], "prometheus");
}

#[test]
fn dashboard_is_provisioning_ready() {
    let d = dashboard();
    let names = assert_variables(&d);
    assert_panels_on_the_grid(&d);
    let (queries, var_names) = assert_queries(&d, names);
    assert_mixin_conventions(&d);
    assert_provisioning_files();
    eprintln!(
        "dashboard: {} panels, {queries} queries, variables {var_names:?}",
        panels(&d).len(),
    );
}
