//! Running child processes with their output streamed, and failures that
//! read as sentences ("running cargo build …: exit status 101").

use std::{
    ffi::OsStr,
    fs::File,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_env(program, args, &[])
}

pub fn run_env(program: &str, args: &[&str], env: &[(&str, &OsStr)]) -> anyhow::Result<()> {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let status = c.status().with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("running {program} {}: {status}", args.join(" "));
    }
    Ok(())
}

/// Runs `program` in `dir`.
pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!(
            "running {program} {} in {}: {status}",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}

/// Runs `program` with its stdout and stderr written to `log`.
pub fn output_to(program: &str, args: &[&str], log: &Path) -> anyhow::Result<()> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("running {program} {}: {status}", args.join(" "));
    }
    Ok(())
}

/// Output of a command that must succeed.
pub fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "running {program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces this process with `program` (the agent keeps the terminal and
/// receives Ctrl-C directly).
pub fn exec(program: &str, args: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = Command::new(program).args(args).exec();
    Err(err).with_context(|| format!("starting {program}"))
}
