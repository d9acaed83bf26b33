//! Printing records: JSON lines (`--json`) or one readable line each.

use std::io::Write;

use serde_json::Value;

use crate::events::Record;

pub fn write(out: &mut (impl Write + ?Sized), record: &Record, json: bool) -> std::io::Result<()> {
    let value = serde_json::to_value(record)?;
    if json {
        serde_json::to_writer(&mut *out, &value)?;
        return writeln!(out);
    }
    writeln!(out, "{}", text(&value))
}

/// `probe_sent 127.0.0.1:40000 -> 127.0.0.1:5000 netns=… pid=… comm=… probes_out=1`
pub fn text(r: &Value) -> String {
    let mut line = format!("{:<18}", r["event"].as_str().unwrap_or("?"));
    if let (Some(l), Some(rem)) = (r["local"].as_str(), r["remote"].as_str()) {
        line.push_str(&format!(" {l} -> {rem}"));
    }
    for name in [
        "state",
        "netns",
        "pid",
        "comm",
        "error",
        "cause",
        "probes_out",
        "probes",
        "acks",
    ] {
        match &r[name] {
            Value::Null => {}
            Value::String(s) => line.push_str(&format!(" {name}={s}")),
            v => line.push_str(&format!(" {name}={v}")),
        }
    }
    if let Some(v) = r["rtt_us"].as_f64() {
        line.push_str(&format!(" rtt={v:.0}us"));
    }
    if let Some(v) = r["idle_s"].as_f64() {
        line.push_str(&format!(" idle={v:.1}s"));
    }
    if let Some(v) = r["keepalive_probe"].as_bool() {
        line.push_str(&format!(" keepalive_probe={v}"));
    }
    if let Value::Object(k) = &r["keepalive"] {
        line.push_str(&format!(
            " keepalive={}s/{}s/{}",
            k["idle_s"], k["interval_s"], k["count"]
        ));
    }
    line
}
