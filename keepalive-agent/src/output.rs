//! Printing records: JSON lines (`--json`) or one readable line each.

use std::io::Write;

use crate::events::Record;

pub fn write(out: &mut impl Write, record: &Record, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, record)?;
        return writeln!(out);
    }
    writeln!(out, "{}", text(record))
}

/// `probe_sent 127.0.0.1:40000 -> 127.0.0.1:5000 netns=… pid=… comm=… probes_out=1`
pub fn text(r: &Record) -> String {
    let mut line = format!("{:<17}", r.event);
    if let (Some(l), Some(rem)) = (&r.local, &r.remote) {
        line.push_str(&format!(" {l} -> {rem}"));
    }
    let mut field = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            line.push_str(&format!(" {name}={v}"));
        }
    };
    field("state", r.state.map(str::to_string));
    field("netns", r.netns.map(|v| v.to_string()));
    field("pid", r.pid.map(|v| v.to_string()));
    field("comm", r.comm.clone());
    field("error", r.error.clone());
    field("cause", r.cause.map(str::to_string));
    field("probes_out", r.probes_out.map(|v| v.to_string()));
    field("probes", r.probes.map(|v| v.to_string()));
    field("acks", r.acks.map(|v| v.to_string()));
    field("rtt", r.rtt_us.map(|v| format!("{v:.0}us")));
    field("idle", r.idle_s.map(|v| format!("{v:.1}s")));
    field("keepalive_probe", r.keepalive_probe.map(|v| v.to_string()));
    if let Some(k) = &r.keepalive {
        field(
            "keepalive",
            Some(format!(
                "{}/{}/{}",
                trim(k.idle_s),
                trim(k.interval_s),
                k.count
            )),
        );
    }
    line
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}s")
    } else {
        format!("{v:.2}s")
    }
}
