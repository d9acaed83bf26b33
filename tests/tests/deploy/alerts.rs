//! The alert rules: `promtool check rules`, and every alert tested firing and quiet.

use super::*;

pub(crate) const ALERTS: [&str; 13] = [
    "KeepaliveConnectionTimeouts",
    "KeepaliveIdleResets",
    "KeepaliveStaleReuse",
    "KeepaliveDataAfterClose",
    "KeepaliveIdleBlackholes",
    "KeepaliveSocketsAtRisk",
    "KeepaliveAgentLosingEvents",
    "KeepaliveAgentTableFull",
    "KeepaliveAgentDown",
    "KeepaliveAgentAbsent",
    "KeepaliveAgentKernelReadErrors",
    "KeepaliveAgentWebConfigReloadFailed",
    "KeepaliveAgentHookDown",
];

/// Alerts about events (each one is news): they keep firing for a while
/// after the last one instead of flapping.
const EVENT_ALERTS: [&str; 8] = [
    "KeepaliveConnectionTimeouts",
    "KeepaliveIdleResets",
    "KeepaliveStaleReuse",
    "KeepaliveDataAfterClose",
    "KeepaliveIdleBlackholes",
    "KeepaliveAgentLosingEvents",
    "KeepaliveAgentTableFull",
    "KeepaliveAgentKernelReadErrors",
];

/// The selector of the mixin's config, in every expression.
const SELECTOR: &str = r#"job=~"keepalive-agent.*""#;

fn all_rules() -> Vec<Value> {
    yaml(&deploy("prometheus/keepalive-rules.yml"))[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The anchors of docs/runbooks.md's sections (GitHub's: lower case).
fn runbook_anchors() -> BTreeSet<String> {
    read(&repo().join("docs/runbooks.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect()
}

/// The alerts, each with a severity, a summary without labels (the same
/// for every alert a notification groups), a description and a
/// runbook_url to its own section of docs/runbooks.md; event alerts with
/// keep_firing_for; every expression with the mixin's selector; recording
/// rules named level:metric:operations.
fn assert_rule_shapes() -> usize {
    let rules = all_rules();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    assert_eq!(
        names.iter().copied().collect::<BTreeSet<_>>(),
        ALERTS.into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(names.len(), ALERTS.len(), "duplicate alerts");
    let anchors = runbook_anchors();
    for r in &rules {
        let expr = r["expr"].as_str().expect("expr");
        if let Some(record) = r["record"].as_str() {
            assert_eq!(
                record.split(':').count(),
                3,
                "{record}: level:metric:operations"
            );
            assert!(
                expr.contains(SELECTOR) || expr.contains(':'),
                "{record}: no selector"
            );
            continue;
        }
        let name = r["alert"].as_str().expect("alert");
        assert!(
            ["critical", "warning", "info"]
                .contains(&r["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        assert!(
            expr.contains(SELECTOR),
            "{name}: expression without the selector"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        assert!(
            summary.len() > 20 && !summary.contains("{{"),
            "{name}: summary {summary:?}"
        );
        let description = r["annotations"]["description"].as_str().unwrap_or("");
        assert!(description.len() > 40, "{name}: description");
        let url = r["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = url.rsplit_once('#').map(|(_, a)| a).unwrap_or("");
        assert!(
            url.contains("docs/runbooks.md#")
                && anchor == name.to_lowercase()
                && anchors.contains(anchor),
            "{name}: runbook_url {url:?} (sections: {anchors:?})"
        );
        assert_eq!(
            r.get("keep_firing_for").is_some(),
            EVENT_ALERTS.contains(&name),
            "{name}: keep_firing_for"
        );
    }
    rules.len()
}

/// `promtool check rules` finds them all.
fn assert_promtool_checks(rules_path: &Path, count: usize) {
    let (ok, out) = run(
        "promtool",
        &["check", "rules", rules_path.to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", count)),
        "{out}"
    );
}

/// Every alert is expected to fire in some case and to stay quiet in
/// another (promtool compares the full label and annotation sets).
fn assert_every_alert_fires_and_stays_quiet(test_path: &Path) {
    let tests = &yaml(test_path)[0];
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
}

/// The second branch of KeepaliveConnectionTimeouts (a series created by
/// its first timeout) is load-bearing: without it the tests fail.
fn assert_first_timeout_branch_is_needed(rules_path: &Path, test_path: &Path) {
    let tmp = prometheus::temp_dir("keepalive-rules");
    let mut doc = yaml(rules_path)[0].clone();
    for g in doc["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r["alert"] == "KeepaliveConnectionTimeouts" {
                r["expr"] = format!(
                    r#"increase(keepalive_connection_timeouts_total{{{SELECTOR}, cause="keepalive"}}[5m]) > 0"#
                )
                .into();
            }
        }
    }
    std::fs::write(tmp.join("keepalive-rules.yml"), doc.to_string()).unwrap();
    std::fs::copy(test_path, tmp.join("keepalive-rules.test.yml")).unwrap();
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

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_tested_firing_and_quiet() {
    require_tool("promtool", "apt-get install prometheus (cargo xtask setup)");
    let dir = deploy("prometheus");
    let rules_path = dir.join("keepalive-rules.yml");
    let test_path = dir.join("keepalive-rules.test.yml");
    let count = assert_rule_shapes();
    assert_promtool_checks(&rules_path, count);
    let (ok, out) = run(
        "promtool",
        &["test", "rules", test_path.to_str().unwrap()],
        Some(&dir),
    );
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");
    assert_every_alert_fires_and_stays_quiet(&test_path);
    assert_first_timeout_branch_is_needed(&rules_path, &test_path);
}
