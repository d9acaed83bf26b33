//! A kernel that refuses a hook mode: one clear line, or the fallback, reported.

use super::*;

/// `--timer-mode fentry` where the kernel refuses fentry: exit 1 with one
/// line (no verifier dump, no panic), nothing left loaded. Where the kernel
/// permits fentry, the agent must say it uses it.
#[test]
fn fentry_mode_where_refused_fails_in_one_line() {
    match Daemon::launch(Launch {
        args: &["--timer-mode", "fentry"],
        env: &[("KEEPALIVE_LOG", "warn")],
        ..Launch::default()
    }) {
        Ok(agent) => {
            let timer = agent.ready.hook(Hook::KeepaliveTimer).map(|h| h.mode);
            assert_eq!(timer, Some(HookMode::Fentry), "{:?}", agent.ready);
            agent.stop();
        }
        Err(exited) => {
            eprintln!("--timer-mode fentry: {:?}", exited.stderr);
            assert_eq!(exited.status.code(), Some(1), "{exited:?}");
            assert!(exited.records.is_empty(), "{exited:?}");
            let lines: Vec<&String> = exited
                .stderr
                .iter()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(lines.len(), 1, "{:#?}", exited.stderr);
            assert!(lines[0].starts_with("keepalive-agent: "), "{}", lines[0]);
            assert!(lines[0].len() < 400, "{}", lines[0]);
            assert!(!lines[0].contains("panicked"));
            assert!(
                eventually(Duration::from_secs(3), || orphans().is_empty()),
                "{:?}",
                orphans()
            );
        }
    }
}

/// The one line must say that fentry is what failed, and not suggest that
/// root lacks privileges.
#[test]
fn fentry_mode_error_names_fentry() {
    let out = run_agent_cli(
        &[
            "run",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--timer-mode",
            "fentry",
        ],
        &[("KEEPALIVE_LOG", "warn")],
        Duration::from_secs(20),
    );
    if out.stdout.contains("\"ready\"") {
        panic!("this kernel permits fentry: nothing to check");
    }
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("fentry"), "{}", lines[0]);
    assert!(!lines[0].contains("are you root"), "{}", lines[0]);
}

/// `--timer-mode tracepoint` is reported as tp_btf, without a note about
/// fentry (it was not tried), and counts exactly.
#[test]
fn tracepoint_mode_is_reported_and_counts_exactly() {
    let ns = Netns::new("ktp");
    let agent = Daemon::start(&["--timer-mode", "tracepoint"]);
    let timer = agent
        .ready
        .hook(Hook::KeepaliveTimer)
        .cloned()
        .expect("keepalive_timer hook");
    assert_eq!(timer.mode, HookMode::TpBtf);
    assert!(timer.live);
    assert_eq!(timer.note, None, "{timer:?}");
    assert_eq!(
        agent.metric(
            "keepalive_agent_hook_up",
            &[("hook", "keepalive_timer"), ("mode", "tp_btf")]
        ),
        Some(1.0)
    );
    assert_probes_exact_in(agent, &ns);
}
