//! An OCI image archive (`oci-archive`, as `cargo xtask image` writes it),
//! read with tar: the image's name and the process its config starts.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

/// What the image's config says about the process it runs.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    /// The name the archive's index gives it (`keepalive-agent:0.1.0`).
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `USER`, as written (`0:0`); empty for the default, root.
    pub user: String,
}

/// The archive `cargo xtask image` writes, which must exist.
pub fn built_archive() -> PathBuf {
    let path = std::env::var_os("KEEPALIVE_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "../target/image/keepalive-agent-{}.oci.tar",
                env!("CARGO_PKG_VERSION")
            ))
        });
    assert!(
        path.is_file(),
        "no image archive at {}: build it with `cargo xtask image` (cargo xtask test does)",
        path.display()
    );
    path
}

fn member(archive: &Path, name: &str) -> Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .expect("running tar");
    assert!(
        out.status.success(),
        "{} has no {name}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name} of {}: {e}", archive.display()))
}

fn blob(archive: &Path, digest: &Value) -> Value {
    let digest = digest.as_str().expect("a digest");
    member(archive, &format!("blobs/{}", digest.replacen(':', "/", 1)))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

impl ImageConfig {
    pub fn read(archive: &Path) -> ImageConfig {
        let index = member(archive, "index.json");
        let entry = &index["manifests"][0];
        let manifest = blob(archive, &entry["digest"]);
        let config = blob(archive, &manifest["config"]["digest"]);
        let c = &config["config"];
        ImageConfig {
            name: entry["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            user: c["User"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The (uid, gid) of `USER` when numeric; root when unset.
    pub fn numeric_user(&self) -> Option<(u32, u32)> {
        if self.user.is_empty() {
            return Some((0, 0));
        }
        let (u, g) = self.user.split_once(':').unwrap_or((&self.user, "0"));
        Some((u.parse().ok()?, g.parse().ok()?))
    }
}
