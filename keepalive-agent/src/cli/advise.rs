//! `advise`: the sysctls for each path idle timeout, configured or learned
//! by the agent (`/paths`), the sockets that would still be at risk after
//! them, and each workload's fix in its program's terms (`/advice`).

use keepalive_api::{PathRow, SocketRow};
use serde::Serialize;

use super::{
    args::{AdviceFormat, AdviseArgs},
    client::{get, path_rows, socket_rows},
    table, workloads,
};
use crate::{
    api::advice::AdviceReply,
    model::{
        risk::{self, Advice, Destination, Rule, profiles::PROFILES},
        workload::WorkloadAdvice,
    },
};

/// One rule's advice, as `advise --json` writes it.
#[derive(Serialize)]
struct RuleAdvice<'a> {
    profile: &'static str,
    idle_timeout_s: u32,
    l7: bool,
    note: &'static str,
    destination: &'a Option<Destination>,
    advice: Advice,
}

/// One learned path's advice.
#[derive(Serialize)]
struct PathAdvice<'a> {
    path: &'a str,
    survived_s: Option<f64>,
    fatal_s: f64,
    consistent_with: &'a [String],
    /// Every profile it fits is a layer-7 proxy: probes do not help.
    l7: bool,
    advice: Advice,
}

#[derive(Serialize)]
struct Report<'a> {
    rules: Vec<RuleAdvice<'a>>,
    /// Paths whose idle timeout the agent learned; None when the agent
    /// could not be asked.
    learned: Option<Vec<PathAdvice<'a>>>,
    /// None when the agent could not be asked.
    sockets_at_risk: Option<Vec<SocketRow>>,
    /// Each workload and its fix; None when the agent could not be asked.
    workloads: Option<Vec<WorkloadAdvice>>,
}

/// The agent's `/advice`, judged against `rules` (its own when empty).
fn workload_advice(agent: &str, rules: &[Rule]) -> anyhow::Result<Vec<WorkloadAdvice>> {
    use anyhow::Context as _;
    let query: Vec<(&str, String)> = if rules.is_empty() {
        Vec::new()
    } else {
        let joined: Vec<String> = rules.iter().map(Rule::to_string).collect();
        vec![("idle_timeout", joined.join(","))]
    };
    let body = get(agent, "/advice", &query)?
        .into_body()
        .read_to_string()
        .context("reading /advice")?;
    let reply: AdviceReply = serde_json::from_str(&body).context("parsing /advice")?;
    Ok(reply.workloads)
}

