//! A full socket map: refusals counted, closed sockets leave the map.

use super::*;

/// `--max-sockets 8` and 30 keepalive sockets of one user: the kernel map
/// holds that user's share (6 of 8: a quarter is kept for other users),
/// the rest are counted as refused (and exported), probes stay exact, and
/// closed sockets leave the map.
#[test]
fn socket_map_full_is_counted_and_closed_sockets_leave_the_map() {
    const SOCKETS: usize = 30;
    let ns = Netns::new("kmf");
    let mut agent = Daemon::start(&["--max-sockets", "8"]);
    let map = held_map(agent.pid(), "SOCKETS");
    let before = keepalive_probes_everywhere();
    let probes_at_before = kernel_counters(agent.pid()).probes;
    let ns_before = ns.run(|| tcp_ext("TCPKeepAlive"));
    let pairs = ns.run(|| keepalive_pairs(SOCKETS));
    let cookies: BTreeSet<u64> = pairs.iter().map(|(c, _)| sock::cookie(c)).collect();
    std::thread::sleep(Duration::from_millis(2500));
    let open_keys: BTreeSet<u64> = u64_keys(map).into_iter().collect();
    drop(pairs);
    std::thread::sleep(Duration::from_millis(300));
    let delta = ns.run(|| tcp_ext("TCPKeepAlive")) - ns_before;
    let after = keepalive_probes_everywhere();
    let probes_at_after = kernel_counters(agent.pid()).probes;
    agent.settle(Duration::from_millis(1500));
    let closed_keys: BTreeSet<u64> = u64_keys(map).into_iter().collect();
    let full_metric = assert_metric_mirrors_kernel(
        &agent,
        "keepalive_agent_socket_map_full_total",
        ("socket_map_full", |c| c.socket_map_full),
    );
    let share_metric = assert_metric_mirrors_kernel(
        &agent,
        "keepalive_agent_socket_map_share_refused_total",
        ("socket_share_refused", |c| c.socket_share_refused),
    );
    let refused_metric = agent.metric("keepalive_agent_sockets_refused_total", &[]);
    let (_, stopped) = agent.stop();

    let ours_open = open_keys.intersection(&cookies).count();
    let full = counter(&stopped, |c| c.socket_map_full);
    let share = counter(&stopped, |c| c.socket_share_refused);
    eprintln!(
        "max-sockets 8, {SOCKETS} sockets: map held {} entries ({ours_open} ours) while open, \
         {} after close; socket_map_full {full}, socket_share_refused {share}; sockets_refused {}; \
         probes {} (TCPKeepAlive {delta})",
        open_keys.len(),
        closed_keys.len(),
        stopped.sockets_refused,
        counter(&stopped, |c| c.probes),
    );
    assert!(
        (6..=8).contains(&open_keys.len()),
        "the map holds one user's share of 8 (6), or more with other users': {open_keys:?}"
    );
    assert_eq!(ours_open, 6, "our user's share of the map");
    assert!(full + share > 0, "a full map refused nothing: {stopped:?}");
    assert!(
        share_metric > 0 && share_metric <= share && full_metric <= full,
        "keepalive_agent_socket_map_share_refused_total {share_metric}, _full_total {full_metric}"
    );
    assert!(
        refused_metric.is_some_and(|v| v > 0.0),
        "keepalive_agent_sockets_refused_total {refused_metric:?} with an 8-socket table"
    );
    // Sockets of other tests on the node may take the freed slots: the
    // map must hold none of ours.
    let left: Vec<&u64> = closed_keys.intersection(&cookies).collect();
    assert!(
        left.is_empty(),
        "closed sockets still in SOCKETS: {left:?} (ours: {:?}..={:?}, map: {closed_keys:?})",
        cookies.first(),
        cookies.last()
    );
    assert!(delta >= SOCKETS as u64, "only {delta} probes");
    assert_eq!(
        probes_at_after - probes_at_before,
        probes_between(&before, &after),
        "kernel probe counter with a full map vs TCPKeepAlive"
    );
}
