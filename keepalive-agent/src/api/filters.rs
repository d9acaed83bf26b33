//! Query filters of `/sockets` and `/events` (and the CLI that calls them):
//! parsed strictly, so a typo is a 400 with the reason, never an empty
//! answer that looks like "no sockets".

use keepalive_api::{Record, RecordKind, SocketRow, TcpState, UnknownName};

/// A query parameter a filter endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    Port,
    Pid,
    Netns,
    State,
    Event,
    Risk,
    Namespace,
    Pod,
    Container,
}

impl Param {
    /// Every parameter (an endpoint takes a subset).
    pub const ALL: [Param; 9] = [
        Param::Port,
        Param::Pid,
        Param::Netns,
        Param::State,
        Param::Event,
        Param::Risk,
        Param::Namespace,
        Param::Pod,
        Param::Container,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Param::Port => "port",
            Param::Pid => "pid",
            Param::Netns => "netns",
            Param::State => "state",
            Param::Event => "event",
            Param::Risk => "risk",
            Param::Namespace => "namespace",
            Param::Pod => "pod",
            Param::Container => "container",
        }
    }
}

/// What `/sockets` takes.
pub const SOCKETS_PARAMS: &[Param] = &[
    Param::Port,
    Param::Pid,
    Param::Netns,
    Param::State,
    Param::Risk,
    Param::Namespace,
    Param::Pod,
    Param::Container,
];
/// What `/events` takes.
pub const EVENTS_PARAMS: &[Param] = &[
    Param::Event,
    Param::Port,
    Param::Pid,
    Param::Netns,
    Param::Namespace,
    Param::Pod,
    Param::Container,
];

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown filter {key:?}; this endpoint takes {expected}")]
    Unknown { key: String, expected: String },
    #[error("{key}={value:?} is not a valid {what}")]
    NotANumber {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("{key}={}", .name)]
    Name {
        key: &'static str,
        name: UnknownName,
    },
    #[error("risk={0:?} must be true or false")]
    NotABool(String),
    #[error("{0} given more than once; each filter takes one value")]
    Duplicate(&'static str),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local or remote port.
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub netns: Option<u32>,
    pub state: Option<TcpState>,
    pub event: Option<RecordKind>,
    /// Only sockets at risk.
    pub at_risk: bool,
    /// Kubernetes names; empty matches what is in no pod.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

/// Whether a name filter admits `have` (empty asks for none).
fn named(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_deref()
        .is_none_or(|w| have.as_deref().unwrap_or("") == w)
}

impl Filter {
    /// Parses query parameters; `allowed` names the ones this endpoint takes.
    pub fn parse<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        allowed: &[Param],
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        let mut seen: Vec<Param> = Vec::new();
        for (key, value) in params {
            let Some(param) = allowed.iter().find(|p| p.name() == key) else {
                return Err(FilterError::Unknown {
                    key: key.to_string(),
                    expected: allowed
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let key = param.name();
            if seen.contains(param) {
                return Err(FilterError::Duplicate(key));
            }
            seen.push(*param);
            let num = |what| FilterError::NotANumber {
                key,
                value: value.to_string(),
                what,
            };
            let name = |name| FilterError::Name { key, name };
            match param {
                Param::Port => f.port = Some(value.parse().map_err(|_| num("port"))?),
                Param::Pid => f.pid = Some(value.parse().map_err(|_| num("pid"))?),
                Param::Netns => f.netns = Some(value.parse().map_err(|_| num("netns inode"))?),
                Param::State => {
                    f.state = Some(value.to_ascii_uppercase().parse().map_err(name)?);
                }
                Param::Event => f.event = Some(value.parse().map_err(name)?),
                Param::Namespace => f.namespace = Some(value.to_owned()),
                Param::Pod => f.pod = Some(value.to_owned()),
                Param::Container => f.container = Some(value.to_owned()),
                Param::Risk => {
                    f.at_risk = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(FilterError::NotABool(value.to_string())),
                    }
                }
            }
        }
        Ok(f)
    }

    pub fn matches_record(&self, r: &Record) -> bool {
        self.event.is_none_or(|e| r.event == e)
            && self.pid.is_none_or(|p| r.pid == Some(p))
            && self.netns.is_none_or(|n| r.netns == Some(n))
            && self.port.is_none_or(|p| r.has_port(p))
            && self.names_match(&r.namespace, &r.pod, &r.container)
    }

    pub fn matches_row(&self, r: &SocketRow) -> bool {
        self.netns.is_none_or(|n| r.netns == Some(n))
            && self.state.is_none_or(|s| r.state == s)
            && self
                .pid
                .is_none_or(|p| r.owner.as_ref().is_some_and(|o| o.pid == p))
            && self.port.is_none_or(|p| r.has_port(p))
            && (!self.at_risk || r.risk.is_some())
            && self.names_match(&r.namespace, &r.pod, &r.container)
    }

    /// The Kubernetes name filters, against a record's or a row's names.
    fn names_match(
        &self,
        namespace: &Option<String>,
        pod: &Option<String>,
        container: &Option<String>,
    ) -> bool {
        named(&self.namespace, namespace)
            && named(&self.pod, pod)
            && named(&self.container, container)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Param] = &Param::ALL;

    #[test]
    fn parses_and_rejects() {
        let f = Filter::parse([("port", "22"), ("state", "estab")], ALL).unwrap();
        assert_eq!(f.port, Some(22));
        assert_eq!(f.state, Some(TcpState::Established));
        for bad in [
            ("port", "99999"),
            ("pid", "-1"),
            ("state", "open"),
            ("event", "probe"),
            ("risk", "yes"),
        ] {
            assert!(Filter::parse([bad], ALL).is_err(), "{bad:?}");
        }
        let e = Filter::parse([("event", "probe")], ALL).unwrap_err();
        assert!(e.to_string().contains("probe_sent"), "{e}");
        assert!(Filter::parse([("color", "red")], ALL).is_err());
        assert_eq!(
            Filter::parse([("port", "1"), ("port", "2")], ALL),
            Err(FilterError::Duplicate("port"))
        );
        assert!(Filter::parse([("event", "probe_sent")], &[Param::Port]).is_err());
    }

    #[test]
    fn matches_records_by_port() {
        let mut r = Record::new(RecordKind::ProbeSent, 0.0, 1);
        r.local = Some("[::1]:5000".parse().unwrap());
        r.remote = Some("[::1]:22".parse().unwrap());
        let port = |p| Filter {
            port: Some(p),
            ..Default::default()
        };
        assert!(port(22).matches_record(&r));
        assert!(!port(23).matches_record(&r));
        let f = Filter {
            event: Some(RecordKind::ProbeAck),
            ..Default::default()
        };
        assert!(!f.matches_record(&r));
    }

    #[test]
    fn matches_by_pod_and_namespace() {
        let mut r = Record::new(RecordKind::ProbeSent, 0.0, 1);
        r.pod = Some("web-0".into());
        r.namespace = Some("shop".into());
        let f = Filter::parse([("namespace", "shop"), ("pod", "web-0")], ALL).unwrap();
        assert!(f.matches_record(&r));
        let other = Filter::parse([("pod", "web-1")], ALL).unwrap();
        assert!(!other.matches_record(&r));
        // Empty: what is in no pod (the host's own sockets).
        let host = Filter::parse([("namespace", "")], ALL).unwrap();
        assert!(!host.matches_record(&r));
        assert!(host.matches_record(&Record::new(RecordKind::ProbeSent, 0.0, 2)));
    }
}
