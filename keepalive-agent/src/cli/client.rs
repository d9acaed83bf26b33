//! The CLI's side of the HTTP API: `sockets` and `events` ask the running
//! agent, and print a table (like `ss`), readable lines or JSON.

use std::io::{BufRead as _, BufReader, Write as _};

use anyhow::{Context as _, bail};
use keepalive_api::{PathRow, Record, SocketRow};

use super::{
    args::{EventsArgs, HealthArgs, PathsArgs, SocketsArgs},
    table, text,
};

pub fn get(
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

pub fn socket_rows(agent: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<SocketRow>> {
    let resp = get(agent, "/sockets", query)?;
    let body = resp
        .into_body()
        .read_to_string()
        .context("reading /sockets")?;
    serde_json::from_str(&body).context("parsing /sockets")
}

pub fn path_rows(agent: &str) -> anyhow::Result<Vec<PathRow>> {
    let body = get(agent, "/paths", &[])?
        .into_body()
        .read_to_string()
        .context("reading /paths")?;
    serde_json::from_str(&body).context("parsing /paths")
}

/// /healthz (or /livez) answered 200: the agent's own words on stdout,
/// an error (exit 1) otherwise.
pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    let path = if args.live { "/livez" } else { "/healthz" };
    let body = get(&args.agent.agent, path, &[])?
        .into_body()
        .read_to_string()
        .with_context(|| format!("reading {path}"))?;
    print!("{body}");
    Ok(())
}

pub fn paths(args: PathsArgs) -> anyhow::Result<()> {
    let rows = path_rows(&args.agent.agent)?;
    print_rows(&rows, args.json, table::PATHS_HEADER, table::path_line)
}

/// Rows as pretty JSON, or as a table under `header`.
fn print_rows<T: serde::Serialize>(
    rows: &[T],
    json: bool,
    header: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{header}")?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

pub fn sockets(args: SocketsArgs) -> anyhow::Result<()> {
    let mut q = args.filter.query();
    if let Some(s) = &args.state {
        q.push(("state", s.clone()));
    }
    if args.at_risk {
        q.push(("risk", "true".into()));
    }
    let rows = socket_rows(&args.agent.agent, &q)?;
    print_rows(&rows, args.json, table::HEADER, table::line)
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
            let r: Record = serde_json::from_str(&line)
                .with_context(|| format!("the agent sent a line that is not a record: {line}"))?;
            writeln!(out, "{}", text::line(&r))?;
        }
        out.flush()?;
    }
    bail!("the agent closed the event stream")
}
