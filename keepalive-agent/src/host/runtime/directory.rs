//! What the runtime said of each container, kept so that the event path
//! never waits for it: a lookup answers from memory at once; an unknown id
//! is queued (bounded; a full queue is counted, and the id asked again at
//! its next lookup) for the resolver task, which writes the answer back.
//! A runtime that fails is asked again after [`RETRY_NS`]; ids no socket
//! refers to any more are forgotten at each inventory ([`Directory::retain`]).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use tokio::sync::mpsc;

use super::{PodIdentity, RuntimeKind};

/// How long a failed lookup waits before it is asked again.
pub const RETRY_NS: u64 = 5_000_000_000;

/// What the runtime answered for one id.
#[derive(Clone, Debug)]
enum Known {
    Found(Arc<PodIdentity>),
    /// No such container (not one of the runtime's, or of another namespace).
    Missing,
}

/// Lookups by outcome, for `keepalive_agent_runtime_lookups_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupCounts {
    pub resolved: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Not asked: the queue to the resolver was full.
    pub dropped: u64,
}

/// The answer a resolver got.
pub type Resolved = Result<Option<PodIdentity>, ()>;

pub struct Directory {
    runtime: Option<RuntimeKind>,
    queue: Option<mpsc::Sender<String>>,
    known: HashMap<String, Known>,
    pending: HashSet<String>,
    retry_at: HashMap<String, u64>,
    /// Answers kept at most (a node runs a few hundred containers).
    capacity: usize,
    pub counts: LookupCounts,
    /// Whether the runtime's last answer was an answer (None: not asked yet).
    pub up: Option<bool>,
}

impl Directory {
    /// A directory that asks `runtime` through `queue`, or, without one,
    /// only ever answers from cgroup paths (every lookup misses).
    pub fn new(runtime: Option<(RuntimeKind, mpsc::Sender<String>)>, capacity: usize) -> Self {
        let (runtime, queue) = runtime.unzip();
        Directory {
            runtime,
            queue,
            known: HashMap::new(),
            pending: HashSet::new(),
            retry_at: HashMap::new(),
            capacity,
            counts: LookupCounts::default(),
            up: None,
        }
    }

    pub fn runtime(&self) -> Option<RuntimeKind> {
        self.runtime
    }

    /// The identity of container `id` if the runtime told it; on a miss
    /// the id is queued for the resolver (at most once at a time).
    pub fn lookup(&mut self, id: &str, now_ns: u64) -> Option<Arc<PodIdentity>> {
        match self.known.get(id) {
            Some(Known::Found(identity)) => return Some(identity.clone()),
            Some(Known::Missing) => return None,
            None => {}
        }
        let queue = self.queue.as_ref()?;
        if self.pending.contains(id) || self.retry_at.get(id).is_some_and(|at| now_ns < *at) {
            return None;
        }
        match queue.try_send(id.to_owned()) {
            Ok(()) => {
                self.pending.insert(id.to_owned());
            }
            Err(_) => self.counts.dropped += 1,
        }
        None
    }

    /// What the resolver learned of `id`.
    pub fn answered(&mut self, id: String, answer: Resolved, now_ns: u64) {
        self.pending.remove(&id);
        self.up = Some(answer.is_ok());
        let known = match answer {
            Ok(Some(identity)) => {
                self.counts.resolved += 1;
                Known::Found(Arc::new(identity))
            }
            Ok(None) => {
                self.counts.not_found += 1;
                Known::Missing
            }
            Err(()) => {
                self.counts.failed += 1;
                self.retry_at.insert(id, now_ns + RETRY_NS);
                return;
            }
        };
        self.retry_at.remove(&id);
        if self.known.len() < self.capacity {
            self.known.insert(id, known);
        }
    }

    /// Forgets every id not in `live` (containers no socket or namespace
    /// of the node refers to any more: dead, or never ours).
    pub fn retain(&mut self, live: &HashSet<&str>) {
        self.known.retain(|id, _| live.contains(id.as_str()));
        self.retry_at.retain(|id, _| live.contains(id.as_str()));
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodIdentity {
        PodIdentity {
            pod: Some(name.into()),
            ..PodIdentity::default()
        }
    }

    #[test]
    fn misses_are_queued_once_and_answers_kept() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut d = Directory::new(Some((RuntimeKind::Containerd, tx)), 8);
        assert_eq!(d.lookup("a", 0), None);
        assert_eq!(d.lookup("a", 0), None, "asked once while pending");
        assert_eq!(rx.try_recv().as_deref(), Ok("a"));
        assert!(rx.try_recv().is_err());
        d.answered("a".into(), Ok(Some(pod("web-0"))), 0);
        assert_eq!(d.lookup("a", 0).unwrap().pod.as_deref(), Some("web-0"));
        // Not found: remembered, not asked again.
        d.lookup("b", 0);
        d.answered(rx.try_recv().unwrap(), Ok(None), 0);
        assert_eq!(d.lookup("b", 0), None);
        assert!(rx.try_recv().is_err());
        assert_eq!((d.counts.resolved, d.counts.not_found), (1, 1));
        assert_eq!(d.up, Some(true));
    }

    #[test]
    fn a_failing_runtime_is_asked_again_later_and_a_full_queue_counted() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut d = Directory::new(Some((RuntimeKind::Containerd, tx)), 8);
        d.lookup("a", 0);
        d.answered(rx.try_recv().unwrap(), Err(()), 0);
        assert_eq!(d.up, Some(false));
        assert_eq!(d.lookup("a", RETRY_NS - 1), None);
        assert!(rx.try_recv().is_err(), "not before the retry time");
        d.lookup("a", RETRY_NS);
        assert_eq!(rx.try_recv().as_deref(), Ok("a"));
        // The queue holds one: the second id is dropped, counted.
        d.lookup("x", 0);
        d.lookup("y", 0);
        assert_eq!(d.counts.dropped, 1);
        assert_eq!(d.counts.failed, 1);
    }

    #[test]
    fn dead_containers_are_forgotten_and_memory_is_capped() {
        let (tx, _rx) = mpsc::channel(8);
        let mut d = Directory::new(Some((RuntimeKind::Containerd, tx)), 2);
        for id in ["a", "b", "c"] {
            d.answered(id.into(), Ok(Some(pod(id))), 0);
        }
        assert_eq!(d.len(), 2, "capped");
        d.retain(&HashSet::from(["b"]));
        assert_eq!(d.len(), 1);
        assert!(d.lookup("b", 0).is_some());
        // Without a runtime every lookup misses, nothing is queued.
        let mut none = Directory::new(None, 8);
        assert_eq!(none.lookup("a", 0), None);
        assert_eq!(none.counts, LookupCounts::default());
    }
}
