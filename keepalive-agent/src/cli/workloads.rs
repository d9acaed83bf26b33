//! The workloads' advice (`/advice`) as `advise` prints it: readable text,
//! or Markdown to paste into a ticket.

use std::fmt::Write as _;

use keepalive_api::{Keepalive, Source};

use super::escape::printable;

use crate::model::{
    knowledge::Recommends,
    workload::{Fix, FixKind, IdleCloseFix, IdleCloseFixKind, WorkloadAdvice, apply_sysctls},
};

/// `idle 400 s (socket), interval 60 s (socket), count 5 (socket)`.
fn settings_text(k: Option<&Keepalive>) -> String {
    let Some(k) = k.filter(|k| k.enabled) else {
        return "keepalive off (no SO_KEEPALIVE)".into();
    };
    let src = |s: Source| s.as_str();
    format!(
        "idle {} s ({}), interval {} s ({}), count {} ({})",
        k.idle_s,
        src(k.idle_source),
        k.interval_s,
        src(k.interval_source),
        k.count,
        src(k.count_source)
    )
}

/// `3 × idle 400 s (socket), …`: each distinct setting and its count.
fn settings(w: &WorkloadAdvice) -> impl Iterator<Item = String> + '_ {
    w.settings.iter().map(|s| {
        format!(
            "{} × {}",
            s.connections,
            settings_text(s.keepalive.as_ref())
        )
    })
}

fn what(fix: &Fix) -> &'static str {
    match fix.kind {
        FixKind::SwitchOn => "switch keepalive on",
        FixKind::SocketTiming => "its own idle time is too long for the path: change it",
        FixKind::SysctlTiming => "the sysctls' idle time is too long for the path",
        FixKind::ApplicationPing => "a layer-7 proxy ignores TCP keepalive: send payload",
    }
}

fn recommends(r: Recommends) -> &'static str {
    match r {
        Recommends::Socket => "its documentation recommends setting it in the program",
        Recommends::Sysctl => "its documentation recommends leaving the timing to the sysctls",
        Recommends::None => "its documentation states no preference",
    }
}

fn headline(w: &WorkloadAdvice) -> String {
    let version = w
        .version
        .as_deref()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    let pids: Vec<String> = w.pids.iter().map(u32::to_string).collect();
    let pids = match pids.len() {
        0 => String::new(),
        1 => format!(", pid {}", pids[0]),
        _ => format!(", pids {}", pids.join(",")),
    };
    format!(
        "{} — {}{version} [{} by {}]{pids}: {}, {} at risk",
        printable(&w.workload.label()),
        w.title,
        w.program,
        w.evidence,
        connections(w.connections),
        w.at_risk
    )
}

fn connections(n: usize) -> String {
    match n {
        1 => "1 connection".into(),
        n => format!("{n} connections"),
    }
}

fn destinations(w: &WorkloadAdvice) -> String {
    let more = match w.more_destinations {
        0 => String::new(),
        n => format!(" and {n} connections elsewhere"),
    };
    format!("{}{more}", w.destinations.join(", "))
}

/// Each fix's lines: what to write, the alternative, the sysctls.
fn fix_lines(fix: &Fix) -> Vec<String> {
    let mut out = fix.change.clone();
    if let Some(alt) = &fix.alternative {
        out.push(format!(
            "# or remove the program's own timing so the sysctls apply: {alt}"
        ));
    }
    if let Some(scope) = &fix.sysctl_scope {
        match fix.kind {
            FixKind::SwitchOn => out.push("# it then follows the sysctls:".into()),
            FixKind::SocketTiming => out.push("# with its own timing removed, the sysctls:".into()),
            FixKind::SysctlTiming | FixKind::ApplicationPing => {}
        }
        out.extend(apply_sysctls(scope, &fix.sysctls));
    }
    out
}

fn fix_heading(fix: &Fix) -> String {
    let v = fix.values;
    format!(
        "{}: {} — against {} ({} s, {}); advised idle {} s, interval {} s, count {}",
        connections(fix.connections),
        what(fix),
        fix.timeout.profile,
        fix.timeout.idle_timeout_s,
        fix.timeout.basis,
        v.idle_s,
        v.intvl_s,
        v.count
    )
}

fn requests(n: u64) -> String {
    match n {
        1 => "1 request".into(),
        n => format!("{n} requests"),
    }
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "?".into(), |s| format!("{s:.1} s"))
}

