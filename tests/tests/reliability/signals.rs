//! SIGTERM and SIGKILL: no BPF object left behind, an immediate restart works.

use super::*;

/// What the kernel must show of an agent in tp_btf mode: 9 programs (6
/// tracepoints, 2 classifiers, the iterator), 6 tracepoint links plus 2
/// TCX links per interface, the named maps and .rodata.
fn assert_holds_its_objects(agent: &Daemon) -> daemon::BpfIds {
    let held = held_by(agent.pid());
    let interfaces = agent.ready.interfaces.len();
    assert!(interfaces >= 1, "{:?}", agent.ready);
    assert_eq!(held.tcx_links.len(), 2 * interfaces, "{held:?}");
    // The setsockopt hook's cgroup link, where it is live.
    let options = agent.ready.hook(Hook::Setsockopt).is_some_and(|h| h.live);
    assert_eq!(
        held.links.len(),
        6 + usize::from(options) + 2 * interfaces,
        "{held:?}"
    );
    let (progs, maps, _) = daemon::live();
    let names = |objs: &[daemon::Object], ids: &BTreeSet<u64>| {
        objs.iter()
            .filter(|o| ids.contains(&o.id))
            .map(|o| o.name.clone())
            .collect::<BTreeSet<String>>()
    };
    let mut expected: BTreeSet<String> = [
        "timer_expire_entry",
        "timer_expire_exit",
        "inet_sock_set_state",
        "inet_sk_error_report",
        "tcp_receive_reset",
        "tcp_send_reset",
        "tc_egress",
        "tc_ingress",
        "dump_tcp",
    ]
    .map(String::from)
    .into();
    if options {
        expected.insert("keepalive_setsockopt".into());
    }
    let timer_mode = agent.ready.hook(Hook::KeepaliveTimer).map(|h| h.mode);
    if timer_mode == Some(HookMode::TpBtf) {
        assert_eq!(names(&progs, &held.progs), expected);
    }
    let map_names = names(&maps, &held.maps);
    for m in daemon::MAP_NAMES {
        assert!(map_names.contains(*m), "map {m} not held: {map_names:?}");
    }
    held
}

fn signal_leaves_nothing_and_restart_works(kill: bool) {
    let agent = Daemon::start(&[]);
    let held = assert_holds_its_objects(&agent);
    let took = Instant::now();
    if kill {
        let status = agent.kill();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
    } else {
        agent.stop();
    }
    let mut left = daemon::BpfIds::default();
    let gone = eventually(Duration::from_secs(5), || {
        left = still_alive(&held);
        left.is_empty()
    });
    assert!(
        gone,
        "still in the kernel 5 s after the agent ended: {left:?}"
    );
    eprintln!(
        "{} agent's {} programs, {} maps, {} links gone in {:?}",
        if kill { "SIGKILLed" } else { "SIGTERMed" },
        held.progs.len(),
        held.maps.len(),
        held.links.len(),
        took.elapsed()
    );
    // Another agent on the node (other tests) may be ending right now.
    let mut orphaned = Vec::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            orphaned = orphans();
            orphaned.is_empty()
        }),
        "BPF objects nobody holds: {orphaned:?}"
    );

    let t = Instant::now();
    let again = Daemon::start(&[]);
    let restart = t.elapsed();
    assert!(restart < Duration::from_secs(5), "restart took {restart:?}");
    assert!(
        again.ready.hooks.iter().all(|h| h.live),
        "{:?}",
        again.ready
    );
    assert_eq!(again.get("/healthz").0, 200);
    let held_again = assert_holds_its_objects(&again);
    assert!(held_again.progs.is_disjoint(&held.progs));
    eprintln!("restart ready in {restart:?}");
    again.stop();
    assert!(eventually(Duration::from_secs(5), || still_alive(
        &held_again
    )
    .is_empty()));
}

#[test]
fn sigterm_leaves_no_bpf_objects_and_restart_works() {
    signal_leaves_nothing_and_restart_works(false);
}

#[test]
fn sigkill_leaves_no_bpf_objects_and_restart_works() {
    signal_leaves_nothing_and_restart_works(true);
}

/// SIGHUP (a closed terminal, `systemctl kill -s HUP`) stops the agent as
/// SIGTERM does: the `stopped` line, exit 0, nothing left attached.
#[test]
fn sighup_stops_cleanly() {
    let agent = Daemon::start(&[]);
    let held = held_by(agent.pid());
    let (_, stopped) = agent.stop_with(libc::SIGHUP);
    assert_eq!(stopped.counters.read_errors, 0);
    assert!(
        eventually(Duration::from_secs(5), || still_alive(&held).is_empty()),
        "left behind: {:?}",
        still_alive(&held)
    );
}
