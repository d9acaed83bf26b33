//! The kernel matrix: the real-kernel integration tests under Debian's
//! other kernels and the ones `../shared/kernels` provides (lines Debian
//! does not carry), each booted with virtme-ng over this machine's own
//! filesystem (software emulation: KVM is not available here). The host's
//! binaries run unchanged inside; each kernel states the hook modes the
//! agent must pick there, so a silent fallback fails the run.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Where a kernel of the matrix comes from.
enum Source {
    /// A Debian image package: the newest whose name matches this
    /// `apt-cache search --names-only` pattern.
    Debian(&'static str),
    /// A kernel image in the shared folder beside the repository
    /// (`../shared/kernels/<file>`), built for the matrix.
    Shared(&'static str),
}

/// A kernel of the matrix and what the agent must do on it.
pub struct Kernel {
    pub name: &'static str,
    source: Source,
    /// `keepalive_timer` hook mode: 5.15, 6.1 and 6.12 permit fentry.
    timer_mode: &'static str,
    /// TC attachment: TCX links arrived in 6.6.
    tc_mode: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.15",
        source: Source::Shared("vmlinuz-5.15.215"),
        timer_mode: "fentry",
        tc_mode: "netlink",
    },
    Kernel {
        name: "6.1",
        source: Source::Debian(r"^linux-image-6\.1\.0-[0-9]+-amd64$"),
        timer_mode: "fentry",
        tc_mode: "netlink",
    },
    Kernel {
        name: "6.12",
        source: Source::Debian(r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"),
        timer_mode: "fentry",
        tc_mode: "tcx",
    },
];

/// The integration tests run in each VM, each suite with the test names it
/// is limited to (none: all): exact probe counts against the kernel's
/// TCPKeepAlive (loopback v4/v6, own netns), the ETIMEDOUT scenario in
/// namespaces, hook modes, every timeout cause, and the reset, blackhole
/// and peer reset after idle through a real conntrack middlebox (the path
/// learning on top is the same code on every kernel: host only, as the
/// emulated VMs take ~30 s per agent start); a server's idle close seen
/// from both ends (the peer's FIN, the stale reuse's RST received and the
/// data after close's RST sent: from a time-wait socket, which the
/// tracepoint shows from 6.10 on, and from the full socket's abort on
/// data, on every kernel), an idle abort, and keepalive options set after
/// connect followed by the setsockopt hook.
const SUITES: &[(&str, &[&str])] = &[
    ("pipeline", &[]),
    ("causes", &[]),
    (
        "outputs",
        &["keepalive_options_set_after_connect_are_in_sockets_at_once"],
    ),
    (
        "middlebox",
        &[
            "idle_reset_v4",
            "idle_reset_v6",
            "idle_blackhole_then_retransmit_timeout",
            "an_active_connection_reset_by_its_peer_is_a_peer_reset",
        ],
    ),
    (
        "idle_close",
        &[
            "redis_idle_close_then_pool_reuse_v4",
            "redis_idle_close_then_pool_reuse_abort_on_data",
            "a_server_aborting_idle_connections_is_an_idle_abort",
        ],
    ),
];

/// How long one VM may run before it is declared hung.
const VM_TIMEOUT_S: u32 = 20 * 60;

pub fn kernel(name: &str) -> anyhow::Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let known: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
        format!(
            "no kernel {name} in the matrix (known: {})",
            known.join(", ")
        )
    })
}

/// Boots `kernel` and runs the integration test suites inside. The agent
/// and the tests must be built already.
pub fn run(root: &Path, kernel: &Kernel) -> anyhow::Result<()> {
    let vm_dir = root.join("target/vm");
    let vmlinuz = match kernel.source {
        Source::Debian(package) => {
            let unpacked = crate::step(&format!("kernel {}: fetch", kernel.name), || {
                fetch(&vm_dir, kernel.name, package)
            })?;
            find_vmlinuz(&unpacked)?
        }
        Source::Shared(file) => shared_kernel(root, kernel.name, file)?,
    };
    let suites = test_executables(root)?;
    let out = vm_dir.join("out").join(kernel.name);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let script = out.join("run.sh");
    fs::write(&script, script_text(root, kernel, &suites, &out))
        .with_context(|| format!("writing {}", script.display()))?;
    make_executable(&script)?;
    let console = out.join("console.log");
    let started = Instant::now();
    eprintln!(
        "xtask: kernel {}: booting {} (software emulation, a few minutes; console in {})…",
        kernel.name,
        vmlinuz.display(),
        console.display()
    );
    let vng = cmd::output_to(
        "timeout",
        &[
            &VM_TIMEOUT_S.to_string(),
            "vng",
            "--run",
            path_str(&vmlinuz)?,
            "--disable-kvm",
            "--force-9p",
            "-m",
            "2G",
            "-p",
            "2",
            "-v",
            "--rwdir",
            path_str(&out)?,
            "-e",
            path_str(&script)?,
        ],
        &console,
    );
    let log = fs::read_to_string(out.join("tests.log")).unwrap_or_default();
    for line in log.lines().filter(|l| is_summary(l)) {
        eprintln!("  [{}] {line}", kernel.name);
    }
    let status = fs::read_to_string(out.join("status")).unwrap_or_default();
    match status.trim() {
        "0" => {
            eprintln!(
                "xtask: kernel {}: all tests passed in {:.0} s",
                kernel.name,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        "" => bail!(
            "kernel {}: the VM ended without a test status ({}); see {}",
            kernel.name,
            vng.err()
                .map(|e| format!("{e:#}"))
                .unwrap_or("exited".into()),
            console.display()
        ),
        s => {
            eprintln!("{log}");
            bail!(
                "kernel {}: tests failed (status {s}); log in {}",
                kernel.name,
                out.join("tests.log").display()
            )
        }
    }
}

fn is_summary(line: &str) -> bool {
    line.starts_with("test result:")
        || line.contains("FAILED")
        || line.starts_with("suite ")
        || line.starts_with("kernel ")
}

/// The script run inside the VM: each suite's test binary with the hook
/// modes this kernel must show, output to `tests.log`, and a status file
/// the host reads (vng's own exit status does not carry the script's).
fn script_text(root: &Path, kernel: &Kernel, suites: &[(String, PathBuf)], out: &Path) -> String {
    let mut s = format!(
        "#!/bin/bash\n\
         # Generated by `cargo xtask vm-test`: runs inside the {name} VM.\n\
         cd {root}\n\
         export KEEPALIVE_AGENT_BIN={root}/target/release/keepalive-agent\n\
         export KEEPALIVE_EXPECT_TIMER_MODE={timer} KEEPALIVE_EXPECT_TC_MODE={tc}\n\
         export RUST_BACKTRACE=1\n\
         exec >{out}/tests.log 2>&1\n\
         echo \"kernel $(uname -r)\"\n\
         rc=0\n",
        name = kernel.name,
        root = root.display(),
        timer = kernel.timer_mode,
        tc = kernel.tc_mode,
        out = out.display(),
    );
    for (name, exe) in suites {
        let only = SUITES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, tests)| tests.join(" "))
            .unwrap_or_default();
        s.push_str(&format!(
            "start=$(date +%s)\n\
             {exe} --test-threads=1 --color=never --exact {only} || rc=1\n\
             echo \"suite {name}: $(( $(date +%s) - start )) s\"\n",
            exe = exe.display(),
        ));
    }
    s.push_str(&format!("echo $rc >{}/status\n", out.display()));
    s
}

