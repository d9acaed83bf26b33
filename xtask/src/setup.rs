//! Makes a fresh Debian machine ready, idempotently, one line per step: the
//! nightly toolchain with rust-src and clippy (the eBPF crate is built and
//! linted with `-Z build-std=core`), bpf-linker built against nightly's own
//! LLVM (no system LLVM needed), and the Debian packages the tests drive.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::cmd;

const BPF_LINKER_VERSION: &str = "0.13";

/// cargo-fuzz, which runs the fuzz targets (libFuzzer, nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// (binary, Debian package) the build and the integration tests need.
const PACKAGES: &[(&str, &str)] = &[
    // containerd-client's build compiles containerd's protobufs.
    ("protoc", "protobuf-compiler"),
    // The pods suite runs real containers in a containerd of its own.
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("bpftool", "bpftool"),
    ("promtool", "prometheus"),
    ("tcpdump", "tcpdump"),
    ("systemd-analyze", "systemd"),
    // The secured endpoint is checked with curl (TLS, client certificates,
    // gzip); the man pages are rendered with groff.
    ("curl", "curl"),
    ("groff", "groff-base"),
    // The Kubernetes overlays are rendered with `kubectl kustomize`.
    ("kubectl", "kubectl"),
    // The advice suite runs real servers and clients in namespaces; their
    // packages' own services are kept from starting (policy-rc.d).
    ("redis-server", "redis-server"),
    ("nginx", "nginx"),
    ("postgres", "postgresql"),
    ("go", "golang-go"),
    // The idle-close suite runs a Node.js HTTP server (the machine image
    // ships Node 20 as `nodejs`; Debian's is 18).
    ("node", "nodejs"),
    // `cargo xtask image` builds the Dockerfile with buildah, on a Debian
    // base made with debootstrap when no registry can be reached.
    ("buildah", "buildah"),
    ("debootstrap", "debootstrap"),
    // The VM kernel matrix: virtme-ng boots kernels with QEMU and builds
    // its initramfs from busybox and the kernel's modules with depmod.
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("depmod", "kmod"),
];

/// virtme-ng, which boots a kernel over the host's filesystem.
const VIRTME_NG: &str = "1.42";

/// The offline Kubernetes schema validator the deployment tests use (it
/// ships the API schemas, so no network at test time).
const KUBERNETES_VALIDATE: &str = "1.37.0";

pub fn run() -> anyhow::Result<()> {
    nightly()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages()?;
    python_packages()
}

fn python_packages() -> anyhow::Result<()> {
    kubernetes_validate()?;
    virtme_ng()
}

fn virtme_ng() -> anyhow::Result<()> {
    let installed = cmd::output("vng", &["--version"]).unwrap_or_default();
    pip_install("virtme-ng", VIRTME_NG, &installed)
}

fn kubernetes_validate() -> anyhow::Result<()> {
    let installed =
        cmd::output("python3", &["-m", "kubernetes_validate", "--version"]).unwrap_or_default();
    pip_install("kubernetes-validate", KUBERNETES_VALIDATE, &installed)
}

/// `pip install package==version`, unless the `installed` version line
/// already names that version.
fn pip_install(package: &str, version: &str, installed: &str) -> anyhow::Result<()> {
    if installed.trim().ends_with(version) {
        eprintln!("setup: {package} {version} present");
        return Ok(());
    }
    let spec = format!("{package}=={version}");
    crate::step(&format!("pip install {spec}"), || {
        cmd::run("python3", &["-m", "pip", "install", "--quiet", &spec])
    })
}

fn nightly() -> anyhow::Result<()> {
    if cmd::output("rustup", &["run", "nightly", "rustc", "--version"]).is_err() {
        crate::step("install the nightly toolchain", || {
            cmd::run(
                "rustup",
                &["toolchain", "install", "nightly", "--profile", "minimal"],
            )
        })?;
    }
    let installed = cmd::output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )?;
    // rust-src to build the eBPF crate's core, clippy to lint it.
    for component in ["rust-src", "clippy"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("setup: nightly {component} present");
            continue;
        }
        crate::step(&format!("add {component} to nightly"), || {
            cmd::run(
                "rustup",
                &["component", "add", component, "--toolchain", "nightly"],
            )
        })?;
    }
    Ok(())
}

