//! `cargo xtask image`: the runtime image built from the shipped
//! `deploy/docker/Dockerfile`, as a user builds it (`docker build`), with
//! whichever standard builder the machine has, written as an OCI archive.
//!
//! No registry may be reachable: a base image the builder lacks is made
//! locally, `debootstrap --variant=minbase` of the Debian suite the `FROM`
//! line names, slimmed as Debian's `-slim` images are, and imported under
//! that exact name, so the Dockerfile itself has no build step of ours.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cmd;

pub const DOCKERFILE: &str = "deploy/docker/Dockerfile";
const IGNORE_FILE: &str = "deploy/docker/Dockerfile.dockerignore";
const MIRROR: &str = "http://deb.debian.org/debian";

/// The image's name, as deploy/kubernetes/kustomization.yaml sets it.
pub fn tag() -> String {
    format!("keepalive-agent:{}", env!("CARGO_PKG_VERSION"))
}

/// Where the archive is written (the deploy suite reads it from here).
pub fn archive(root: &Path) -> PathBuf {
    root.join(format!(
        "target/image/keepalive-agent-{}.oci.tar",
        env!("CARGO_PKG_VERSION")
    ))
}

/// The image builders, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Builder {
    /// A running Docker daemon.
    Docker,
    Podman,
    Buildah,
}

impl Builder {
    fn program(self) -> &'static str {
        match self {
            Builder::Docker => "docker",
            Builder::Podman => "podman",
            Builder::Buildah => "buildah",
        }
    }

    fn find() -> anyhow::Result<Builder> {
        let answers = |p: &str, args: &[&str]| {
            Command::new(p)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if answers("docker", &["info"]) {
            return Ok(Builder::Docker);
        }
        for b in [Builder::Podman, Builder::Buildah] {
            if answers(b.program(), &["--version"]) {
                return Ok(b);
            }
        }
        bail!(
            "no image builder: a running Docker, or podman or buildah (Debian packages; `cargo xtask setup` installs buildah)"
        )
    }

    /// The builder's command with its storage: buildah and podman keep
    /// images in the `vfs` driver unless STORAGE_DRIVER says otherwise
    /// (it works wherever overlay mounts do not, inside containers too).
    fn command(self) -> Command {
        let mut c = Command::new(self.program());
        if self != Builder::Docker && std::env::var_os("STORAGE_DRIVER").is_none() {
            c.env("STORAGE_DRIVER", "vfs");
        }
        c
    }

    fn run(self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting {}", self.program()))?;
        if !out.status.success() {
            bail!(
                "{} {}: {}\n{}",
                self.program(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn has_image(self, name: &str) -> bool {
        let args: &[&str] = match self {
            Builder::Docker | Builder::Podman => &["image", "inspect", name],
            Builder::Buildah => &["inspect", "--type", "image", name],
        };
        self.run(args).is_ok()
    }
}

/// The base image a Dockerfile's first `FROM` names, fully qualified as
/// the builders store it (`debian:bookworm-slim` is
/// `docker.io/library/debian:bookworm-slim`).
fn base_image(dockerfile: &str) -> anyhow::Result<String> {
    let from = dockerfile
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("FROM "))
        .context("the Dockerfile has no FROM line")?;
    let name = from.split_whitespace().next().unwrap_or_default();
    let qualified = match name.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
        None => format!("docker.io/library/{name}"),
    };
    Ok(qualified)
}

/// The Debian suite of a `debian:<suite>[-slim]` base, the only kind that
/// can be made here without a registry.
fn debian_suite(base: &str) -> anyhow::Result<String> {
    let tag = base
        .strip_prefix("docker.io/library/debian:")
        .with_context(|| {
            format!("the base image {base} is missing and only a Debian base can be made locally")
        })?;
    Ok(tag.trim_end_matches("-slim").to_string())
}

/// Makes `base` from debootstrap and imports it under that name.
fn make_base(root: &Path, builder: Builder, base: &str) -> anyhow::Result<()> {
    let suite = debian_suite(base)?;
    let dir = root.join("target/image/base");
    let rootfs = dir.join("rootfs");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    crate::step(
        &format!("debootstrap --variant=minbase {suite} (the base {base} is missing)"),
        || {
            cmd::output_to(
                "debootstrap",
                &[
                    "--variant=minbase",
                    &suite,
                    rootfs.to_str().context("a UTF-8 path")?,
                    MIRROR,
                ],
                &dir.join("debootstrap.log"),
            )
            .with_context(|| format!("see {}", dir.join("debootstrap.log").display()))
        },
    )?;
    // What Debian's -slim images leave out: documentation, manuals,
    // translations, package lists and caches.
    for sub in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/cache/debconf",
        "var/log",
    ] {
        let p = rootfs.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p)?;
            fs::create_dir_all(&p)?;
        }
    }
    let tar = dir.join("rootfs.tar");
    cmd::run(
        "tar",
        &[
            "--numeric-owner",
            "-C",
            rootfs.to_str().context("a UTF-8 path")?,
            "-cf",
            tar.to_str().context("a UTF-8 path")?,
            ".",
        ],
    )?;
    let tar = tar.to_str().context("a UTF-8 path")?;
    match builder {
        Builder::Docker | Builder::Podman => {
            builder.run(&["import", "--change", "CMD [\"bash\"]", tar, base])?;
        }
        Builder::Buildah => {
            let id = builder.run(&["from", "scratch"])?.trim().to_string();
            builder.run(&["add", &id, tar, "/"])?;
            let made_by = format!("debootstrap --variant=minbase {suite} (cargo xtask image)");
            builder.run(&[
                "config",
                "--cmd",
                "bash",
                "--env",
                PATH_ENV,
                "--created-by",
                &made_by,
                &id,
            ])?;
            builder.run(&["commit", "-q", "--rm", &id, base])?;
        }
    }
    fs::remove_dir_all(&dir)?;
    Ok(())
}

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the image from the shipped Dockerfile and writes the archive.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let builder = Builder::find()?;
    let dockerfile = fs::read_to_string(root.join(DOCKERFILE))
        .with_context(|| format!("reading {DOCKERFILE}"))?;
    let base = base_image(&dockerfile)?;
    if builder.has_image(&base) {
        eprintln!("xtask: base image {base} present in {}", builder.program());
    } else {
        make_base(root, builder, &base)?;
    }
    let tag = tag();
    crate::step(
        &format!("{} build -f {DOCKERFILE} -t {tag}", builder.program()),
        || {
            let args: Vec<&str> = match builder {
                Builder::Docker => vec!["build", "-f", DOCKERFILE, "-t", &tag, "."],
                // --pull=never: the base is local. The ignore file beside
                // the Dockerfile is BuildKit's convention; buildah and
                // podman take it by name.
                // --layers: a layer per step, as docker makes them.
                Builder::Podman | Builder::Buildah => vec![
                    "build",
                    "--pull=never",
                    "--layers",
                    "--ignorefile",
                    IGNORE_FILE,
                    "-f",
                    DOCKERFILE,
                    "-t",
                    &tag,
                    ".",
                ],
            };
            builder.run(&args).map(drop)
        },
    )?;
    let out = archive(root);
    fs::create_dir_all(out.parent().context("the archive's folder")?)?;
    let _ = fs::remove_file(&out);
    let out_str = out.to_str().context("a UTF-8 path")?;
    match builder {
        // Docker 25+ writes an OCI layout in its archive.
        Builder::Docker => builder.run(&["save", "-o", out_str, &tag])?,
        Builder::Podman | Builder::Buildah => builder.run(&[
            "push",
            "-q",
            "--compression-format",
            "gzip",
            &format!("localhost/{tag}"),
            &format!("oci-archive:{out_str}:{tag}"),
        ])?,
    };
    print_summary(&out)?;
    Ok(out)
}

