//! What a kubelet does with a DaemonSet's container, done by the test
//! against a real containerd ([`crate::containerd`]): the manifests are
//! rendered with `kubectl kustomize` and the container spec read from the
//! rendered DaemonSet, then translated into the runtime's terms as the
//! kubelet and containerd's CRI plugin would: namespaces, capabilities,
//! seccomp, read-only root, user, cgroup limits, mounts (a Secret is a
//! folder of files), environment with `$(VAR)` and downward-API values,
//! command and args over the image's entrypoint and cmd, and the probes.
//!
//! `ctr` cannot say everything CRI can: what this translation cannot
//! honour is listed in [`Plan::not_honoured`] for the test to print, and
//! what it can is checked afterwards against the kernel's view of the
//! container's process ([`Plan::assert_applied`]).

mod applied;
pub mod caps;
mod mounts;
pub mod probe;
pub mod values;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::oci::ImageConfig;
use caps::{RUNTIME_DEFAULT_CAPS, cap_bit, cap_mask};
use probe::Probe;

/// The node the pod runs on, as the downward API names it.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    /// `status.hostIP`: this machine's first global IPv4 address.
    pub ip: IpAddr,
}

impl Node {
    pub fn this() -> Node {
        let out = Command::new("ip")
            .args(["-j", "-4", "addr", "show", "scope", "global"])
            .output()
            .expect("running ip");
        let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j addr");
        let ip = links
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .find_map(|a| a["local"].as_str()?.parse().ok())
            .expect("this machine has no global IPv4 address to be the node's (status.hostIP)");
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        Node { name, ip }
    }
}

/// Every object `kubectl kustomize DIR` renders, as JSON.
pub fn render(dir: &Path) -> Vec<Value> {
    let kustomize = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl (Debian package kubectl; cargo xtask setup installs it)");
    assert!(
        kustomize.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&kustomize.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running python3 with PyYAML");
    use std::io::Write as _;
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&kustomize.stdout)
        .expect("writing to python3");
    let out = python.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "PyYAML could not read kustomize's output"
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

/// Where the pod's volumes come from on this machine: a hostPath the test
/// replaces (the runtime socket is its own containerd's), and each
/// Secret's folder of files.
#[derive(Default)]
pub struct Volumes {
    pub host_paths: BTreeMap<String, PathBuf>,
    pub secrets: BTreeMap<String, PathBuf>,
}

/// The pod's spec and its container, as the kubelet hands them to the runtime.
pub struct Plan {
    /// `ctr run` flags, before the image.
    pub flags: Vec<String>,
    /// The image as the kubelet names it (`docker.io/library/…`).
    pub image: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The pod's cgroup (cgroupfs driver); the container's is below it.
    pub pod_cgroup: String,
    pub memory_limit: Option<u64>,
    pub grace: Duration,
    pub probes: Vec<Probe>,
    /// Capabilities the process's bounding set must hold, exactly.
    pub capabilities: Vec<String>,
    pub run_as: Option<(u32, u32)>,
    pub host_network: bool,
    pub host_pid: bool,
    pub read_only_root: bool,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    /// Fields this translation cannot honour, each with why.
    pub not_honoured: Vec<String>,
    /// Fields that are the scheduler's or the API server's, not the
    /// runtime's: named, not run.
    pub not_runtime: Vec<String>,
}

/// The image reference as the kubelet resolves it.
pub fn qualified(image: &str) -> String {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') => image.to_string(),
        Some(_) => format!("docker.io/{image}"),
        None => format!("docker.io/library/{image}"),
    }
}