fn cargo_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

fn cargo_fuzz() -> anyhow::Result<()> {
    let bin = cargo_bin().join("cargo-fuzz");
    if let Ok(v) = cmd::output(bin.to_str().unwrap_or("cargo-fuzz"), &["--version"])
        && v.trim().ends_with(CARGO_FUZZ_VERSION)
    {
        eprintln!("setup: {} present", v.trim());
        return Ok(());
    }
    crate::step(
        &format!("cargo install cargo-fuzz {CARGO_FUZZ_VERSION}"),
        || {
            cmd::run(
                "cargo",
                &[
                    "install",
                    "cargo-fuzz",
                    "--locked",
                    "--version",
                    CARGO_FUZZ_VERSION,
                    "--force",
                ],
            )
        },
    )
}

fn bpf_linker() -> anyhow::Result<()> {
    let bin = cargo_bin().join("bpf-linker");
    if let Ok(v) = cmd::output(bin.to_str().unwrap_or("bpf-linker"), &["--version"])
        && v.split_whitespace()
            .nth(1)
            .is_some_and(|v| v.starts_with(BPF_LINKER_VERSION))
    {
        eprintln!("setup: {} present", v.trim());
        return Ok(());
    }
    let prefix = llvm_prefix()?;
    crate::step(
        "build bpf-linker against nightly's LLVM (about a minute)",
        || {
            let mut c = std::process::Command::new("cargo");
            c.args([
                "install",
                "bpf-linker",
                "--version",
                &format!("~{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                "llvm-22",
                "--force",
            ])
            .env("LLVM_PREFIX", &prefix);
            let status = c.status().context("starting cargo install")?;
            if !status.success() {
                bail!("cargo install bpf-linker: {status}");
            }
            Ok(())
        },
    )
}

/// A folder whose lib/ holds nightly's libLLVM under both the plain and
/// the versioned name: bpf-linker links against the first and, at run
/// time, looks for the second (without it, it only runs under `rustup run
/// nightly`).
fn llvm_prefix() -> anyhow::Result<PathBuf> {
    let sysroot = cmd::output("rustup", &["run", "nightly", "rustc", "--print", "sysroot"])?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-* in {} (nightly toolchain without LLVM?)",
                lib.display()
            )
        })?;
    // Beside cargo's bin (not in a clone's target/): the installed
    // bpf-linker keeps finding libLLVM after the clone is gone.
    let prefix = cargo_bin().with_file_name("keepalive-llvm-prefix");
    let dir = prefix.join("lib");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let versioned = llvm.file_name().context("libLLVM has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), versioned] {
        let link = dir.join(name);
        let _ = fs::remove_file(&link);
        symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(prefix)
}

/// On PATH, in sbin, or in a versioned PostgreSQL bin directory (Debian
/// keeps the server's binaries in `/usr/lib/postgresql/VERSION/bin`).
fn on_path(binary: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let postgres = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"));
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .chain(postgres)
        .any(|d| d.join(binary).is_file())
}

/// Debian's way to keep packages' services from starting at install:
/// `/usr/sbin/policy-rc.d` exiting 101, present only while apt runs.
struct NoServiceStarts {
    created: bool,
}

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new() -> anyhow::Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(NoServiceStarts { created: false });
        }
        fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))?;
        Ok(NoServiceStarts { created: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "setup: Debian packages present ({})",
            PACKAGES.iter().map(|p| p.1).collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {}: install them as root (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    crate::step(&format!("apt-get install {}", missing.join(" ")), || {
        let _no_starts = NoServiceStarts::new()?;
        cmd::run("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        cmd::run_env(
            "apt-get",
            &args,
            &[("DEBIAN_FRONTEND", std::ffi::OsStr::new("noninteractive"))],
        )
    })
}
