//! The systemd unit: `systemd-analyze verify`, and what it keeps for the agent.

use super::*;
use crate::privileges::UNIT_CAPS;

/// `Key=value` lines of the unit, last one wins.
pub(crate) fn unit_settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_verifies_and_keeps_what_the_agent_needs() {
    require_tool("systemd-analyze", "apt-get install systemd");
    let unit_path = deploy("systemd/keepalive-agent.service");
    let text = read(&unit_path);
    let s = unit_settings(&text);
    const EXEC: &str = "/usr/local/bin/keepalive-agent run --quiet";
    assert_eq!(s["ExecStart"], EXEC);
    assert_eq!(s["Restart"], "on-failure");
    assert_eq!(s["DynamicUser"], "yes", "not root");
    assert_eq!(s["NoNewPrivileges"], "yes");
    assert_eq!(s["ProtectSystem"], "strict");
    assert_eq!(s["LimitMEMLOCK"], "infinity");
    assert_eq!(
        s["LimitNOFILE"], "65536",
        "a descriptor limit above the default 1024"
    );
    let caps =
        |k: &str| -> BTreeSet<String> { s[k].split_whitespace().map(String::from).collect() };
    let want: BTreeSet<String> = UNIT_CAPS.iter().map(|c| c.to_string()).collect();
    assert_eq!(caps("CapabilityBoundingSet"), want);
    assert_eq!(caps("AmbientCapabilities"), want);
    assert_eq!(
        caps("RestrictAddressFamilies"),
        ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
            .map(String::from)
            .into()
    );
    // What would break the agent: kallsyms hidden (ProtectKernelTunables),
    // CAP_SYSLOG removed (ProtectKernelLogs), other processes hidden, the
    // host's network or capabilities out of reach.
    for off in [
        "ProtectKernelTunables",
        "ProtectKernelLogs",
        "ProcSubset",
        "PrivateNetwork",
        "PrivateUsers",
    ] {
        assert!(s.get(off).is_none_or(|v| v == "no"), "{off}={}", s[off]);
    }
    assert!(s.get("ProtectProc").is_none_or(|v| v == "default"));

    // systemd-analyze checks that ExecStart exists: verify a copy that runs
    // the binary built here, identical otherwise.
    let binary = agent::binary();
    let tmp = prometheus::temp_dir("keepalive-unit");
    let copy = tmp.join("keepalive-agent.service");
    std::fs::write(
        &copy,
        text.replace(
            "ExecStart=/usr/local/bin/keepalive-agent",
            &format!("ExecStart={}", binary.canonicalize().unwrap().display()),
        ),
    )
    .unwrap();
    let copy_s = copy.to_str().unwrap();
    let (ok, out) = run("systemd-analyze", &["verify", copy_s], None);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    let (_, out) = run(
        "systemd-analyze",
        &["security", "--offline=yes", copy_s],
        None,
    );
    let _ = std::fs::remove_dir_all(&tmp);
    let exposure: f64 = out
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for keepalive-agent.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(
        exposure <= 4.0,
        "systemd-analyze security: exposure {exposure}\n{out}"
    );
    eprintln!("systemd: verify clean, exposure {exposure}");
}

/// The install path's completions and man pages come from the binary
/// itself: each shell's script names the flags, bash loads its own, the
/// pages render with the run command's flags.
#[test]
fn completions_and_man_pages_are_made_by_the_binary_as_the_install_path_says() {
    let readme = read(&deploy("systemd/README.md"));
    let binary = agent::binary();
    let tmp = prometheus::temp_dir("keepalive-docs");
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            readme.contains(&format!("keepalive-agent completions {shell}")),
            "the install path does not install the {shell} completions"
        );
        let out = Command::new(&binary)
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(out.status.success(), "completions {shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("web.config.file") && script.contains("local-listen"),
            "{shell}: {script:.300}"
        );
        std::fs::write(tmp.join(shell), script.as_bytes()).unwrap();
    }
    let bash = tmp.join("bash");
    let (ok, out) = run(
        "bash",
        &[
            "-c",
            &format!("source {} && complete -p keepalive-agent", bash.display()),
        ],
        None,
    );
    assert!(
        ok && out.contains("keepalive-agent"),
        "bash completion: {out}"
    );

    assert!(
        readme.contains("keepalive-agent man --dir"),
        "the install path installs no man pages"
    );
    let pages = tmp.join("man");
    std::fs::create_dir_all(&pages).unwrap();
    let (ok, out) = run(
        binary.to_str().unwrap(),
        &["man", "--dir", pages.to_str().unwrap()],
        None,
    );
    assert!(ok, "man --dir: {out}");
    for page in [
        "keepalive-agent.1",
        "keepalive-agent-run.1",
        "keepalive-agent-sockets.1",
    ] {
        assert!(pages.join(page).is_file(), "{page} not written");
    }
    let (ok, text) = run(
        "groff",
        &[
            "-man",
            "-Tutf8",
            pages.join("keepalive-agent-run.1").to_str().unwrap(),
        ],
        None,
    );
    // groff's bold is "c\x08c": the letters alone.
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    assert!(
        ok && plain.contains("--web.config.file") && plain.contains("--local-listen"),
        "keepalive-agent-run(1): {plain:.800}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