/// `1 request to 192.0.2.2:6379 lost: its server closes connections idle
/// for 2.7 s, and the pool reused one idle 5.0 s; evict idle connections
/// after 2 s`.
fn idle_close_heading(f: &IdleCloseFix) -> String {
    match f.kind {
        IdleCloseFixKind::PoolIdle => format!(
            "{} to {} reused after the server closed it (stale reuse): the server closes connections idle for {}, the pool reused one idle {}; evict idle connections after {} s",
            requests(f.requests),
            f.peer,
            seconds(f.server_idle_close_s),
            seconds(f.client_reused_after_s),
            f.advised_s
        ),
        IdleCloseFixKind::ServerIdle => format!(
            "{} on {} reset as data after close: this server closed connections idle for {}, its clients reused them idle {}; keep idle connections {} s",
            requests(f.requests),
            f.peer,
            seconds(f.server_idle_close_s),
            seconds(f.client_reused_after_s),
            f.advised_s
        ),
    }
}

pub fn text(workloads: &[WorkloadAdvice]) -> String {
    let mut out = String::new();
    if workloads.is_empty() {
        out.push_str("\n# no established connection with a known owner\n");
        return out;
    }
    out.push_str("\n# workloads\n");
    for w in workloads {
        let _ = writeln!(out, "\n## {}", headline(w));
        if !w.destinations.is_empty() {
            let _ = writeln!(out, "#  to {}", destinations(w));
        }
        let _ = writeln!(out, "#  unconfigured: {}", w.default);
        for s in settings(w) {
            let _ = writeln!(out, "#  {s}");
        }
        for fix in &w.fixes {
            let _ = writeln!(out, "#  {}", fix_heading(fix));
            if let Some(why) = &fix.why {
                let _ = writeln!(out, "#  why: {why}");
            }
            for line in fix_lines(fix) {
                let _ = writeln!(out, "{line}");
            }
            if fix.kind == FixKind::SocketTiming {
                let _ = writeln!(out, "#  {}", recommends(fix.recommends));
            }
            if let Some(note) = &fix.note {
                let _ = writeln!(out, "#  note: {note}");
            }
        }
        for fix in &w.idle_close {
            let _ = writeln!(out, "#  {}", idle_close_heading(fix));
            for line in &fix.change {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "#  note: {}", fix.note);
        }
        let fixed = !w.fixes.is_empty() || !w.idle_close.is_empty();
        if let Some(doc) = w.docs.first().filter(|_| fixed) {
            let _ = writeln!(out, "#  see {doc}");
        }
    }
    out
}

/// Markdown for a ticket: the path timeouts' sysctls, a table of the
/// workloads, then each fix; the agent's error when it could not be asked.
pub fn markdown(rules: &[String], workloads: Result<Vec<WorkloadAdvice>, String>) -> String {
    let mut out = String::from("## TCP keepalive advice\n\n");
    if !rules.is_empty() {
        out.push_str("Path idle timeouts:\n\n");
        for r in rules {
            let _ = writeln!(out, "{r}");
        }
        out.push('\n');
    }
    let workloads = match workloads {
        Ok(w) => w,
        Err(e) => {
            let _ = writeln!(out, "No workload advice: {e}");
            return out;
        }
    };
    if workloads.is_empty() {
        out.push_str("No established connection with a known owner.\n");
        return out;
    }
    out.push_str("| workload | program | connections | at risk | destinations |\n");
    out.push_str("|---|---|---:|---:|---|\n");
    for w in &workloads {
        let _ = writeln!(
            out,
            "| {} | {} (`{}`) | {} | {} | {} |",
            cell(&w.workload.label()),
            cell(&w.title),
            w.program,
            w.connections,
            w.at_risk,
            cell(&destinations(w))
        );
    }
    for w in workloads
        .iter()
        .filter(|w| !w.fixes.is_empty() || !w.idle_close.is_empty())
    {
        let _ = writeln!(out, "\n### {}\n", cell(&headline(w)));
        for s in settings(w) {
            let _ = writeln!(out, "- {s}");
        }
        for fix in &w.fixes {
            let _ = writeln!(out, "\n**{}**\n", cell(&fix_heading(fix)));
            if let Some(why) = &fix.why {
                let _ = writeln!(out, "Why: {why}\n");
            }
            let _ = writeln!(out, "```\n{}\n```", fix_lines(fix).join("\n"));
            if fix.kind == FixKind::SocketTiming {
                let _ = writeln!(out, "\n{}.", capitalised(recommends(fix.recommends)));
            }
            if let Some(note) = &fix.note {
                let _ = writeln!(out, "\nNote: {note}.");
            }
        }
        for fix in &w.idle_close {
            let _ = writeln!(out, "\n**{}**\n", cell(&idle_close_heading(fix)));
            let _ = writeln!(out, "```\n{}\n```", fix.change.join("\n"));
            let _ = writeln!(out, "\nNote: {}.", fix.note);
        }
        if !w.docs.is_empty() {
            let links: Vec<String> = w.docs.iter().map(|d| format!("<{d}>")).collect();
            let _ = writeln!(out, "\nSources: {}", links.join(", "));
        }
    }
    out
}

/// A table cell or heading: no pipes, no line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
