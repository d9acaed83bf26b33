//! The CLI's side of the HTTP API: `sockets`, `advise` and `events` ask the
//! running agent, and print a table (like `ss`) or JSON.

use std::io::{BufRead as _, BufReader, Write as _};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    cli::{AdviseArgs, EventsArgs, SocketsArgs},
    risk::{self, Rule},
};

fn get(
    agent: &str,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
    let url = format!("{}{path}", agent.trim_end_matches('/'));
    let mut req = ureq::get(&url).config().http_status_as_error(false).build();
    for (k, v) in query {
        req = req.query(*k, v);
    }
    let resp = req.call().with_context(|| {
        format!("asking the agent at {agent} (is `keepalive-agent run` running?)")
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.into_body().read_to_string().unwrap_or_default();
        bail!("agent answered {status}: {}", body.trim());
    }
    Ok(resp)
}

fn sockets_json(agent: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<Value>> {
    let resp = get(agent, "/sockets", query)?;
    let body = resp
        .into_body()
        .read_to_string()
        .context("reading /sockets")?;
    serde_json::from_str(&body).context("parsing /sockets")
}

pub fn sockets(args: SocketsArgs) -> anyhow::Result<()> {
    let mut q = args.filter.query();
    if let Some(s) = &args.state {
        q.push(("state", s.clone()));
    }
    if args.at_risk {
        q.push(("risk", "true".into()));
    }
    let rows = sockets_json(&args.agent.agent, &q)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<11} {:<42} {:<42} {:<11} {:<22} {:<24} {:>8} {:>7} Risk",
        "State",
        "Local Address:Port",
        "Peer Address:Port",
        "Netns",
        "Process",
        "Keepalive idle/intvl/cnt",
        "Idle",
        "Probes"
    )?;
    for r in &rows {
        writeln!(out, "{}", socket_line(r))?;
    }
    Ok(())
}

fn socket_line(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let process = match &r["owner"] {
        Value::Object(o) => format!("{}({})", o["comm"].as_str().unwrap_or("?"), o["pid"]),
        _ => "-".into(),
    };
    let keepalive = match &r["keepalive"] {
        Value::Object(k) if k["enabled"] == true => {
            let src = |f: &str| if k[f] == "socket" { "*" } else { "" };
            format!(
                "{}s{}/{}s{}/{}{}",
                k["idle_s"],
                src("idle_source"),
                k["interval_s"],
                src("interval_source"),
                k["count"],
                src("count_source")
            )
        }
        Value::Object(_) => "off".into(),
        _ => "-".into(),
    };
    let idle = r["idle_s"]
        .as_f64()
        .map(|v| format!("{v:.0}s"))
        .unwrap_or("-".into());
    let risk = match &r["risk"] {
        Value::Object(k) => format!(
            "{}:{}",
            k["profile"].as_str().unwrap_or("?"),
            k["reason"].as_str().unwrap_or("?")
        ),
        _ => String::new(),
    };
    format!(
        "{:<11} {:<42} {:<42} {:<11} {:<22} {:<24} {:>8} {:>7} {}",
        s(&r["state"]),
        s(&r["local"]),
        s(&r["remote"]),
        r["netns"],
        process,
        keepalive,
        idle,
        r["probes"],
        risk
    )
}

pub fn advise(args: AdviseArgs) -> anyhow::Result<()> {
    let rules = &args.idle_timeouts;
    // The agent is optional here: without it, the sysctl advice alone.
    let sockets = sockets_json(&args.agent.agent, &[("state", "ESTAB".into())]);
    let mut report = Vec::new();
    for rule in rules {
        let p = rule.profile;
        let a = risk::advise(p.idle_timeout_s);
        report.push(serde_json::json!({
            "profile": p.name,
            "idle_timeout_s": p.idle_timeout_s,
            "l7": p.l7,
            "note": p.note,
            "destination": rule.destination,
            "advice": a,
        }));
    }
    let at_risk: Option<Vec<Value>> = sockets.as_ref().ok().map(|rows| {
        rows.iter()
            .filter(|r| still_at_risk(r, rules))
            .cloned()
            .collect()
    });
    if args.json {
        let v = serde_json::json!({ "rules": report, "sockets_at_risk": at_risk });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for rule in rules {
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
            println!(
                "# An L7 proxy ignores TCP keepalive (no payload): send application-level pings,"
            );
            println!(
                "# or set HTTP keep-alive / pool idle timeouts below {} s.",
                p.idle_timeout_s
            );
            continue;
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
                println!("{}", socket_line(&r));
            }
        }
        _ => {}
    }
    Ok(())
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
fn still_at_risk(r: &Value, rules: &[Rule]) -> bool {
    let Some(remote) = r["remote"].as_str() else {
        return false;
    };
    let Some((ip, port)) = remote.rsplit_once(':') else {
        return false;
    };
    let Ok(ip) = ip.trim_matches(['[', ']']).parse() else {
        return false;
    };
    let Ok(port) = port.parse() else { return false };
    let k = &r["keepalive"];
    let idle = if k["enabled"] == true {
        if k["idle_source"] == "socket" {
            k["idle_s"].as_f64()
        } else {
            // The sysctl will be changed to the advice: not at risk by idle.
            Some(0.0)
        }
    } else {
        None
    };
    risk::assess(rules, ip, port, idle).is_some()
}

pub fn events(args: EventsArgs) -> anyhow::Result<()> {
    let mut q = args.filter.query();
    if let Some(e) = &args.event {
        q.push(("event", e.clone()));
    }
    let resp = get(&args.agent.agent, "/events", &q)?;
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut out = std::io::stdout().lock();
    for line in reader.lines() {
        let line = line.context("reading the event stream")?;
        if args.json {
            writeln!(out, "{line}")?;
        } else {
            let v: Value =
                serde_json::from_str(&line).context("the agent sent a line that is not JSON")?;
            writeln!(out, "{}", crate::output::text(&v))?;
        }
        out.flush()?;
    }
    bail!("the agent closed the event stream")
}
