//! Query filters of `/sockets` and `/events` (and the CLI that calls them):
//! parsed strictly, so a typo is a 400 with the reason, never an empty
//! answer that looks like "no sockets".

use std::collections::HashMap;

use crate::events::Record;

/// Names `/events?event=` accepts.
pub const EVENT_NAMES: &[&str] = &[
    "keepalive_timer",
    "probe_sent",
    "wire_probe",
    "probe_ack",
    "keepalive_timeout",
    "connection_timeout",
    "socket_error",
    "state_change",
    "socket_closed",
    "sysctl_changed",
];

/// TCP states as `ss` names them.
pub const STATE_NAMES: &[&str] = &[
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
    "NEW-SYN-RECV",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port.
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub netns: Option<u32>,
    pub state: Option<String>,
    pub event: Option<String>,
    /// Only sockets at risk.
    pub at_risk: bool,
}

impl Filter {
    /// Parses query parameters; `allowed` names the ones this endpoint takes.
    pub fn parse(params: &HashMap<String, String>, allowed: &[&str]) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (key, value) in params {
            if !allowed.contains(&key.as_str()) {
                return Err(format!(
                    "unknown filter {key:?}; this endpoint takes {}",
                    allowed.join(", ")
                ));
            }
            let num = |what: &str| format!("{key}={value:?} is not a valid {what}");
            match key.as_str() {
                "port" => f.port = Some(value.parse().map_err(|_| num("port"))?),
                "pid" => f.pid = Some(value.parse().map_err(|_| num("pid"))?),
                "netns" => f.netns = Some(value.parse().map_err(|_| num("netns inode"))?),
                "state" => {
                    let up = value.to_ascii_uppercase();
                    if !STATE_NAMES.contains(&up.as_str()) {
                        return Err(format!(
                            "state={value:?} is not one of {}",
                            STATE_NAMES.join(", ")
                        ));
                    }
                    f.state = Some(up);
                }
                "event" => {
                    if !EVENT_NAMES.contains(&value.as_str()) {
                        return Err(format!(
                            "event={value:?} is not one of {}",
                            EVENT_NAMES.join(", ")
                        ));
                    }
                    f.event = Some(value.clone());
                }
                "risk" => {
                    f.at_risk = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("risk={value:?} must be true or false")),
                    }
                }
                _ => unreachable!("checked against allowed"),
            }
        }
        Ok(f)
    }

    pub fn matches_record(&self, r: &Record) -> bool {
        self.event.as_deref().is_none_or(|e| r.event == e)
            && self.pid.is_none_or(|p| r.pid == Some(p))
            && self.netns.is_none_or(|n| r.netns == Some(n))
            && self.port.is_none_or(|p| {
                [r.local, r.remote]
                    .into_iter()
                    .flatten()
                    .any(|a| a.port() == p)
            })
    }
}

/// The port of an endpoint in `ss` notation.
pub fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_rejects() {
        let all = ["port", "pid", "netns", "state", "event", "risk"];
        let f = Filter::parse(&params(&[("port", "22"), ("state", "estab")]), &all).unwrap();
        assert_eq!(f.port, Some(22));
        assert_eq!(f.state.as_deref(), Some("ESTAB"));
        for bad in [
            ("port", "99999"),
            ("pid", "-1"),
            ("state", "open"),
            ("event", "probe"),
            ("risk", "yes"),
        ] {
            assert!(Filter::parse(&params(&[bad]), &all).is_err(), "{bad:?}");
        }
        assert!(Filter::parse(&params(&[("color", "red")]), &all).is_err());
        assert!(Filter::parse(&params(&[("event", "probe_sent")]), &["port"]).is_err());
    }

    #[test]
    fn matches_records_by_port() {
        let r = Record {
            event: "probe_sent",
            local: Some("[::1]:5000".parse().unwrap()),
            remote: Some("[::1]:22".parse().unwrap()),
            ..Default::default()
        };
        let f = Filter {
            port: Some(22),
            ..Default::default()
        };
        assert!(f.matches_record(&r));
        let f = Filter {
            port: Some(23),
            ..Default::default()
        };
        assert!(!f.matches_record(&r));
        let f = Filter {
            event: Some("probe_ack".into()),
            ..Default::default()
        };
        assert!(!f.matches_record(&r));
    }
}