/// The shared folder's kernel image `file`: `../shared/kernels` beside the
/// repository (where CI lays a copy of it too).
fn shared_kernel(root: &Path, name: &str, file: &str) -> anyhow::Result<PathBuf> {
    let path = root.join("../shared/kernels").join(file);
    if !path.is_file() {
        bail!(
            "kernel {name}: no image at {} (the matrix takes this kernel from the shared \
             folder beside the repository; `--kernels` without {name} skips it)",
            path.display()
        );
    }
    eprintln!("xtask: kernel {name}: {}", path.display());
    Ok(path)
}

/// The newest image package matching `pattern`, downloaded and unpacked
/// once into `target/vm/<package>` (nothing is installed).
fn fetch(vm_dir: &Path, name: &str, pattern: &str) -> anyhow::Result<PathBuf> {
    let package = newest_package(name, pattern)?;
    let dir = vm_dir.join(&package);
    if dir.join("boot").is_dir() {
        eprintln!("xtask: kernel {name}: {package} (cached)");
        return Ok(dir);
    }
    let download = vm_dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    eprintln!("xtask: kernel {name}: downloading {package}");
    cmd::run_in(&download, "apt-get", &["download", "-q", &package])?;
    let deb = fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let partial = vm_dir.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&partial);
    cmd::run("dpkg-deb", &["-x", path_str(&deb)?, path_str(&partial)?])?;
    fs::rename(&partial, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    let _ = fs::remove_dir_all(&download);
    Ok(dir)
}

fn newest_package(name: &str, pattern: &str) -> anyhow::Result<String> {
    let search = || cmd::output("apt-cache", &["search", "--names-only", pattern]);
    let mut found = search()?;
    if found.trim().is_empty() {
        // A fresh machine may have no package lists yet.
        cmd::run("apt-get", &["update", "-q"])?;
        found = search()?;
    }
    found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|package| !package.contains("-dbg"))
        .max_by_key(|package| version_key(package))
        .map(String::from)
        .with_context(|| format!("no Debian package matches {pattern} (kernel {name})"))
}

/// The numbers in a package name, for ordering 6.1.0-9 before 6.1.0-56.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn find_vmlinuz(unpacked: &Path) -> anyhow::Result<PathBuf> {
    let boot = unpacked.join("boot");
    fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))
}

/// (suite, executable) of the integration test binaries, as cargo built
/// them for the host.
fn test_executables(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let json = cmd::output(
        "cargo",
        &[
            "test",
            "--release",
            "-p",
            "keepalive-tests",
            "--no-run",
            "--message-format=json",
        ],
    )?;
    let mut found = Vec::new();
    for line in json.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        if SUITES.iter().any(|(n, _)| *n == name) {
            found.push((name.to_string(), root.join(exe)));
        }
    }
    for (suite, _) in SUITES {
        if !found.iter().any(|(n, _)| n == suite) {
            bail!("cargo built no test executable for suite {suite}");
        }
    }
    Ok(found)
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("path is not UTF-8: {}", p.display()))
}

fn make_executable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(p, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_package_wins_numerically() {
        let mut names = ["linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64"];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[1], "linux-image-6.1.0-56-amd64");
        assert!(
            version_key("linux-image-6.12.117+deb12-amd64")
                > version_key("linux-image-6.12.41+deb12-amd64")
        );
    }

    #[test]
    fn unknown_kernel_is_a_clear_error() {
        let err = kernel("5.4").err().unwrap().to_string();
        assert_eq!(err, "no kernel 5.4 in the matrix (known: 5.15, 6.1, 6.12)");
    }
}
