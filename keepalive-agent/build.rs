//! Builds the kernel programs (`keepalive-ebpf`) with aya-build (nightly,
//! bpfel target, bpf-linker) so that `include_bytes_aligned!` can embed them,
//! and records the git revision and rustc version for `build_info`.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    build_info();
    // The fuzz targets link the library and never load the programs; their
    // sanitizer flags would reach the nested eBPF build: an empty object.
    println!("cargo:rerun-if-env-changed=KEEPALIVE_WITHOUT_KERNEL_PROGRAMS");
    if std::env::var_os("KEEPALIVE_WITHOUT_KERNEL_PROGRAMS").is_some() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("keepalive-ebpf");
        std::fs::write(&out, b"").with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "keepalive-ebpf")
        .ok_or_else(|| anyhow!("keepalive-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
        .context("building the eBPF programs (needs nightly rust-src and bpf-linker: run `cargo xtask setup`)")
}

/// `KEEPALIVE_GIT_REVISION` (the commit, "unknown" outside a git checkout)
/// and `KEEPALIVE_RUSTC_VERSION` for `keepalive_agent_build_info`.
fn build_info() {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let revision =
        run("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = run(&rustc, &["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KEEPALIVE_GIT_REVISION={revision}");
    println!("cargo:rustc-env=KEEPALIVE_RUSTC_VERSION={rustc}");
    // A new commit is a new revision.
    if let Some(git_dir) = run("git", &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(head_ref) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
}