impl Plan {
    /// Translates the DaemonSet's pod spec and its container `name`.
    pub fn new(
        daemonset: &Value,
        name: &str,
        image: &ImageConfig,
        node: &Node,
        volumes: &Volumes,
        pod_uid: &str,
    ) -> Plan {
        let pod = &daemonset["spec"]["template"]["spec"];
        let container = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("the DaemonSet has no container {name}"));
        let mut plan = Plan {
            flags: Vec::new(),
            image: qualified(container["image"].as_str().expect("the container's image")),
            argv: Vec::new(),
            env: BTreeMap::new(),
            pod_cgroup: String::new(),
            memory_limit: None,
            grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30)),
            probes: Probe::all_of(container),
            capabilities: Vec::new(),
            run_as: None,
            host_network: pod["hostNetwork"] == true,
            host_pid: pod["hostPID"] == true,
            read_only_root: false,
            no_new_privileges: false,
            seccomp: false,
            not_honoured: Vec::new(),
            not_runtime: Vec::new(),
        };
        plan.pod_fields(pod);
        plan.environment(container, node, daemonset);
        plan.command(container, image);
        plan.security(container, image);
        plan.resources(container, pod_uid);
        plan.mounts(pod, container, volumes);
        plan
    }

    fn pod_fields(&mut self, pod: &Value) {
        if self.host_network {
            self.flags.push("--net-host".into());
        }
        if self.host_pid {
            // CRI leaves the PID namespace out of the spec; ctr can only
            // join one: the node's, which this test process is in.
            self.flags.extend([
                "--with-ns".into(),
                format!("pid:/proc/{}/ns/pid", std::process::id()),
            ]);
        }
        if pod["hostIPC"] == true {
            self.not_honoured
                .push("hostIPC: ctr cannot share the node's IPC namespace".into());
        }
        for f in [
            "dnsPolicy",
            "priorityClassName",
            "nodeSelector",
            "tolerations",
            "serviceAccountName",
            "affinity",
        ] {
            if !pod[f].is_null() {
                self.not_runtime.push(format!("{f}: {}", pod[f]));
            }
        }
        if pod["automountServiceAccountToken"] != false {
            self.not_honoured
                .push("automountServiceAccountToken: no API server to mint a token".into());
        }
    }

    /// The environment in order, each value expanded from those before it
    /// and the downward API filled as the kubelet does for a hostNetwork pod.
    fn environment(&mut self, container: &Value, node: &Node, daemonset: &Value) {
        for e in container["env"].as_array().into_iter().flatten() {
            let key = e["name"].as_str().expect("an env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                values::expand(v, &self.env)
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "status.hostIP" | "status.podIP" => node.ip.to_string(),
                    "spec.nodeName" => node.name.clone(),
                    "metadata.namespace" => daemonset["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    other => {
                        self.not_honoured
                            .push(format!("env {key}: fieldRef {other} is not filled"));
                        continue;
                    }
                }
            } else {
                self.not_honoured
                    .push(format!("env {key}: {} is not filled", e["valueFrom"]));
                continue;
            };
            self.env.insert(key.clone(), value.clone());
            self.flags
                .extend(["--env".into(), format!("{key}={value}")]);
        }
    }

    /// Kubernetes' rule: `command` replaces the entrypoint (and drops the
    /// image's cmd), `args` replaces the cmd.
    fn command(&mut self, container: &Value, image: &ImageConfig) {
        let list = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(|s| values::expand(s, &self.env)))
                    .collect()
            })
        };
        let command = list(&container["command"]);
        let args = list(&container["args"]);
        self.argv = match (command, args) {
            (Some(c), Some(a)) => [c, a].concat(),
            (Some(c), None) => c,
            (None, Some(a)) => [image.entrypoint.clone(), a].concat(),
            (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
        };
    }

    fn security(&mut self, container: &Value, image: &ImageConfig) {
        let sc = &container["securityContext"];
        if sc["privileged"] == true {
            self.flags.push("--privileged".into());
        }
        // Kubernetes' default is to allow escalation; containerd's
        // default spec sets no_new_privs.
        self.no_new_privileges = sc["allowPrivilegeEscalation"] == false;
        if !self.no_new_privileges {
            self.flags.push("--allow-new-privs".into());
        }
        if sc["readOnlyRootFilesystem"] == true {
            self.read_only_root = true;
            self.flags.push("--read-only".into());
        }
        // ctr has no --user: the image's USER is what runs, honoured only
        // when it is what the manifest asks.
        let wanted = (
            sc["runAsUser"].as_u64().map(|u| u as u32),
            sc["runAsGroup"].as_u64().map(|g| g as u32),
        );
        let image_user = image.numeric_user();
        match (wanted, image_user) {
            ((None, None), _) => {}
            ((u, g), Some((iu, ig))) if u.unwrap_or(iu) == iu && g.unwrap_or(ig) == ig => {
                self.run_as = Some((iu, ig));
            }
            _ => self.not_honoured.push(format!(
                "runAsUser/runAsGroup {wanted:?}: ctr runs the image's USER {:?}",
                image.user
            )),
        }
        match sc["seccompProfile"]["type"].as_str() {
            // containerd's default profile (contrib/seccomp), the one its
            // CRI plugin applies for RuntimeDefault.
            Some("RuntimeDefault") => {
                self.seccomp = true;
                self.flags.push("--seccomp".into());
            }
            None | Some("Unconfined") => {}
            Some(other) => self
                .not_honoured
                .push(format!("seccompProfile {other}: not applied")),
        }
        match sc["appArmorProfile"]["type"].as_str() {
            None | Some("Unconfined") => {}
            Some(other) => self
                .not_honoured
                .push(format!("appArmorProfile {other}: not applied")),
        }
        if !sc["seLinuxOptions"].is_null() {
            self.not_honoured
                .push("seLinuxOptions: not applied (no SELinux here)".into());
        }
        self.capabilities(&sc["capabilities"]);
    }

    /// The runtime's defaults, minus `drop` (ALL: every one), plus `add`;
    /// an added capability the machine's own bounding set lacks cannot be
    /// given to any container here: named, not added.
    fn capabilities(&mut self, caps: &Value) {
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .map(|s| s.trim_start_matches("CAP_").to_string())
                .collect()
        };
        let (add, drop) = (names(&caps["add"]), names(&caps["drop"]));
        let machine = cap_mask(std::process::id(), "CapBnd");
        let mut set: Vec<String> = RUNTIME_DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.iter().any(|d| d == "ALL" || d == c))
            .collect();
        for c in &add {
            if machine >> cap_bit(c) & 1 == 0 {
                self.not_honoured.push(format!(
                    "capability {c}: this machine's own bounding set lacks it (runc: \"unable to apply caps\")"
                ));
            } else if !set.contains(c) {
                set.push(c.clone());
            }
        }
        for c in RUNTIME_DEFAULT_CAPS {
            if !set.iter().any(|s| s == c) {
                self.flags.extend(["--cap-drop".into(), format!("CAP_{c}")]);
            }
        }
        for c in &set {
            if !RUNTIME_DEFAULT_CAPS.contains(&c.as_str()) {
                self.flags.extend(["--cap-add".into(), format!("CAP_{c}")]);
            }
        }
        set.sort();
        self.capabilities = set;
    }

    /// Limits as the kubelet sets them, in a cgroupfs-driver pod cgroup.
    fn resources(&mut self, container: &Value, pod_uid: &str) {
        let r = &container["resources"];
        if let Some(m) = r["limits"]["memory"].as_str() {
            let b = values::bytes(m).expect("a memory limit");
            self.memory_limit = Some(b);
            self.flags.extend(["--memory-limit".into(), b.to_string()]);
        }
        if let Some(c) = r["limits"]["cpu"].as_str() {
            let cores = values::cores(c).expect("a CPU limit");
            self.flags.extend(["--cpus".into(), cores.to_string()]);
        }
        if let Some(c) = r["requests"]["cpu"].as_str() {
            let shares = (values::cores(c).expect("a CPU request") * 1024.0) as u64;
            self.flags
                .extend(["--cpu-shares".into(), shares.max(2).to_string()]);
        }
        let qos = if r["limits"].is_null() && r["requests"].is_null() {
            "besteffort"
        } else if r["limits"] == r["requests"] {
            "guaranteed"
        } else {
            "burstable"
        };
        // Guaranteed pods sit directly under kubepods.
        self.pod_cgroup = match qos {
            "guaranteed" => format!("/kubepods/pod{pod_uid}"),
            q => format!("/kubepods/{q}/pod{pod_uid}"),
        };
    }
}
