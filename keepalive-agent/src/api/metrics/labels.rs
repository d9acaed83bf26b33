//! Label sets of the metric families. Values are typed, not strings: the
//! event path counts tens of thousands of probes a second and should not
//! allocate to do it.

use std::{collections::HashSet, sync::Arc};

use prometheus_client::{
    encoding::{
        EncodeLabel as _, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
    },
    metrics::counter::Counter,
};

/// A namespace's inode; empty when unknown. Label values are typed, not
/// strings: the event path counts tens of thousands of probes a second
/// and should not allocate to do it.
pub type NetnsValue = Option<u32>;

/// A service port, or "other" past `--max-port-labels`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum PortLabel {
    Port(u16),
    Other,
}

impl EncodeLabelValue for PortLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            PortLabel::Port(p) => EncodeLabelValue::encode(p, encoder),
            PortLabel::Other => EncodeLabelValue::encode(&"other", encoder),
        }
    }
}

/// A label value that may be empty; shared, not copied, between series.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Name(pub Option<Arc<str>>);

impl Name {
    pub fn of(s: Option<&str>) -> Name {
        Name(s.filter(|s| !s.is_empty()).map(Arc::from))
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_deref().unwrap_or(""), encoder)
    }
}

/// Who owns the sockets of a series: the Kubernetes namespace, pod and
/// container, or outside Kubernetes the systemd service; all empty for
/// the host's other processes (and for sockets whose owner is unknown in
/// the host's namespace).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Workload {
    pub namespace: Name,
    pub pod: Name,
    pub container: Name,
    pub service: Name,
}

impl Workload {
    /// What series past `--max-workloads` fold into.
    pub fn other() -> Workload {
        let other = Name::of(Some("other"));
        Workload {
            namespace: other.clone(),
            pod: other.clone(),
            container: other,
            service: Name::default(),
        }
    }
}

/// The `netns` label, present only with `--netns-label` (hosts whose
/// namespaces are not containers': `ip netns`, VMs).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct NetnsOpt(pub Option<u32>);

impl EncodeLabelSet for NetnsOpt {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(netns) => ("netns", netns).encode(encoder.encode_label()),
            None => Ok(()),
        }
    }
}

/// Whose series: the workload, and the namespace inode where asked for.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Scope {
    #[prometheus(flatten)]
    pub workload: Workload,
    #[prometheus(flatten)]
    pub netns: NetnsOpt,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopePort {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub port: PortLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub port: PortLabel,
    /// A [`keepalive_api::Cause`]'s name.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub port: PortLabel,
    /// A [`keepalive_api::ResetClass`]'s name.
    pub class: &'static str,
}

/// A peer's close: whether it followed an idle gap
/// (`--idle-gap-seconds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerCloseLabels {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub port: PortLabel,
    /// `true` or `false`.
    pub after_idle: &'static str,
}

/// A destination group of `/paths` (bounded by `--max-paths`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

/// A network namespace's gauges (sysctls, conntrack): its inode, and the
/// pod that owns it where one does.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetnsLabel {
    pub netns: NetnsValue,
    pub namespace: Name,
    pub pod: Name,
}

/// The RTT histogram's: the Kubernetes namespace only (a histogram is 15
/// series a label set).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RttLabel {
    pub namespace: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketsLabels {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub keepalive: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RiskLabels {
    #[prometheus(flatten)]
    pub scope: Scope,
    pub port: PortLabel,
    pub profile: String,
    /// A [`keepalive_api::RiskReason`]'s name.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
    /// `git describe --always --dirty` of the source, or "unknown".
    pub revision: &'static str,
    /// `rustc --version` of the compiler that built it.
    pub rustversion: &'static str,
    /// `--node-name` (the DaemonSet sets it from spec.nodeName).
    pub node: String,
}

/// At most `max` distinct port values; later ones read "other".
pub struct PortLabels {
    seen: HashSet<u16>,
    max: usize,
}

impl PortLabels {
    pub fn new(max: usize) -> Self {
        PortLabels {
            seen: HashSet::new(),
            max,
        }
    }

    pub fn label(&mut self, port: u16) -> PortLabel {
        if self.seen.contains(&port) || self.seen.len() < self.max {
            self.seen.insert(port);
            PortLabel::Port(port)
        } else {
            PortLabel::Other
        }
    }
}

/// At most `max` distinct workloads; later ones fold into
/// [`Workload::other`], counted (`keepalive_agent_workloads_folded_total`).
pub struct WorkloadLabels {
    seen: HashSet<Workload>,
    max: usize,
    folded: Counter,
}

impl WorkloadLabels {
    pub fn new(max: usize, folded: Counter) -> Self {
        WorkloadLabels {
            seen: HashSet::new(),
            max,
            folded,
        }
    }

    pub fn label(&mut self, w: Workload) -> Workload {
        if self.seen.contains(&w) {
            return w;
        }
        if self.seen.len() < self.max {
            self.seen.insert(w.clone());
            return w;
        }
        self.folded.inc();
        Workload::other()
    }

    /// One more observation of a workload already folded into `other`.
    pub fn fold_again(&self) {
        self.folded.inc();
    }

    /// Observations folded into `other` so far.
    #[cfg(test)]
    pub fn folded(&self) -> u64 {
        self.folded.get()
    }

    /// Forgets workloads no series holds any more (their pods are gone).
    pub fn retain(&mut self, live: &HashSet<Workload>) {
        self.seen.retain(|w| live.contains(w));
    }
}