pub fn advise(args: AdviseArgs) -> anyhow::Result<()> {
    let rules = &args.idle_timeouts;
    // The agent is optional here: without it, the sysctl advice alone.
    let sockets = socket_rows(&args.agent.agent, &[("state", "ESTAB".into())]);
    let paths = path_rows(&args.agent.agent).ok();
    let learned: Option<Vec<PathAdvice>> = paths
        .as_ref()
        .map(|rows| rows.iter().filter_map(path_advice).collect());
    let idle_closes: Vec<&PathRow> = paths
        .iter()
        .flatten()
        .filter(|r| r.idle_close.is_some())
        .collect();
    if rules.is_empty() && learned.as_ref().is_none_or(Vec::is_empty) && idle_closes.is_empty() {
        anyhow::bail!(
            "nothing to advise on: give --idle-timeout, or ask an agent that has learned a path's timeout (keepalive-agent paths)"
        );
    }
    let at_risk: Option<Vec<SocketRow>> = sockets.as_ref().ok().map(|rows| {
        rows.iter()
            .filter(|r| still_at_risk(r, rules))
            .cloned()
            .collect()
    });
    let advised = sockets
        .as_ref()
        .ok()
        .map(|_| workload_advice(&args.agent.agent, rules));
    let format = args.output();
    if format == AdviceFormat::Markdown {
        let rule_lines: Vec<String> = rules.iter().map(markdown_rule).collect();
        let advised = advised.map_or_else(
            || Err(sockets.err().map_or_else(String::new, |e| format!("{e:#}"))),
            |w| w.map_err(|e| format!("{e:#}")),
        );
        print!("{}", workloads::markdown(&rule_lines, advised));
        return Ok(());
    }
    if format == AdviceFormat::Json {
        let workloads = advised.transpose()?;
        let report = Report {
            rules: rules
                .iter()
                .map(|rule| RuleAdvice {
                    profile: rule.profile.name,
                    idle_timeout_s: rule.profile.idle_timeout_s,
                    l7: rule.profile.l7,
                    note: rule.profile.note,
                    destination: &rule.destination,
                    advice: risk::advise(rule.profile.idle_timeout_s),
                })
                .collect(),
            learned,
            sockets_at_risk: at_risk,
            workloads,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for rule in rules {
        print_rule(rule);
    }
    for p in learned.iter().flatten() {
        print_path(p);
    }
    for row in idle_closes {
        print_idle_close(row);
    }
    match (&sockets, at_risk) {
        (Err(e), _) => println!("\n# no socket list: {e:#}"),
        (_, Some(rows)) if rows.is_empty() => {
            println!("\n# no established socket would still be at risk")
        }
        (_, Some(rows)) => {
            println!(
                "\n# sockets still at risk after these sysctls (keepalive off, or a per-socket idle too long):"
            );
            for r in rows {
                println!("{}", table::line(&r));
            }
        }
        _ => {}
    }
    match advised {
        Some(Ok(w)) => print!("{}", workloads::text(&w)),
        Some(Err(e)) => println!("\n# no workload advice: {e:#}"),
        None => {}
    }
    Ok(())
}

fn print_rule(rule: &Rule) {
    let p = rule.profile;
    let a = risk::advise(p.idle_timeout_s);
    println!(
        "# {} — idle timeout {} s{}: {}",
        p.name,
        p.idle_timeout_s,
        dest_text(rule),
        p.note
    );
    if p.l7 {
        println!("# An L7 proxy ignores TCP keepalive (no payload): send application-level pings,");
        println!(
            "# or set HTTP keep-alive / pool idle timeouts below {} s.",
            p.idle_timeout_s
        );
        return;
    }
    println!("net.ipv4.tcp_keepalive_time = {}", a.time_s);
    println!("net.ipv4.tcp_keepalive_intvl = {}", a.intvl_s);
    println!("net.ipv4.tcp_keepalive_probes = {}", a.probes);
    println!(
        "# a dead peer is detected after {} s (time + intvl × probes)",
        a.detection_s
    );
    println!("# sockets also need SO_KEEPALIVE; per-socket TCP_KEEPIDLE overrides the sysctl.");
}

/// The advice for a path with a fatal idle gap; None without one.
fn path_advice(row: &PathRow) -> Option<PathAdvice<'_>> {
    let fatal_s = row.fatal.as_ref()?.idle_s;
    let survived_s = row.survived.as_ref().map(|g| g.idle_s);
    let l7 = !row.consistent_with.is_empty()
        && row
            .consistent_with
            .iter()
            .all(|name| PROFILES.iter().any(|p| p.name == name && p.l7));
    Some(PathAdvice {
        path: &row.path,
        survived_s,
        fatal_s,
        consistent_with: &row.consistent_with,
        l7,
        advice: risk::advise_learned(survived_s, fatal_s),
    })
}

/// A destination whose servers close idle connections: the pools that
/// reach it must evict idle ones sooner; probes do not help.
fn print_idle_close(row: &PathRow) {
    let Some(c) = &row.idle_close else { return };
    println!(
        "\n# path {} — its servers close connections idle for {:.1}-{:.1} s ({} seen): a pool that keeps idle connections longer reuses closed ones; keepalive probes do not help (servers count application data)",
        row.path, c.min_s, c.max_s, c.count
    );
}

fn print_path(p: &PathAdvice<'_>) {
    let survived = p.survived_s.map_or_else(
        || "no idle gap seen survived".into(),
        |s| format!("survived {s} s idle"),
    );
    let fits = if p.consistent_with.is_empty() {
        "no known profile".to_string()
    } else {
        p.consistent_with.join(", ")
    };
    println!(
        "\n# path {} — learned: {survived}, reset or blackholed after {} s idle (fits {fits})",
        p.path, p.fatal_s
    );
    if p.l7 {
        println!(
            "# A layer-7 proxy ignores TCP keepalive (no payload): send application-level pings"
        );
        println!(
            "# more often than every {} s, or raise the proxy's idle timeout.",
            p.advice.time_s
        );
        return;
    }
    let a = p.advice;
    println!("net.ipv4.tcp_keepalive_time = {}", a.time_s);
    println!("net.ipv4.tcp_keepalive_intvl = {}", a.intvl_s);
    println!("net.ipv4.tcp_keepalive_probes = {}", a.probes);
    println!("# in the namespaces of this path's clients; the sockets also need SO_KEEPALIVE.");
}

/// A rule's sysctl advice as a Markdown list item.
fn markdown_rule(rule: &Rule) -> String {
    let p = rule.profile;
    if p.l7 {
        return format!(
            "- `{rule}` ({} s, layer 7): application-level pings or HTTP keep-alive below {} s; TCP keepalive does not count",
            p.idle_timeout_s, p.idle_timeout_s
        );
    }
    let a = risk::advise(p.idle_timeout_s);
    format!(
        "- `{rule}` ({} s): `net.ipv4.tcp_keepalive_time = {}`, `net.ipv4.tcp_keepalive_intvl = {}`, `net.ipv4.tcp_keepalive_probes = {}` (a dead peer found after {} s)",
        p.idle_timeout_s, a.time_s, a.intvl_s, a.probes, a.detection_s
    )
}

fn dest_text(rule: &Rule) -> String {
    match &rule.destination {
        None => String::new(),
        Some(d) => {
            let net = d
                .net
                .map(|(a, l)| format!(" to {a}/{l}"))
                .unwrap_or_default();
            let port = d.port.map(|p| format!(" port {p}")).unwrap_or_default();
            format!("{net}{port}")
        }
    }
}

/// After applying the advice, a socket stays at risk when keepalive is off,
/// or when its own TCP_KEEPIDLE is at or past the timeout.
fn still_at_risk(r: &SocketRow, rules: &[Rule]) -> bool {
    let Some(remote) = r.remote else {
        return false;
    };
    let idle = r.keepalive.as_ref().filter(|k| k.enabled).map(|k| {
        if k.idle_from_socket() {
            k.idle_s
        } else {
            // The sysctl will be changed to the advice: not at risk by idle.
            0.0
        }
    });
    risk::assess(rules, remote.ip(), remote.port(), idle).is_some()
}
