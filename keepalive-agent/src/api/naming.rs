//! Who a socket belongs to, in the terms an SRE searches by: the
//! Kubernetes namespace, pod and container the container runtime names
//! (see `host::runtime`), else what the owner's cgroup path says (pod
//! uid, container id, systemd service). A socket whose owner is not known
//! yet (accepted, no `/proc` scan since) is named after the pod that owns
//! its network namespace, if one does; a host-network pod's sockets are
//! told apart from the host's by their owner, never by the namespace.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use keepalive_api::{Owner, Record, SocketRow};

use super::metrics::{Name, Workload};
use crate::{
    host::{
        cgroup,
        program::Programs,
        runtime::{PodIdentity, directory::Directory},
    },
    model::clock::monotonic_ns,
};

pub struct Naming {
    pub directory: Directory,
    /// The cgroup identity of a process in each network namespace, by inode.
    pub netns_owners: HashMap<u32, cgroup::Identity>,
    /// The owners' programs, recognised at each inventory.
    pub programs: Programs,
    /// Final workload labels by container id (once the runtime named it) or
    /// systemd service: every probe is labelled, and should not allocate.
    labels: HashMap<String, Workload>,
}

/// Labels kept at most (containers and services of one node).
const LABELS_KEPT: usize = 16_384;

