//! The Kubernetes identity in a container's labels, as the kubelet sets
//! them on every container (pkg/kubelet/types/labels.go).

use std::collections::HashMap;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Who a container is; every part optional (a pod's sandbox has no
/// container name, a plain Docker container no pod).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
}

impl PodIdentity {
    /// From a container's labels; `name` is the runtime's own name of a
    /// container the kubelet did not create.
    pub fn from_labels(labels: &HashMap<String, String>, name: Option<&str>) -> PodIdentity {
        let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
        let pod = get(POD_NAME);
        // The dockershim named sandboxes "POD"; they are the pod, not a
        // container of it.
        let container = get(CONTAINER_NAME).filter(|c| c != "POD").or_else(|| {
            pod.is_none()
                .then(|| name.map(|n| n.trim_start_matches('/').to_owned()))
                .flatten()
                .filter(|n| !n.is_empty())
        });
        PodIdentity {
            namespace: get(POD_NAMESPACE),
            pod_uid: get(POD_UID),
            pod,
            container,
        }
    }

    /// The pod-level part (what a network namespace's owner says).
    pub fn pod_only(&self) -> PodIdentity {
        PodIdentity {
            container: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelet_labels_name_pod_and_container() {
        let app = labels(&[
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "0c1d2e3f-1111-2222-3333-444455556666"),
            (CONTAINER_NAME, "nginx"),
            ("io.cri-containerd.kind", "container"),
        ]);
        let id = PodIdentity::from_labels(&app, Some("k8s_nginx_web-0"));
        assert_eq!(id.pod.as_deref(), Some("web-0"));
        assert_eq!(id.namespace.as_deref(), Some("shop"));
        assert_eq!(id.container.as_deref(), Some("nginx"));
        assert_eq!(id.pod_only().container, None);
        // A sandbox carries the pod's labels and no container name.
        let sandbox = labels(&[(POD_NAME, "web-0"), (POD_NAMESPACE, "shop")]);
        assert_eq!(
            PodIdentity::from_labels(&sandbox, Some("/x")).container,
            None
        );
        let dockershim = labels(&[(POD_NAME, "web-0"), (CONTAINER_NAME, "POD")]);
        assert_eq!(PodIdentity::from_labels(&dockershim, None).container, None);
        // A plain Docker container: its name, no pod.
        let plain = PodIdentity::from_labels(&labels(&[]), Some("/redis"));
        assert_eq!(plain.container.as_deref(), Some("redis"));
        assert_eq!(plain.pod, None);
        assert_eq!(
            PodIdentity::from_labels(&labels(&[(POD_NAME, "")]), None),
            PodIdentity::default()
        );
    }
}
