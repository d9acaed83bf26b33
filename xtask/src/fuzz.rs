//! `cargo xtask fuzz`: every libFuzzer target of `fuzz/` (the parsers of
//! bytes other processes, pods and clients control) built with nightly and
//! run for a bounded time from its corpus in the repository, under a
//! memory limit. A crash, a leak or a blow-up fails it, naming the input
//! libFuzzer kept (`fuzz/artifacts/<target>/`).

use std::{path::Path, time::Instant};

use anyhow::{Context as _, bail};

/// The most one allocation may take: a parser that asks more for a few
/// KiB of input sized it from the input, the blow-up a hostile input
/// causes (the agent's whole limit is 256 MiB).
const MALLOC_LIMIT_MB: u32 = 64;
/// The process's limit, address sanitizer's quarantine included.
const RSS_LIMIT_MB: u32 = 1024;

pub fn run(root: &Path, seconds: u64, only: &[String]) -> anyhow::Result<()> {
    let dir = root.join("fuzz");
    let targets = targets(&dir)?;
    for t in only {
        if !targets.contains(t) {
            bail!("no fuzz target {t}: the targets are {}", targets.join(", "));
        }
    }
    // No kernel programs in the library the targets link: its build
    // script would build them with the sanitizer's flags.
    let env = [("KEEPALIVE_WITHOUT_KERNEL_PROGRAMS", "1")];
    crate::step(
        "build the fuzz targets (nightly, address sanitizer)",
        || run_in(&dir, &["+nightly", "fuzz", "build", "-O"], &env),
    )?;
    for t in targets
        .iter()
        .filter(|t| only.is_empty() || only.contains(t))
    {
        // New inputs go to a scratch folder; the repository's corpus is
        // read only.
        let scratch = root.join("target/fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let seeds = dir.join("corpus").join(t);
        let started = Instant::now();
        let out = std::process::Command::new("cargo")
            .current_dir(&dir)
            .envs(env)
            .args(["+nightly", "fuzz", "run", "-O", t])
            .arg(&scratch)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                &format!("-rss_limit_mb={RSS_LIMIT_MB}"),
                &format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
                "-timeout=10",
                "-print_final_stats=1",
            ])
            .output()
            .with_context(|| format!("starting cargo fuzz run {t}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {t} failed after {:.0} s ({}); the input is kept under fuzz/artifacts/{t}/:\n{}",
                started.elapsed().as_secs_f64(),
                out.status,
                tail.join("\n")
            );
        }
        // libFuzzer's last status line: `#N DONE cov: … corp: … rss: …`.
        let done = log
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("DONE"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        eprintln!(
            "xtask: fuzz {t}: {:.0} s, {done}",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The `[[bin]]` targets of fuzz/Cargo.toml.
fn targets(dir: &Path) -> anyhow::Result<Vec<String>> {
    let manifest =
        std::fs::read_to_string(dir.join("Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    Ok(manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .filter(|n| n != "keepalive-agent-fuzz")
        .collect())
}

fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let status = std::process::Command::new("cargo")
        .current_dir(dir)
        .envs(env.iter().copied())
        .args(args)
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("cargo {}: {status}", args.join(" "));
    }
    Ok(())
}
