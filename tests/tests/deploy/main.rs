//! The fleet deployment files in `deploy/`, checked by the tools that will
//! consume them and against the real agent:
//!
//! - the alert rules pass `promtool check rules`, and `promtool test rules`
//!   shows every alert both firing and staying quiet;
//! - a real Prometheus server scraping a running agent through real
//!   keepalive traffic (answered probes, a dead peer killed by keepalive, a
//!   socket at risk) answers every dashboard query with data, and fires
//!   KeepaliveConnectionTimeouts from the rules file as shipped;
//! - the Kubernetes manifests validate against the API schemas, offline;
//! - the DaemonSet as rendered, each overlay, runs from the image `cargo
//!   xtask image` built, under a real containerd with the manifest's own
//!   security context, mounts, environment and probes (`as_shipped`);
//! - the systemd unit passes `systemd-analyze verify`;
//! - the privileges both give the agent (capabilities, user) are enough for
//!   everything it does, and the one beyond the brief's list is needed.
//!
//! YAML is read through python3's PyYAML, which `kubernetes-validate`
//! (the schema validator) depends on.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keepalive_tests::{
    agent::{self, Agent},
    metrics::value,
    middlebox::{self, Forget, Middlebox},
    prometheus::{self, Prometheus, sample_value},
    scenario,
    sock::{self, FAST},
    world::{self, Netns, Pair},
};
use serde_json::Value;

const VALIDATOR_INSTALL: &str = "python3 -m pip install kubernetes-validate==1.37.0";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs a command: (success, stdout + stderr).
fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(program);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {program} {}: {e}", args.join(" ")));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Panics with the install command unless `program` is on PATH.
fn require_tool(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()));
    assert!(found, "{program} not found on PATH: {install}");
}

/// Every document of a YAML file, as JSON.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running python3 ({VALIDATOR_INSTALL} brings PyYAML): {e}"));
    assert!(
        out.status.success(),
        "reading {} with python3 + PyYAML ({VALIDATOR_INSTALL} brings PyYAML): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

mod alerts;
mod as_shipped;
mod dashboard;
mod kubernetes;
mod privileges;
mod prometheus_e2e;
mod systemd;
mod web;
