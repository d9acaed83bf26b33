//! Least privilege (`setpriv`): the capabilities the agent needs, and no more after start.

use super::*;

fn bounding_set(caps: &[&str]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(c);
    }
    s
}

/// The bounding set for the agent: REQUIRED and START_ONLY of caps.rs,
/// minus `without`. (setpriv cannot add what our own bounding set lacks:
/// CAP_SYS_RESOURCE on this VM.)
fn agent_set(without: Option<u32>) -> String {
    let mut all = agent_capabilities("REQUIRED");
    all.extend(agent_capabilities("START_ONLY"));
    let mut names: Vec<&str> = all
        .iter()
        .filter(|c| Some(c.bit) != without)
        .map(|c| c.setpriv.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    bounding_set(&names)
}

fn mask(caps: &[caps::Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1u64 << c.bit)
}

/// Under `setpriv` with the documented sets, the agent runs, every thread
/// holds the same capabilities: all of REQUIRED except START_ONLY (dropped
/// after start), nothing else; and probes are
/// counted exactly.
#[test]
fn runs_with_exactly_the_required_capabilities() {
    let set = agent_set(None);
    // REQUIRED is checked at start; START_ONLY (some of which are also
    // REQUIRED, e.g. CAP_SYSLOG for kallsyms) is dropped once started.
    let start_only = mask(&agent_capabilities("START_ONLY"));
    let required = mask(&agent_capabilities("REQUIRED")) & !start_only;
    let ns = Netns::new("kcp");
    let agent = Daemon::launch(Launch {
        prefix: &["setpriv", "--bounding-set", &set, "--"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent under {set}: {e:#?}"));
    let threads = thread_caps(agent.pid());
    let (_, _, eff0, prm0) = threads[0].clone();
    for (tid, name, eff, prm) in &threads {
        assert_eq!(
            (*eff, *prm),
            (eff0, prm0),
            "thread {tid} ({name}) differs from the main thread"
        );
        assert_eq!(
            *eff & required,
            required,
            "thread {tid} ({name}): CapEff {eff:x} lacks some of {required:x}"
        );
        assert_eq!(
            (*eff | *prm) & !required,
            0,
            "thread {tid} ({name}): CapEff {eff:x} CapPrm {prm:x} beyond {required:x} \
             (start-only {start_only:x} must be dropped)"
        );
    }
    eprintln!(
        "{} threads with CapEff {eff0:016x} under setpriv {set}",
        threads.len()
    );
    assert_probes_exact_in(agent, &ns);
}

/// Each required capability removed in turn: a start-up failure naming it,
/// one line, no panic, nothing loaded.
#[test]
fn each_missing_capability_is_named_and_nothing_starts() {
    for cap in agent_capabilities("REQUIRED") {
        let name = &cap.name;
        let set = agent_set(Some(cap.bit));
        let out = run_with_timeout(
            &["setpriv", "--bounding-set", &set, "--"],
            &["run", "--json", "--listen", "127.0.0.1:0"],
            &[("KEEPALIVE_LOG", "warn")],
            Duration::from_secs(20),
        );
        assert!(!out.timed_out, "started without {name}");
        assert_eq!(out.code, Some(1), "without {name}: {out:?}");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "without {name}: {}", out.stderr);
        assert!(
            lines[0].contains(&format!("missing capabilities: {name} (")),
            "without {name}: {}",
            lines[0]
        );
        assert!(!out.stderr.contains("panicked"));
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert!(
        eventually(Duration::from_secs(3), || orphans().is_empty()),
        "{:?}",
        orphans()
    );
}

/// caps.rs drops the start-only capabilities (CAP_SYSLOG, used for
/// /proc/kallsyms; CAP_SYS_RESOURCE where held) before the tokio runtime
/// starts its workers. capset(2) changes the calling thread only: every
/// thread must have lost them, not just the main one.
#[test]
fn start_only_capability_is_dropped_from_every_thread() {
    let set = agent_set(None);
    let agent = Daemon::launch(Launch {
        prefix: &["setpriv", "--bounding-set", &set, "--"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("dropped capabilities no longer needed: CAP_SYSLOG"))
    );
    let threads = thread_caps(agent.pid());
    assert!(
        threads.len() >= 3,
        "main thread and tokio workers: {threads:?}"
    );
    for (tid, name, eff, prm) in threads {
        for (bit, cap) in [(34, "CAP_SYSLOG"), (24, "CAP_SYS_RESOURCE")] {
            assert_eq!(
                (eff | prm) & (1 << bit),
                0,
                "thread {tid} ({name}) still holds {cap}"
            );
        }
        // What the run still needs stays.
        assert_ne!(eff & (1 << 39), 0, "thread {tid} ({name}) lost CAP_BPF");
    }
    agent.stop();
}