/// A container id as `docker ps` and `crictl ps` print it.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Naming {
    pub fn new(directory: Directory) -> Self {
        Naming {
            directory,
            netns_owners: HashMap::new(),
            programs: Programs::default(),
            labels: HashMap::new(),
        }
    }

    fn identity(&mut self, container_id: Option<&str>) -> Option<Arc<PodIdentity>> {
        self.directory.lookup(container_id?, monotonic_ns())
    }

    /// Has the runtime asked about container `id` unless it is known or
    /// already asked about.
    pub fn ask_about(&mut self, id: &str) {
        self.directory.lookup(id, monotonic_ns());
    }

    /// The pod that owns network namespace `netns`, from its process's
    /// cgroup: the runtime's identity (pod level), else the pod uid alone.
    fn netns_pod(&mut self, netns: Option<u32>) -> Option<PodIdentity> {
        let owner = self.netns_owners.get(&netns?)?;
        let named = owner
            .container_id
            .as_deref()
            .and_then(|id| self.directory.lookup(id, monotonic_ns()));
        match named {
            Some(identity) => Some(identity.pod_only()),
            None => owner.pod_uid.clone().map(|uid| PodIdentity {
                pod_uid: Some(uid),
                ..PodIdentity::default()
            }),
        }
    }

    /// The `namespace` and `pod` labels of network namespace `netns`'s pod
    /// (the uid as `pod` until the runtime named it; empty without one).
    fn netns_labels(&mut self, netns: Option<u32>) -> (Name, Name) {
        let pod = self.netns_pod(netns).unwrap_or_default();
        (
            Name::of(pod.namespace.as_deref()),
            Name::of(pod.pod.as_deref().or(pod.pod_uid.as_deref())),
        )
    }

    /// Fills the Kubernetes names and the program of a socket's owner.
    pub fn name_owner(&mut self, o: &mut Owner) {
        o.program = self.programs.get(o.pid).cloned();
        if let Some(identity) = self.identity(o.container_id.as_deref()) {
            o.pod.clone_from(&identity.pod);
            o.namespace.clone_from(&identity.namespace);
            o.container.clone_from(&identity.container);
            if identity.pod_uid.is_some() {
                o.pod_uid.clone_from(&identity.pod_uid);
            }
        }
    }

    /// Fills a `/sockets` row's Kubernetes names: its owner's, else its
    /// namespace's pod.
    pub fn name_row(&mut self, row: &mut SocketRow) {
        let identity = match row.owner.as_mut() {
            Some(o) => {
                self.name_owner(o);
                PodIdentity {
                    pod: o.pod.clone(),
                    namespace: o.namespace.clone(),
                    pod_uid: o.pod_uid.clone(),
                    container: o.container.clone(),
                }
            }
            None => self.netns_pod(row.netns).unwrap_or_default(),
        };
        row.pod = identity.pod;
        row.namespace = identity.namespace;
        row.container = identity.container;
        row.pod_uid = identity.pod_uid;
    }

    /// Fills a record's Kubernetes names: its owner's, else its namespace's pod.
    pub fn name_record(&mut self, r: &mut Record) {
        let identity = if r.pid.is_some() {
            self.identity(r.container_id.as_deref())
                .map(|i| (*i).clone())
        } else {
            self.netns_pod(r.netns)
        };
        let Some(identity) = identity else { return };
        r.pod = identity.pod;
        r.namespace = identity.namespace;
        r.container = identity.container;
        if identity.pod_uid.is_some() {
            r.pod_uid = identity.pod_uid;
        }
    }

    /// The workload labels of a socket owned by `owner` in `netns`. Without
    /// the runtime's answer: the pod uid as `pod`, the short container id
    /// as `container`.
    pub fn workload(&mut self, owner: Option<&Owner>, netns: Option<u32>) -> Workload {
        let Some(o) = owner else {
            let (namespace, pod) = self.netns_labels(netns);
            return Workload {
                namespace,
                pod,
                ..Workload::default()
            };
        };
        let key = o.container_id.as_deref().or(o.service.as_deref());
        if let Some(w) = key.and_then(|k| self.labels.get(k)) {
            return w.clone();
        }
        let identity = self.identity(o.container_id.as_deref());
        let i = identity.as_deref();
        let container = match i {
            Some(i) => i.container.as_deref(),
            None => o.container_id.as_deref().map(short_id),
        };
        let w = Workload {
            namespace: Name::of(i.and_then(|i| i.namespace.as_deref())),
            pod: Name::of(
                i.and_then(|i| i.pod.as_deref().or(i.pod_uid.as_deref()))
                    .or(o.pod_uid.as_deref()),
            ),
            container: Name::of(container),
            service: Name::of(o.service.as_deref()),
        };
        // A container's labels are final once the runtime named it; until
        // then they are the cgroup path's fallback, made afresh.
        let settled = o.container_id.is_none() || i.is_some();
        if let Some(k) = key.filter(|_| settled && self.labels.len() < LABELS_KEPT) {
            self.labels.insert(k.to_owned(), w.clone());
        }
        w
    }

    /// The Kubernetes namespace and pod that own network namespace `netns`
    /// (empty for the host's and `ip netns` ones).
    pub fn pod_of_netns(&mut self, netns: u32) -> (Name, Name) {
        self.netns_labels(Some(netns))
    }

    /// After an inventory: every container still referred to is asked
    /// about if it is not known yet, every other answer forgotten.
    pub fn refresh<'a>(&mut self, owners: impl Iterator<Item = &'a Owner>) {
        let (mut containers, mut services) = (HashSet::new(), HashSet::new());
        for o in owners {
            containers.extend(o.container_id.as_deref());
            services.extend(o.service.as_deref());
        }
        containers.extend(
            self.netns_owners
                .values()
                .filter_map(|i| i.container_id.as_deref()),
        );
        let now = monotonic_ns();
        for id in &containers {
            self.directory.lookup(id, now);
        }
        self.directory.retain(&containers);
        self.labels
            .retain(|k, _| containers.contains(k.as_str()) || services.contains(k.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::host::runtime::RuntimeKind;

    const ID: &str = "7f5968c19204339684e1846761c086fa23192a2cd75e4260fe6fba178c3eb5cc";
    const SANDBOX: &str = "ff7a971ba6d2a4e34fc558f62ce11254c65c5051fa21f2a8dee105b82ad0d821";
    const UID: &str = "0c1d2e3f-1111-2222-3333-444455556666";

    fn naming() -> (Naming, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(8);
        let dir = Directory::new(Some((RuntimeKind::Containerd, tx)), 64);
        (Naming::new(dir), rx)
    }

    fn web0(container: Option<&str>) -> PodIdentity {
        PodIdentity {
            pod: Some("web-0".into()),
            namespace: Some("shop".into()),
            pod_uid: Some(UID.into()),
            container: container.map(Into::into),
        }
    }

    fn owner_in(container_id: Option<&str>) -> Owner {
        Owner {
            pid: 7,
            container_id: container_id.map(Into::into),
            pod_uid: container_id.map(|_| UID.into()),
            ..Owner::default()
        }
    }

    #[test]
    fn owners_are_named_by_the_runtime_else_by_their_cgroup() {
        let (mut n, mut rx) = naming();
        let owner = owner_in(Some(ID));
        // Before the runtime answered: the uid and the short id.
        let w = n.workload(Some(&owner), Some(1));
        assert_eq!(w.pod, Name::of(Some(UID)));
        assert_eq!(w.container, Name::of(Some(&ID[..12])));
        assert_eq!(rx.try_recv().as_deref(), Ok(ID));
        n.directory
            .answered(ID.into(), Ok(Some(web0(Some("app")))), 0);
        let w = n.workload(Some(&owner), Some(1));
        assert_eq!(
            (w.namespace, w.pod, w.container),
            (
                Name::of(Some("shop")),
                Name::of(Some("web-0")),
                Name::of(Some("app"))
            )
        );
        let mut o = owner.clone();
        n.name_owner(&mut o);
        assert_eq!(o.pod.as_deref(), Some("web-0"));
        assert_eq!(o.container.as_deref(), Some("app"));
        // A host process: all empty but its service.
        let host = Owner {
            service: Some("sshd.service".into()),
            ..owner_in(None)
        };
        assert_eq!(
            n.workload(Some(&host), Some(1)).service,
            Name::of(Some("sshd.service"))
        );
        assert_eq!(n.workload(Some(&host), Some(1)).pod, Name::default());
        // Kept: the named container's and the service's labels, not the
        // fallback of before; dropped with their owners.
        assert_eq!(n.labels.len(), 2);
        assert_eq!(n.labels[ID].pod, Name::of(Some("web-0")));
        n.refresh([&host].into_iter());
        assert_eq!(n.labels.len(), 1, "the service's owner is still live");
        n.refresh(std::iter::empty());
        assert!(n.labels.is_empty());
    }

    #[test]
    fn ownerless_sockets_take_their_namespaces_pod() {
        let (mut n, _rx) = naming();
        n.netns_owners.insert(
            5,
            cgroup::Identity {
                container_id: Some(SANDBOX.into()),
                pod_uid: Some(UID.into()),
                service: None,
            },
        );
        assert_eq!(n.workload(None, Some(5)).pod, Name::of(Some(UID)));
        n.directory
            .answered(SANDBOX.into(), Ok(Some(web0(None))), 0);
        let w = n.workload(None, Some(5));
        assert_eq!(
            (w.pod, w.container),
            (Name::of(Some("web-0")), Name::default())
        );
        let mut r = Record::new(keepalive_api::RecordKind::ProbeSent, 0.0, 1);
        r.netns = Some(5);
        n.name_record(&mut r);
        assert_eq!(r.pod.as_deref(), Some("web-0"));
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        // The host's namespace has no pod: nothing is made up.
        assert_eq!(n.workload(None, Some(1)), Workload::default());
        assert_eq!(n.pod_of_netns(5).1, Name::of(Some("web-0")));
        n.refresh(std::iter::empty());
        assert_eq!(n.directory.len(), 1, "the namespace's owner is still live");
    }
}
