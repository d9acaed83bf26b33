//! A full ring buffer: events lost and counted, the kernel's counts exact.

use super::*;

/// 300 keepalive sockets whose timers expire in the same timer-wheel slots
/// flood a 4096-byte ring (21 events of 192 bytes): events are lost and
/// counted, the agent keeps serving, and the kernel's probe counter is
/// still exactly what the kernel sent.
/// /healthz, polled every 100 ms until the sender is used: the statuses.
fn poll_healthz(
    addr: String,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<Option<u16>>>,
) {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let poller = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        while stop_rx.try_recv().is_err() {
            statuses.push(raw_get_status(&addr, b"/healthz", Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(100));
        }
        statuses
    });
    (stop_tx, poller)
}

#[test]
fn ring_buffer_overflow_loses_events_but_kernel_counts_stay_exact() {
    const SOCKETS: usize = 300;
    let ns = Netns::new("kro");
    let agent = Daemon::start(&["--ring-buffer-bytes", "4096"]);
    let addr = agent.addr();
    let before = keepalive_probes_everywhere();
    let probes_at_before = kernel_counters(agent.pid()).probes;
    let (stop_tx, poller) = poll_healthz(addr);
    let (delta, cookies) = ns.run(|| {
        let before = tcp_ext("TCPKeepAlive");
        let pairs = keepalive_pairs(SOCKETS);
        std::thread::sleep(Duration::from_secs(3));
        let cookies: BTreeSet<u64> = pairs.iter().map(|(c, _)| sock::cookie(c)).collect();
        drop(pairs);
        // No more probes from closed sockets: the window ends here.
        std::thread::sleep(Duration::from_millis(200));
        (tcp_ext("TCPKeepAlive") - before, cookies)
    });
    stop_tx.send(()).unwrap();
    let health = poller.join().unwrap();
    let after = keepalive_probes_everywhere();
    let probes_at_after = kernel_counters(agent.pid()).probes - probes_at_before;
    let lost_metric = assert_metric_mirrors_kernel(
        &agent,
        "keepalive_agent_events_lost_total",
        ("events_lost", |c| c.events_lost),
    );
    let probes_metric = assert_metric_mirrors_kernel(
        &agent,
        "keepalive_agent_kernel_probes_total",
        ("probes", |c| c.probes),
    );
    let (status, _) = agent.get("/healthz");
    let stderr = agent.stderr();
    let (records, stopped) = agent.stop();

    let lost = counter(&stopped, |c| c.events_lost);
    let probes = counter(&stopped, |c| c.probes);
    let node_delta = probes_between(&before, &after);
    let seen: usize = cookies
        .iter()
        .map(|c| count(&records, RecordKind::ProbeSent, *c))
        .sum();
    eprintln!(
        "ring 4096 B, {SOCKETS} sockets: TCPKeepAlive {delta} in the netns ({node_delta} node-wide), \
         kernel probes {probes}, events lost {lost}, probe_sent events seen {seen}, \
         /healthz polls {}",
        health.len()
    );
    assert!(
        delta >= SOCKETS as u64,
        "only {delta} probes from {SOCKETS} sockets"
    );
    assert!(lost > 0, "a 4096-byte ring took every event: {stopped:?}");
    assert_eq!(
        probes_at_after, node_delta,
        "kernel probe counter vs TCPKeepAlive of every namespace"
    );
    assert!(lost_metric > 0 && lost_metric <= lost, "{lost_metric}");
    assert!(probes_metric <= probes, "{probes_metric}");
    assert!(
        seen <= delta as usize,
        "more probe_sent events ({seen}) than probes ({delta})"
    );
    assert_served_and_warned(&health, status, &stderr);
}

/// /healthz answered 200 all through the burst and after, and the log
/// said the ring was full.
fn assert_served_and_warned(health: &[Option<u16>], status: u16, stderr: &[String]) {
    assert!(
        !health.is_empty() && health.iter().all(|s| *s == Some(200)),
        "/healthz during the burst: {health:?}"
    );
    assert_eq!(status, 200, "/healthz after the burst");
    assert!(
        stderr.iter().any(|l| l.contains("ring buffer full")),
        "no warning about the full ring:\n{}",
        stderr.join("\n")
    );
}
