//! The Kubernetes manifests, validated offline against the API schemas.

use super::*;
use crate::privileges::DAEMONSET_CAPS;

/// Kubernetes versions to validate against: the first with the
/// `appArmorProfile` field the DaemonSet uses, and the newest the pinned
/// validator bundles.
const K8S_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let mut args = vec![
        "-m",
        "kubernetes_validate",
        "--strict",
        "--quiet",
        "-k",
        version,
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    run("python3", &args, None)
}

/// Panics with the install command unless python3 has kubernetes-validate
/// at the pinned version (which bundles the schemas of K8S_VERSIONS).
fn require_validator() {
    let (ok, out) = run("python3", &["-m", "kubernetes_validate", "--version"], None);
    assert!(
        ok && out.trim() == "1.37.0",
        "kubernetes-validate 1.37.0 not installed for python3 ({}): {VALIDATOR_INSTALL}",
        out.trim()
    );
}

/// The manifests kustomization.yaml lists (all of them, as on disk), by
/// kind, and the files of Kubernetes API objects among them (the
/// PodMonitor is a CRD the validator has no schema for: its shape is
/// checked by hand).
fn manifests(dir: &Path) -> (BTreeMap<String, Value>, Vec<PathBuf>) {
    let kustomization = &yaml(&dir.join("kustomization.yaml"))[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml resources vs files");
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    let mut api_files = Vec::new();
    for f in &on_disk {
        let docs = yaml(&dir.join(f));
        assert_eq!(docs.len(), 1, "{f}: one object per file");
        let kind = docs[0]["kind"].as_str().expect("kind").to_string();
        if !docs[0]["apiVersion"]
            .as_str()
            .unwrap()
            .starts_with("monitoring.coreos.com/")
        {
            api_files.push(dir.join(f));
        }
        objects.insert(kind, docs[0].clone());
    }
    (objects, api_files)
}

/// Valid against the bundled OpenAPI schemas, strictly: an unknown field fails.
fn assert_schemas_valid(dir: &Path, api_files: &[PathBuf]) {
    for version in K8S_VERSIONS {
        let (ok, out) = validate(api_files, version);
        assert!(
            ok && !out.contains("ERROR") && !out.contains("WARN"),
            "kubernetes-validate --strict -k {version}:\n{out}"
        );
    }
    // The validator is strict: an unknown field fails.
    let tmp = prometheus::temp_dir("keepalive-k8s");
    let bad = tmp.join("daemonset.yaml");
    std::fs::write(
        &bad,
        read(&dir.join("daemonset.yaml")).replace(
            "      hostPID: true\n",
            "      hostPID: true\n      hostPIDs: true\n",
        ),
    )
    .unwrap();
    let (ok, out) = validate(std::slice::from_ref(&bad), K8S_VERSIONS[1]);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        !ok && out.contains("hostPIDs"),
        "a misspelt field passed:\n{out}"
    );
}

/// Everything in the one namespace, which admits privileged pods.
fn assert_one_namespace(objects: &BTreeMap<String, Value>) {
    let ns = objects["Namespace"]["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        objects["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    for (kind, o) in objects {
        if kind != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], ns, "{kind}");
        }
    }
}

/// The DaemonSet's pod: host namespaces, no token, every node.
fn assert_pod(objects: &BTreeMap<String, Value>, pod: &Value) {
    assert_eq!(
        (pod["hostNetwork"].as_bool(), pod["hostPID"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["serviceAccountName"],
        objects["ServiceAccount"]["metadata"]["name"]
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists"
                && t.get("key").is_none()
                && t.get("effect").is_none()),
        "tolerates every taint"
    );
}

/// The agent's container: least privilege, the port, probes, resources.
fn assert_container(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        DAEMONSET_CAPS.iter().map(|s| s.to_string()).collect()
    );
    let env = container_env(c);
    // Metrics on the node's address over TLS with auth; the per-socket
    // endpoints on loopback only.
    assert_eq!(
        env.get("KEEPALIVE_LISTEN").map(String::as_str),
        Some("$(HOST_IP):9977")
    );
    assert_exposure(c);
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(port["containerPort"], 9977);
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/healthz"),
        ("livenessProbe", "/livez"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }
    for (k, v) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "cpu"),
        ("limits", "memory"),
    ] {
        assert!(c["resources"][k][v].is_string(), "resources.{k}.{v}");
    }
}

/// Read-only host paths, mounted where the agent looks.
fn assert_host_paths(pod: &Value, c: &Value) {
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    assert_eq!(
        volumes.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "/sys/kernel/btf",
            "/run/netns",
            "/run/containerd/containerd.sock",
            "/sys/fs/cgroup"
        ]),
        "no /proc from the host: hostPID shows the host's processes; the runtime's socket alone; no /boot (HZ is measured); the cgroup hierarchy for the setsockopt hook's root"
    );
    for m in c["volumeMounts"].as_array().unwrap() {
        if !volumes.contains_key(m["name"].as_str().unwrap()) {
            continue;
        }
        assert_eq!(m["readOnly"], true, "{m}");
        // The host's cgroup hierarchy goes beside the container's own.
        fn looks_at(host: &str) -> &str {
            match host {
                "/sys/fs/cgroup" => "/host/sys/fs/cgroup",
                other => other,
            }
        }
        assert_eq!(
            m["mountPath"].as_str(),
            volumes
                .get(m["name"].as_str().unwrap())
                .copied()
                .map(looks_at),
            "mounted where the agent looks"
        );
        if m["mountPath"] == "/run/netns" {
            assert_eq!(m["mountPropagation"], "HostToContainer");
        }
    }
}

