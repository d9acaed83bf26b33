//! A container's volume mounts as the kubelet makes them: hostPath (its
//! `type` checked first) and Secret (a folder of files with its mode).

use std::{
    collections::BTreeMap,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use serde_json::Value;

use super::{Plan, Volumes};

impl Plan {
    pub(super) fn mounts(&mut self, pod: &Value, container: &Value, volumes: &Volumes) {
        let pod_volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().expect("a volume name").to_string(), v))
            .collect();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().expect("a mount's volume");
            let v = pod_volumes
                .get(name)
                .unwrap_or_else(|| panic!("volumeMount {name} names no volume"));
            let source = if let Some(path) = v["hostPath"]["path"].as_str() {
                let source = volumes
                    .host_paths
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(path));
                check_host_path(&source, v["hostPath"]["type"].as_str().unwrap_or(""));
                source
            } else if let Some(secret) = v["secret"]["secretName"].as_str() {
                let dir = volumes
                    .secrets
                    .get(secret)
                    .unwrap_or_else(|| panic!("the test has no files for Secret {secret}"));
                let mode = v["secret"]["defaultMode"].as_u64().unwrap_or(0o644) as u32;
                for f in std::fs::read_dir(dir).expect("a Secret's folder").flatten() {
                    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode))
                        .expect("a Secret file's mode");
                }
                dir.clone()
            } else {
                self.not_honoured.push(format!(
                    "volume {name}: only hostPath and secret are mounted"
                ));
                continue;
            };
            let mut options = vec!["rbind", if m["readOnly"] == true { "ro" } else { "rw" }];
            match m["mountPropagation"].as_str() {
                Some("HostToContainer") => options.push("rslave"),
                Some("Bidirectional") => options.push("rshared"),
                _ => options.push("rprivate"),
            }
            let dst = m["mountPath"].as_str().expect("a mountPath");
            self.flags.extend([
                "--mount".into(),
                format!(
                    "type=bind,src={},dst={dst},options={}",
                    source.display(),
                    options.join(":")
                ),
            ]);
        }
    }
}

/// hostPath's `type` check, as the kubelet makes it before the mount.
fn check_host_path(path: &Path, kind: &str) {
    let meta = std::fs::metadata(path);
    match kind {
        "DirectoryOrCreate" => std::fs::create_dir_all(path).expect("a DirectoryOrCreate hostPath"),
        "Directory" => assert!(
            meta.is_ok_and(|m| m.is_dir()),
            "hostPath {} is not a directory",
            path.display()
        ),
        "Socket" => assert!(
            meta.is_ok_and(|m| m.file_type().is_socket()),
            "hostPath {} is not a socket",
            path.display()
        ),
        "File" => assert!(
            meta.is_ok_and(|m| m.is_file()),
            "hostPath {} is not a file",
            path.display()
        ),
        "" => {}
        other => panic!("hostPath type {other} is not checked by this test's kubelet"),
    }
}
