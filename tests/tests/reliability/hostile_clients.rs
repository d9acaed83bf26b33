//! Local users against the agent's HTTP API: clients that request the
//! largest reply and never read it, and a flood of idle connections. The
//! agent keeps its memory and its descriptors, its classifiers stay
//! attached, its counts stay exact, and it serves others throughout.

use keepalive_tests::{cgroup::MemoryCgroup, nobody::Clients, proc::fd_count};

use super::*;

/// The agent's resident memory, and its peak, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let kib = |f| {
        keepalive_tests::proc::status_field(&format!("/proc/{pid}/status"), f)
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS") / 1024.0, kib("VmHWM") / 1024.0)
}

/// `n` connected pairs on loopback of the calling thread's namespace.
fn idle_pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = sock::listen("127.0.0.1:0".parse().unwrap());
    let to = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(to).unwrap();
            (c, listener.accept().unwrap().0)
        })
        .collect()
}

/// One status from `path` within 2 s.
fn status_within_2s(agent: &Daemon, path: &str) -> Option<u16> {
    raw_get_status(&agent.addr(), path.as_bytes(), Duration::from_secs(2))
}

/// 100 clients (uid nobody) each ask for `/sockets` of a node with 10k
/// sockets through a 4 KiB receive buffer and never read, the agent under
/// a 256 MiB memory limit: it is not killed, its memory stays bounded,
/// the other endpoints answer throughout, and `/sockets` is whole again
/// once the stalled replies are cut off.
#[test]
fn stalled_socket_listings_cannot_exhaust_the_agents_memory() {
    keepalive_tests::proc::raise_nofile();
    let ns = Netns::new("kmem");
    let _pairs = ns.run(|| idle_pairs(5000));
    let group = MemoryCgroup::new("kmem", 256 << 20);
    let prefix = group.prefix();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let agent = Daemon::launch(Launch {
        prefix: &prefix,
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent in {}: {e:?}", group.path.display()));
    let netns = ns.inode();
    assert!(agent.sockets(&format!("netns={netns}")).len() >= 10_000);
    let (rss_before, _) = rss_mib(agent.pid());
    let stalled = Clients::start(&agent.addr(), 100, Some("/sockets"), 60);
    assert_eq!(stalled.connected, 100);
    let mut peak: f64 = 0.0;
    for _ in 0..24 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(rss_mib(agent.pid()).0);
        for path in ["/metrics", "/healthz", "/livez"] {
            assert_eq!(
                status_within_2s(&agent, path),
                Some(200),
                "{path} while stalled"
            );
        }
    }
    // The stalled replies are cut off after 10 s: a listing is whole again.
    let rows = agent.sockets(&format!("netns={netns}"));
    let refused = agent
        .metric(
            "keepalive_agent_http_refused_total",
            &[("reason", "sockets")],
        )
        .unwrap_or(0.0);
    let (_, hwm) = rss_mib(agent.pid());
    eprintln!(
        "cgroup {:?} {}: RSS {rss_before:.1} MiB before, peak {peak:.1} MiB (VmHWM {hwm:.1}), \
         group peak {:.1} MiB, {refused} listings refused, {} rows after",
        group.version,
        group.path.display(),
        group.peak() as f64 / (1 << 20) as f64,
        rows.len()
    );
    assert_eq!(group.oom_kills(), 0, "the agent was OOM-killed");
    assert!(rows.len() >= 10_000, "{} rows", rows.len());
    assert!(
        refused >= 90.0,
        "only {refused} of 100 stalled listings refused"
    );
    assert!(
        peak < rss_before + 64.0,
        "RSS grew from {rss_before:.1} to {peak:.1} MiB for stalled replies"
    );
    drop(stalled);
    agent.stop();
}

/// 1000 idle connections (uid nobody) against an agent whose descriptor
/// limit is 1024: connections past the cap get 503 and the rest of the
/// agent keeps its descriptors: classifiers stay attached, probes stay
/// exact, and the API serves again once the flood ends.
#[test]
fn a_connection_flood_cannot_take_the_agents_descriptors() {
    let ns = Netns::new("kfd");
    let agent = Daemon::launch(Launch {
        prefix: &["prlimit", "--nofile=1024:1024", "--"],
        args: &["--rescan-seconds", "1", "--inventory-seconds", "1"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent under prlimit: {e:?}"));
    let links = held_by(agent.pid()).tcx_links;
    let interfaces = agent.metric("keepalive_agent_tc_interfaces", &[]);
    let flood = Clients::start(&agent.addr(), 1000, None, 60);
    let refused_now = status_within_2s(&agent, "/healthz");
    let (cookie, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
    let fds = fd_count(agent.pid());
    let links_during = held_by(agent.pid()).tcx_links;
    drop(flood);
    let healthy = eventually(Duration::from_secs(10), || {
        status_within_2s(&agent, "/healthz") == Some(200)
    });
    let counted = eventually(Duration::from_secs(10), || {
        let ino = ns.inode().to_string();
        let probes = agent.metric("keepalive_probes_total", &[("netns", &ino)]);
        probes == Some(delta as f64)
    });
    let refused = agent
        .metric(
            "keepalive_agent_http_refused_total",
            &[("reason", "connections")],
        )
        .unwrap_or(0.0);
    eprintln!(
        "flood of 1000 under nofile 1024: {fds} descriptors held, {refused} refused, \
         healthz during the flood {refused_now:?}, TCX links {} -> {}, probes {delta} (socket {cookie})",
        links.len(),
        links_during.len()
    );
    assert_eq!(refused_now, Some(503), "a client past the cap");
    assert!(fds < 1024, "{fds} descriptors");
    assert_eq!(links_during, links, "classifiers detached during the flood");
    assert!(healthy, "the API did not recover");
    assert!(
        counted,
        "probes during the flood not counted exactly ({delta})"
    );
    assert!(refused > 0.0);
    assert_eq!(
        agent.metric("keepalive_agent_tc_interfaces", &[]),
        interfaces
    );
    agent.stop();
}
