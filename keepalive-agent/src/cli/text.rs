//! Records as people read them: one line each (`--json`: the JSON line).

use std::{fmt::Write as _, io::Write};

use keepalive_api::{Keepalive, Record};

use super::escape::printable;

pub fn write(out: &mut (impl Write + ?Sized), record: &Record, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, record)?;
        return writeln!(out);
    }
    writeln!(out, "{}", line(record))
}

/// A number as the JSON shows it (`1.0`, not `1`), so text and JSON agree.
pub fn num(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

/// `idle/intvl/cnt` of a socket's keepalive, `*` after a value set on the
/// socket (as in the `sockets` table).
pub fn keepalive_triplet(k: &Keepalive, mark_socket: bool) -> String {
    let mark = |s| {
        if mark_socket && s == keepalive_api::Source::Socket {
            "*"
        } else {
            ""
        }
    };
    format!(
        "{}s{}/{}s{}/{}{}",
        num(k.idle_s),
        mark(k.idle_source),
        num(k.interval_s),
        mark(k.interval_source),
        k.count,
        mark(k.count_source)
    )
}

/// A name of another party's, as the line shows it (see [`printable`]).
fn shown(name: &str) -> String {
    printable(name).into_owned()
}

/// `probe_sent 127.0.0.1:40000 -> 127.0.0.1:5000 netns=… pid=… comm=… probes_out=1`
pub fn line(r: &Record) -> String {
    let mut line = format!("{:<18}", r.event.as_str());
    if let (Some(l), Some(rem)) = (r.local, r.remote) {
        let _ = write!(line, " {l} -> {rem}");
    }
    let mut field = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = write!(line, " {name}={v}");
        }
    };
    field("state", r.state.map(|s| s.to_string()));
    field("netns", r.netns.map(|v| v.to_string()));
    field("pid", r.pid.map(|v| v.to_string()));
    field("comm", r.comm.as_deref().map(shown));
    // kubectl's namespace/name.
    let pod = match (&r.namespace, &r.pod) {
        (Some(ns), Some(pod)) => Some(format!("{ns}/{pod}")),
        _ => None,
    };
    field("pod", pod.as_deref().map(shown));
    field("container", r.container.as_deref().map(shown));
    field("service", r.service.as_deref().map(shown));
    field("error", r.error.clone());
    field("cause", r.cause.map(|c| c.to_string()));
    field("class", r.class.map(|c| c.to_string()));
    field("trigger", r.trigger.map(|t| t.to_string()));
    field("path", r.path.clone());
    field("probes_out", r.probes_out.map(|v| v.to_string()));
    field("probes", r.probes.map(|v| v.to_string()));
    field("acks", r.acks.map(|v| v.to_string()));
    if let Some(v) = r.rtt_us {
        let _ = write!(line, " rtt={v:.0}us");
    }
    if let Some(v) = r.idle_s {
        let _ = write!(line, " idle={v:.1}s");
    }
    if let Some(v) = r.idle_before_s {
        let _ = write!(line, " idle_before={v:.1}s");
    }
    if let Some(v) = r.since_send_s {
        let _ = write!(line, " since_send={v:.3}s");
    }
    if let Some(v) = r.closed_for_s {
        let _ = write!(line, " closed_for={v:.3}s");
    }
    if let Some(v) = r.keepalive_probe {
        let _ = write!(line, " keepalive_probe={v}");
    }
    if let Some(k) = &r.keepalive {
        let _ = write!(line, " keepalive={}", keepalive_triplet(k, false));
    }
    line
}

#[cfg(test)]
mod tests {
    use keepalive_api::{RecordKind, Source, TcpState};

    use super::*;

    #[test]
    fn a_probe_reads_as_one_line() {
        let mut r = Record::new(RecordKind::ProbeSent, 0.0, 1);
        r.local = Some("127.0.0.1:33546".parse().unwrap());
        r.remote = Some("127.0.0.1:51367".parse().unwrap());
        r.state = Some(TcpState::Established);
        r.pid = Some(13648);
        r.pod = Some("web-0".into());
        r.namespace = Some("shop".into());
        r.container = Some("app".into());
        r.probes_out = Some(1);
        r.keepalive = Some(Keepalive {
            enabled: true,
            idle_s: 1.0,
            idle_source: Source::Socket,
            interval_s: 1.0,
            interval_source: Source::Socket,
            count: 3,
            count_source: Source::Socket,
            detection_s: 4.0,
        });
        assert_eq!(
            line(&r),
            "probe_sent         127.0.0.1:33546 -> 127.0.0.1:51367 state=ESTAB pid=13648 pod=shop/web-0 container=app probes_out=1 keepalive=1.0s/1.0s/3"
        );
    }

    /// A name that would forge a line or recolour the terminal is one
    /// escaped field.
    #[test]
    fn another_partys_names_cannot_forge_lines() {
        let mut r = Record::new(RecordKind::SocketClosed, 0.0, 1);
        r.comm = Some("x\nkeepalive_timeout  1.2.3.4:1".into());
        r.service = Some("\u{1b}]0;pwned\u{7}.service".into());
        let l = line(&r);
        assert_eq!(l.lines().count(), 1, "{l}");
        assert!(!l.contains('\u{1b}'), "{l}");
        assert!(l.contains("comm=x\\nkeepalive_timeout"), "{l}");
    }
}
