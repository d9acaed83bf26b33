//! The agent stopped (SIGSTOP) while 2000 probes a second go out and half
//! the sockets close: the ring buffer overflows and events are lost,
//! counted; once it runs again the labelled counters catch up from the
//! kernel's per-socket counts (and the lost closes' final counts) and end
//! equal to the namespace's `TCPKeepAlive`, probes and ACKs alike.

use keepalive_tests::netstat::softnet_dropped;
use socket2::SockRef;

use super::*;

#[test]
fn labelled_counters_end_exact_after_events_were_lost() {
    const SOCKETS: usize = 2000;
    keepalive_tests::proc::raise_nofile();
    let ns = Netns::new("kstop");
    let agent = Daemon::start(&["--inventory-seconds", "2"]);
    let before = ns.run(|| tcp_ext("TCPKeepAlive"));
    let drops_before = softnet_dropped();
    // Made over a second, so that their timers do not all fire in the
    // same jiffy (thousands of probes at once overflow the loopback
    // backlog: sent, never answered).
    let mut pairs = ns.run(|| {
        (0..20)
            .flat_map(|_| {
                std::thread::sleep(Duration::from_millis(50));
                keepalive_pairs(SOCKETS / 20)
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_secs(3));
    agent.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(10));
    // Half close while the ring is full: their close events are lost.
    let closed: Vec<_> = pairs.drain(..SOCKETS / 2).collect();
    drop(closed);
    std::thread::sleep(Duration::from_secs(10));
    agent.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(3));
    // No more probes: the window closes, every ACK comes back (loopback).
    for (c, _) in &pairs {
        SockRef::from(c)
            .set_keepalive(false)
            .expect("SO_KEEPALIVE off");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let delta = ns.run(|| tcp_ext("TCPKeepAlive")) - before;
    // Answered: every probe the backlog did not drop (loopback).
    let answered = delta - (softnet_dropped() - drops_before).min(delta);
    let ino = ns.inode().to_string();
    let sum = |name: &str| {
        let (_, text) = agent.get("/metrics");
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains(&format!("netns=\"{ino}\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let settled = eventually(Duration::from_secs(10), || {
        sum("keepalive_probes_total") == delta && sum("keepalive_probe_acks_total") == answered
    });
    let (probes, acks) = (
        sum("keepalive_probes_total"),
        sum("keepalive_probe_acks_total"),
    );
    let (_, stopped) = agent.stop();
    eprintln!(
        "SIGSTOP 20 s at ~{SOCKETS} probes/s: TCPKeepAlive {delta} ({answered} answered), labelled probes {probes}, \
         acks {acks}, kernel probes {} acks {}, events lost {}",
        stopped.counters.probes, stopped.counters.acks, stopped.counters.events_lost
    );
    assert!(
        stopped.counters.events_lost > 0,
        "no event was lost: the scenario did not happen"
    );
    assert!(delta >= 15 * SOCKETS as u64, "only {delta} probes");
    assert_eq!(stopped.counters.closed_counts_lost, 0);
    assert!(
        settled,
        "labelled probes {probes}, acks {acks} vs TCPKeepAlive {delta}"
    );
    drop(pairs);
}
