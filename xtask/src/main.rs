//! Every developer workflow of keepalive-agent, as one small binary
//! (`cargo xtask …`): set-up, build, run, lint, test. Nothing lives in shell
//! scripts that drift.

mod bench;
mod cmd;
mod fuzz;
mod image;
mod mixin;
mod setup;
mod vm;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "keepalive-agent developer workflows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks: nightly rust-src, bpf-linker, Debian packages.
    Setup,
    /// Set up, then build the agent (eBPF included) and the integration tests.
    Build,
    /// Build, then run the agent (as root); arguments after `--` go to `keepalive-agent run`.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// cargo fmt --check and clippy -D warnings (the kernel programs for
    /// bpfel), and the generated rules file up to date.
    Lint,
    /// Build the runtime image from deploy/docker/Dockerfile (docker,
    /// podman or buildah; a missing Debian base made with debootstrap) and
    /// write it as an OCI archive under target/image/.
    Image,
    /// Build the fuzz targets (fuzz/, nightly, libFuzzer) and run each for
    /// a bounded time from its corpus; a crash or memory blow-up fails.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Targets to run (all by default).
        targets: Vec<String>,
    },
    /// Render deploy/prometheus/keepalive-rules.yml from the mixin's
    /// template and config (deploy/prometheus/mixin/).
    Mixin,
    /// Benchmark exactness, overhead and scale (as root); prints figures
    /// beside their targets and writes JSON.
    Bench {
        /// Smaller steps (1k and 5k connections), for a quick look.
        #[arg(long)]
        quick: bool,
        /// Connection counts to step through instead (e.g. `25000,50000`).
        #[arg(long, value_delimiter = ',')]
        steps: Vec<usize>,
        /// Where to write the results (default target/bench/latest.json).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Earlier results to print ratios against.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Instead: a soak of this many minutes at 5000 probes/s, with
        /// namespaces churning and /metrics scraped every 5 s (30 for the
        /// full check; not part of CI).
        #[arg(long, value_name = "MINUTES")]
        soak: Option<u64>,
        /// Instead: only the idle node at each size (its window in seconds,
        /// 60 by default), for a look at the fleet's cost.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
        idle: Option<u64>,
    },
    /// Holds idle keepalive connections for the benchmark until stdin closes.
    #[command(hide = true)]
    BenchHold {
        #[arg(long)]
        conns: usize,
        /// Keepalive on with the namespace's sysctls (7200 s: no probe due).
        #[arg(long)]
        sysctl_timing: bool,
    },
    /// Build, then run the unit tests and the real-kernel integration tests
    /// (as root) on this machine's kernel and on the VM kernel matrix;
    /// arguments after `--` go to the host's integration test runner.
    Test {
        /// Kernels to test on: `host` and the matrix's (5.15, 6.1, 6.12).
        #[arg(long, value_delimiter = ',', default_value = "host,5.15,6.1,6.12")]
        kernels: Vec<String>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then boot the matrix's kernels (Debian's, and 5.15 from
    /// ../shared/kernels) in VMs (virtme-ng, software emulation) and run
    /// the real-kernel integration tests inside.
    VmTest {
        /// Kernels of the matrix (5.15, 6.1, 6.12); all by default.
        #[arg(
            long = "kernel",
            value_delimiter = ',',
            default_value = "5.15,6.1,6.12"
        )]
        kernels: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => {
            setup::run()?;
            build()
        }
        Command::Run { args } => {
            setup::run()?;
            build()?;
            require_root("running the agent")?;
            let mut all = vec!["run".to_string()];
            all.extend(args);
            cmd::exec("target/release/keepalive-agent", &all)
        }
        Command::Image => {
            setup::run()?;
            build()?;
            image::build(&root).map(drop)
        }
        Command::Fuzz { seconds, targets } => {
            setup::run()?;
            fuzz::run(&root, seconds, &targets)
        }
        Command::Lint => lint(&root),
        Command::Mixin => mixin::write(&root),
        Command::Bench {
            quick,
            steps,
            json,
            compare,
            soak,
            idle,
        } => {
            setup::run()?;
            build()?;
            match (soak, idle) {
                (Some(minutes), _) => bench::soak(minutes),
                (None, Some(seconds)) => bench::idle_only(seconds, quick),
                (None, None) => bench::run(quick, steps, json, compare),
            }
        }
        Command::BenchHold {
            conns,
            sysctl_timing,
        } => bench::hold(conns, sysctl_timing),
        Command::Test { kernels, args } => {
            // Refuse a misspelt kernel before minutes of building.
            let vms = kernels
                .iter()
                .filter(|k| *k != "host")
                .map(|k| vm::kernel(k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            setup::run()?;
            build()?;
            if kernels.iter().any(|k| k == "host") {
                // The deploy suite runs the shipped image under containerd.
                step("image", || image::build(&root))?;
                test(&root, &args)?;
                step("fuzz targets, 20 s each", || fuzz::run(&root, 20, &[]))?;
            }
            vm_tests(&root, &vms)
        }
        Command::VmTest { kernels } => {
            let vms = kernels
                .iter()
                .map(|k| vm::kernel(k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            setup::run()?;
            build()?;
            vm_tests(&root, &vms)
        }
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (BPF programs, network namespaces): run it as root");
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    step("build agent and kernel programs", || {
        cmd::run("cargo", &["build", "--release", "-p", "keepalive-agent"])
    })?;
    step("build integration tests", || {
        cmd::run(
            "cargo",
            &["build", "--release", "-p", "keepalive-tests", "--tests"],
        )
    })
}

fn lint(root: &std::path::Path) -> anyhow::Result<()> {
    step("rules rendered from the mixin", || mixin::check(root))?;
    step("cargo fmt --check", || {
        cmd::run("cargo", &["fmt", "--all", "--check"])
    })?;
    // The eBPF crate builds for bpfel only, with nightly's core.
    step("cargo clippy (kernel programs)", || {
        cmd::run_in(
            &root.join("keepalive-ebpf"),
            "cargo",
            &[
                "+nightly",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    step("cargo clippy", || {
        cmd::run(
            "cargo",
            &[
                "clippy",
                "--release",
                "--workspace",
                "--exclude",
                "keepalive-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    })
}

fn test(root: &std::path::Path, args: &[String]) -> anyhow::Result<()> {
    step("unit tests", || {
        cmd::run(
            "cargo",
            &[
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "keepalive-ebpf",
                "--exclude",
                "keepalive-tests",
            ],
        )
    })?;
    require_root("the real-kernel integration tests")?;
    let bin = root.join("target/release/keepalive-agent");
    let mut all: Vec<String> = [
        "test",
        "--release",
        "-p",
        "keepalive-tests",
        "--",
        "--test-threads=1",
    ]
    .map(String::from)
    .to_vec();
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    step("integration tests (real kernel)", || {
        cmd::run_env("cargo", &all, &[("KEEPALIVE_AGENT_BIN", bin.as_os_str())])
    })
}

/// Every kernel of `vms`, one VM after the other (two cores: one VM at a
/// time); all are run, and every failing kernel is named.
fn vm_tests(root: &std::path::Path, vms: &[&vm::Kernel]) -> anyhow::Result<()> {
    if vms.is_empty() {
        return Ok(());
    }
    require_root("the VM kernel matrix")?;
    let failed: Vec<String> = vms
        .iter()
        .filter_map(|k| {
            vm::run(root, k)
                .map_err(|e| {
                    eprintln!("xtask: {e:#}");
                    k.name.to_string()
                })
                .err()
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "integration tests failed on kernel(s) {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs one step with a progress line before and its duration after.
pub fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("xtask: {name}…");
    let started = Instant::now();
    let value = f().with_context(|| format!("step failed: {name}"))?;
    eprintln!(
        "xtask: {name}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(value)
}
