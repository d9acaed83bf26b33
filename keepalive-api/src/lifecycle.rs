//! The first and last lines on stdout, and what they carry.

use serde::{Deserialize, Serialize};

pub use keepalive_common::KernelCounters;

use crate::{
    record::Record,
    vocab::{Hook, HookMode},
};

/// One hook's state, for logs, `/metrics`, `/healthz` and `ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub hook: Hook,
    pub mode: HookMode,
    pub live: bool,
    /// Why a better mode was not used, or why the hook is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl HookStatus {
    /// Down for `/healthz`: not attached, and neither off by choice
    /// (`none`) nor replaced by the TC view (`wire`). A restart cannot
    /// bring back a hook the kernel refuses, so a replaced hook must not
    /// fail readiness; `keepalive_agent_hook_up` still reads 0 for it.
    pub fn is_down(&self) -> bool {
        !self.live
            && !matches!(
                self.mode,
                HookMode::None | HookMode::Wire | HookMode::Inventory
            )
    }
}

/// The first line on stdout once every hook is attached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub hooks: Vec<HookStatus>,
    /// Interfaces with TC classifiers, `netns-inode/name`.
    pub interfaces: Vec<String>,
    /// The HTTP API's address (useful with `--listen …:0`).
    pub listen: String,
    /// The loopback listener of the per-socket endpoints (`--local-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_listen: Option<String>,
    /// How `listen` is spoken to.
    #[serde(default)]
    pub scheme: Scheme,
    /// Sockets in the table after the first inventory.
    pub sockets: usize,
    pub hz: u32,
    pub startup_ms: u64,
}

/// `listen`'s protocol: TLS when `--web.config.file` gives a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Ready {
    pub fn hook(&self, hook: Hook) -> Option<&HookStatus> {
        self.hooks.iter().find(|h| h.hook == hook)
    }
}

/// The last line on stdout: the kernel's exact counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stopped {
    pub counters: KernelCounters,
    pub sockets_refused: u64,
}

/// `ready` and `stopped`, tagged by `event` as records are.
#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Lifecycle {
    Ready(Ready),
    Stopped(Stopped),
}

/// Any line the agent prints on stdout with `--json`.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Ready(Ready),
    Record(Box<Record>),
    Stopped(Stopped),
}

/// A line that is not one of the agent's.
#[derive(Debug)]
pub struct LineError {
    pub line: String,
    pub error: serde_json::Error,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.line)
    }
}

impl std::error::Error for LineError {}

impl Line {
    pub fn parse(line: &str) -> Result<Line, LineError> {
        let wrap = |error| LineError {
            line: line.to_string(),
            error,
        };
        let value: serde_json::Value = serde_json::from_str(line).map_err(wrap)?;
        match value.get("event").and_then(|e| e.as_str()) {
            Some("ready" | "stopped") => Ok(match serde_json::from_value(value).map_err(wrap)? {
                Lifecycle::Ready(r) => Line::Ready(r),
                Lifecycle::Stopped(s) => Line::Stopped(s),
            }),
            _ => serde_json::from_value(value)
                .map(|r| Line::Record(Box::new(r)))
                .map_err(wrap),
        }
    }

    /// The JSON line of `ready`.
    pub fn ready_json(ready: &Ready) -> serde_json::Result<String> {
        serde_json::to_string(&LifecycleRef::Ready(ready))
    }

    /// The JSON line of `stopped`.
    pub fn stopped_json(stopped: &Stopped) -> serde_json::Result<String> {
        serde_json::to_string(&LifecycleRef::Stopped(stopped))
    }
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LifecycleRef<'a> {
    Ready(&'a Ready),
    Stopped(&'a Stopped),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::RecordKind;

    #[test]
    fn lines_round_trip() {
        let ready = Ready {
            hooks: vec![HookStatus {
                hook: Hook::Tc,
                mode: HookMode::Tcx,
                live: true,
                note: None,
            }],
            local_listen: None,
            scheme: Scheme::Http,
            interfaces: vec![],
            listen: "127.0.0.1:9977".into(),
            sockets: 3,
            hz: 250,
            startup_ms: 12,
        };
        let json = Line::ready_json(&ready).unwrap();
        assert!(json.starts_with(r#"{"event":"ready","hooks":[{"hook":"tc","mode":"tcx""#));
        assert_eq!(Line::parse(&json).unwrap(), Line::Ready(ready));
        let stopped = Stopped {
            counters: KernelCounters::default(),
            sockets_refused: 0,
        };
        let json = Line::stopped_json(&stopped).unwrap();
        assert_eq!(Line::parse(&json).unwrap(), Line::Stopped(stopped));
        let record = Record::new(RecordKind::ProbeSent, 1.5, 9);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(json, r#"{"time":1.5,"event":"probe_sent","cookie":9}"#);
        assert_eq!(Line::parse(&json).unwrap(), Line::Record(Box::new(record)));
        assert!(Line::parse(r#"{"event":"probe"}"#).is_err());
    }
}
