//! Label sets of the metric families. Values are typed, not strings: the
//! event path counts tens of thousands of probes a second and should not
//! allocate to do it.

use std::collections::HashSet;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetnsPort {
    pub netns: NetnsValue,
    pub port: PortLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    pub netns: NetnsValue,
    pub port: PortLabel,
    /// A [`keepalive_api::Cause`]'s name.
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    pub netns: NetnsValue,
    pub port: PortLabel,
    /// A [`keepalive_api::ResetClass`]'s name.
    pub class: &'static str,
}

/// A destination group of `/paths` (bounded by `--max-paths`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    pub path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetnsLabel {
    pub netns: NetnsValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketsLabels {
    pub netns: NetnsValue,
    pub keepalive: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RiskLabels {
    pub netns: NetnsValue,
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
    pub version: String,
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
