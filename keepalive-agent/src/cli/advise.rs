//! `advise`: the sysctls for each path idle timeout, and the sockets that
//! would still be at risk after them.

use keepalive_api::SocketRow;
use serde::Serialize;

use super::{args::AdviseArgs, client::socket_rows, table};
use crate::model::risk::{self, Advice, Destination, Rule};

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

#[derive(Serialize)]
struct Report<'a> {
    rules: Vec<RuleAdvice<'a>>,
    /// None when the agent could not be asked.
    sockets_at_risk: Option<Vec<SocketRow>>,
}

pub fn advise(args: AdviseArgs) -> anyhow::Result<()> {
    let rules = &args.idle_timeouts;
    // The agent is optional here: without it, the sysctl advice alone.
    let sockets = socket_rows(&args.agent.agent, &[("state", "ESTAB".into())]);
    let at_risk: Option<Vec<SocketRow>> = sockets.as_ref().ok().map(|rows| {
        rows.iter()
            .filter(|r| still_at_risk(r, rules))
            .cloned()
            .collect()
    });
    if args.json {
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
            sockets_at_risk: at_risk,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for rule in rules {
        print_rule(rule);
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