/// Service and PodMonitor find the pods and the port by name.
fn assert_monitoring_finds_the_pods(
    objects: &BTreeMap<String, Value>,
    pod_labels: &serde_json::Map<String, Value>,
) {
    let svc = &objects["Service"];
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    let pm = &objects["PodMonitor"];
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    for sel in [
        &svc["spec"]["selector"],
        &pm["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in sel.as_object().expect("selector") {
            assert_eq!(pod_labels.get(k), Some(v), "selector {k}");
        }
    }
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    // job = the pod label jobLabel names, matched by KeepaliveAgentDown.
    let job = pod_labels[pm["spec"]["jobLabel"].as_str().expect("jobLabel")]
        .as_str()
        .unwrap();
    assert!(job.starts_with("keepalive-agent"), "job {job}");
}

/// The image: the Dockerfile copies the release binary to where it runs it.
fn assert_image_runs_the_binary(c: &Value) {
    let dockerfile = read(&deploy("docker/Dockerfile"));
    let copy = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY "))
        .expect("COPY");
    let (src, dest) = copy.split_once(' ').unwrap();
    assert_eq!(src, "target/release/keepalive-agent");
    assert!(repo().join(src).is_file(), "{src} not built");
    assert!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{dest}\"]")),
        "ENTRYPOINT runs {dest}"
    );
    assert_eq!(strings(&c["args"]), vec!["run"]);
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    require_validator();
    let dir = deploy("kubernetes");
    let (objects, api_files) = manifests(&dir);
    assert_schemas_valid(&dir, &api_files);
    assert_one_namespace(&objects);
    let ds = &objects["DaemonSet"];
    let pod = &ds["spec"]["template"]["spec"];
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    assert_pod(&objects, pod);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_container(c);
    assert_host_paths(pod, c);
    assert_monitoring_finds_the_pods(&objects, pod_labels);
    assert_image_runs_the_binary(c);
    eprintln!(
        "kubernetes: {} API objects valid against {K8S_VERSIONS:?}, PodMonitor shape checked",
        api_files.len()
    );
}

/// Nothing per-socket reachable unauthenticated from the network: either
/// everything is on loopback, or the network listener has a web config
/// (its Secret mounted where the file is named) and the per-socket
/// endpoints have a loopback listener of their own. Probes reach what
/// they can: HTTPS on the network listener, else `keepalive-agent health`
/// inside the container.
fn assert_exposure(c: &Value) {
    let env = container_env(c);
    let listen = env.get("KEEPALIVE_LISTEN").expect("KEEPALIVE_LISTEN");
    let loopback = listen.starts_with("127.") || listen.starts_with("[::1]");
    if !loopback {
        let local = env
            .get("KEEPALIVE_LOCAL_LISTEN")
            .expect("a loopback listener for /sockets");
        assert!(local.starts_with("127."), "KEEPALIVE_LOCAL_LISTEN {local}");
        let config = env
            .get("KEEPALIVE_WEB_CONFIG_FILE")
            .expect("a web config on {listen}");
        let dir = Path::new(config).parent().unwrap().to_str().unwrap();
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == dir),
            "{config}: nothing mounted at {dir}"
        );
    }
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let p = &c[probe];
        match (p.get("httpGet"), p.get("exec")) {
            (Some(get), None) => {
                assert!(!loopback, "{probe}: the kubelet cannot reach {listen}");
                assert_eq!(get["scheme"], "HTTPS", "{probe}");
            }
            (None, Some(exec)) => {
                let cmd = strings(&exec["command"]);
                assert_eq!(
                    cmd[..2],
                    ["/usr/local/bin/keepalive-agent", "health"],
                    "{probe}"
                );
            }
            other => panic!("{probe}: {other:?}"),
        }
    }
}

/// The overlays (and the base) as `kubectl kustomize` renders them: valid
/// against the schemas, and nothing per-socket reachable from the network.
#[test]
fn kustomize_overlays_render_valid_and_keep_sockets_off_the_network() {
    require_validator();
    require_tool("kubectl", "apt-get install kubectl (cargo xtask setup)");
    let tmp = prometheus::temp_dir("keepalive-kustomize");
    for dir in [
        "kubernetes",
        "overlays/metrics-tls",
        "overlays/metrics-mtls",
        "overlays/loopback-only",
    ] {
        let (ok, out) = run(
            "kubectl",
            &["kustomize", deploy(dir).to_str().unwrap()],
            None,
        );
        assert!(ok, "kubectl kustomize {dir}:\n{out}");
        let rendered = tmp.join(dir.replace('/', "-") + ".yaml");
        std::fs::write(&rendered, &out).unwrap();
        let docs = yaml(&rendered);
        let mut api_files = Vec::new();
        for (i, d) in docs.iter().enumerate() {
            if d["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("monitoring.coreos.com/")
            {
                let endpoint = &d["spec"]["podMetricsEndpoints"][0];
                assert_eq!(endpoint["scheme"], "https", "{dir}: PodMonitor");
                assert!(
                    endpoint["basicAuth"]["password"]["name"].is_string(),
                    "{dir}"
                );
                continue;
            }
            let f = tmp.join(format!("{}-{i}.json", dir.replace('/', "-")));
            std::fs::write(&f, d.to_string()).unwrap();
            api_files.push(f);
        }
        for version in K8S_VERSIONS {
            let (ok, out) = validate(&api_files, version);
            assert!(
                ok && !out.contains("ERROR"),
                "{dir}: kubernetes-validate -k {version}:\n{out}"
            );
        }
        let ds = docs
            .iter()
            .find(|d| d["kind"] == "DaemonSet")
            .expect("a DaemonSet");
        assert_exposure(&ds["spec"]["template"]["spec"]["containers"][0]);
        eprintln!("kustomize {dir}: {} objects valid", docs.len());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

pub(crate) fn container_env(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}