/// One member of the archive, read with tar.
fn member(archive: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(name)
        .output()
        .context("starting tar")?;
    if !out.status.success() {
        bail!("{} has no {name}", archive.display());
    }
    Ok(out.stdout)
}

fn blob(archive: &Path, digest: &str) -> anyhow::Result<Value> {
    let path = format!("blobs/{}", digest.replacen(':', "/", 1));
    Ok(serde_json::from_slice(&member(archive, &path)?)?)
}

/// The image's size, and each layer with the Dockerfile step that made it.
fn print_summary(archive: &Path) -> anyhow::Result<()> {
    let index: Value = serde_json::from_slice(&member(archive, "index.json")?)?;
    let manifest = blob(
        archive,
        index["manifests"][0]["digest"]
            .as_str()
            .context("index.json names no manifest")?,
    )?;
    let config = blob(
        archive,
        manifest["config"]["digest"]
            .as_str()
            .context("the manifest names no config")?,
    )?;
    let steps: Vec<&str> = config["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["empty_layer"].as_bool() != Some(true))
        .map(|h| h["created_by"].as_str().unwrap_or("?"))
        .collect();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let total: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    eprintln!(
        "xtask: image {} ({}): {} layers, {:.1} MiB compressed, archive {:.1} MiB",
        tag(),
        archive.display(),
        layers.len(),
        mib(total),
        mib(fs::metadata(archive)?.len())
    );
    for (i, l) in layers.iter().enumerate() {
        eprintln!(
            "xtask:   layer {i}: {:>6.1} MiB  {}",
            mib(l["size"].as_u64().unwrap_or(0)),
            steps.get(i).copied().unwrap_or("(base)")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_base_as_the_builders_store_it() {
        let f = "# comment\nFROM debian:bookworm-slim\nCOPY a b\n";
        assert_eq!(
            base_image(f).unwrap(),
            "docker.io/library/debian:bookworm-slim"
        );
        assert_eq!(
            base_image("FROM gcr.io/distroless/cc-debian12 AS run\n").unwrap(),
            "gcr.io/distroless/cc-debian12"
        );
        assert_eq!(
            base_image("FROM library/debian:12\n").unwrap(),
            "docker.io/library/debian:12"
        );
        assert!(base_image("COPY a b\n").is_err());
    }

    #[test]
    fn only_a_debian_base_is_made_locally() {
        assert_eq!(
            debian_suite("docker.io/library/debian:bookworm-slim").unwrap(),
            "bookworm"
        );
        assert_eq!(
            debian_suite("docker.io/library/debian:trixie").unwrap(),
            "trixie"
        );
        assert!(debian_suite("gcr.io/distroless/cc-debian12").is_err());
    }
}
