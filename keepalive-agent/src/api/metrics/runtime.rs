//! How the container runtime answers: whether it is up, what each lookup
//! came to (a `failed` lookup is a socket named from its cgroup path
//! alone), and how many containers are known.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::registered;
use crate::host::runtime::directory::{Directory, LookupCounts};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabel {
    pub runtime: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub runtime: &'static str,
    pub result: &'static str,
}

/// One lookup outcome's label and count.
type Outcome = (&'static str, fn(&LookupCounts) -> u64);

const OUTCOMES: [Outcome; 4] = [
    ("resolved", |c| c.resolved),
    ("not_found", |c| c.not_found),
    ("failed", |c| c.failed),
    ("dropped", |c| c.dropped),
];

pub struct RuntimeMetrics {
    up: Family<RuntimeLabel, Gauge>,
    lookups: Family<LookupLabels, Counter>,
    known: Gauge,
    last: LookupCounts,
}

impl RuntimeMetrics {
    pub fn register(r: &mut Registry) -> Self {
        RuntimeMetrics {
            up: registered(
                r,
                "keepalive_agent_runtime_up",
                "1 when the container runtime answered the agent's last lookup, 0 when it failed (identities then come from cgroup paths)",
            ),
            lookups: registered(
                r,
                "keepalive_agent_runtime_lookups",
                "Container lookups asked of the runtime, by result: resolved, not_found, failed (named from the cgroup path alone), dropped (the lookup queue was full)",
            ),
            known: registered(
                r,
                "keepalive_agent_runtime_containers_known",
                "Containers whose identity the agent holds",
            ),
            last: LookupCounts::default(),
        }
    }

    pub fn render(&mut self, d: &Directory) {
        let Some(kind) = d.runtime() else { return };
        let runtime = kind.as_str();
        // Up until a lookup says otherwise: asked nothing is no failure.
        self.up
            .get_or_create(&RuntimeLabel { runtime })
            .set(i64::from(d.up.unwrap_or(true)));
        for (result, count) in OUTCOMES {
            self.lookups
                .get_or_create(&LookupLabels { runtime, result })
                .inc_by(count(&d.counts).saturating_sub(count(&self.last)));
        }
        self.last = d.counts;
        self.known.set(d.len() as i64);
    }
}
