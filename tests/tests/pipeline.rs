//! The kernel pipeline against the real kernel: probes counted exactly as
//! the kernel counts them (`TCPKeepAlive`), seen on the wire and answered,
//! a dead peer reported once as a keepalive timeout with its owner, and no
//! probes where the kernel sends none.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use keepalive_tests::{
    agent::Agent,
    netstat::tcp_ext,
    scenario,
    sock::{self, FAST},
    world::{self, Netns, Pair},
};
use serde_json::Value;

const IDLE: Duration = Duration::from_millis(5500);

fn probes_in_netns(records: &[Value], netns: u64) -> usize {
    records
        .iter()
        .filter(|r| r["event"] == "probe_sent" && r["netns"] == netns)
        .count()
}

fn count(records: &[Value], event: &str, cookie: u64) -> usize {
    records
        .iter()
        .filter(|r| r["event"] == event && r["cookie"] == cookie)
        .count()
}

fn idle_keepalive_client(listen_on: &str) -> (u64, String, u64) {
    scenario::idle_keepalive_client(listen_on, IDLE)
}

fn assert_probes_match(records: &[Value], cookie: u64, delta: u64) {
    assert!(
        delta >= 3,
        "the kernel sent only {delta} probes in {IDLE:?} with 1/1/3 keepalive"
    );
    let delta = delta as usize;
    assert_eq!(
        count(records, "probe_sent", cookie),
        delta,
        "probe_sent events vs TCPKeepAlive"
    );
    let last = records
        .iter()
        .rfind(|r| r["event"] == "probe_sent" && r["cookie"] == cookie)
        .unwrap();
    assert_eq!(
        last["probes"], delta as u64,
        "the kernel map's per-socket count"
    );
    let wire: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "wire_probe" && r["cookie"] == cookie)
        .collect();
    assert_eq!(wire.len(), delta, "probes seen by the TC egress classifier");
    assert!(
        wire.iter().all(|r| r["keepalive_probe"] == true),
        "{wire:?}"
    );
    let acks: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "probe_ack" && r["cookie"] == cookie)
        .collect();
    assert_eq!(acks.len(), delta, "every probe answered on loopback");
    for ack in acks {
        let rtt = ack["rtt_us"].as_f64().unwrap();
        assert!(rtt > 0.0 && rtt < 1e6, "rtt {rtt} us");
    }
}

fn loopback_in_root_netns(listen_on: &str) {
    let agent = Agent::start(&[]);
    let (cookie, local, delta) = idle_keepalive_client(listen_on);
    let root = std::fs::metadata("/proc/thread-self/ns/net").map(|m| {
        use std::os::unix::fs::MetadataExt as _;
        m.ino()
    });
    let mut agent = agent;
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    assert_probes_match(&records, cookie, delta);
    // Every probe of the namespace in the window, the test's or not, is one
    // the agent reported.
    assert_eq!(probes_in_netns(&records, root.unwrap()), delta as usize);
    let first = records
        .iter()
        .find(|r| r["cookie"] == cookie && r["event"] == "probe_sent")
        .unwrap();
    assert_eq!(first["local"], local);
    assert_eq!(first["keepalive"]["idle_s"], 1.0);
    assert_eq!(first["keepalive"]["idle_source"], "socket");
    assert_eq!(first["keepalive"]["count"], 3);
    assert_eq!(stopped["counters"]["events_lost"], 0);
}

#[test]
fn loopback_ipv4_probes_equal_kernel_counter() {
    loopback_in_root_netns("127.0.0.1:0");
}

#[test]
fn loopback_ipv6_probes_equal_kernel_counter() {
    loopback_in_root_netns("[::1]:0");
}

#[test]
fn client_in_own_netns_probes_equal_kernel_counter() {
    let ns = Netns::new("kal");
    let mut agent = Agent::start(&[]);
    let (cookie, _, delta) = ns.run(|| idle_keepalive_client("127.0.0.1:0"));
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    assert_probes_match(&records, cookie, delta);
    assert_eq!(probes_in_netns(&records, ns.inode()), delta as usize);
    let probe = records
        .iter()
        .find(|r| r["event"] == "probe_sent" && r["cookie"] == cookie)
        .unwrap();
    assert_eq!(probe["netns"], ns.inode());
    assert_eq!(stopped["counters"]["events_lost"], 0);
}

#[test]
fn dead_peer_is_reported_once_as_keepalive_timeout() {
    let pair = Pair::new();
    let mut agent = Agent::start(&[]);
    let server_addr: SocketAddr = format!("{}:0", world::B_V4).parse().unwrap();
    let listener = pair.b.run(|| sock::listen(server_addr));
    let server_addr = listener.local_addr().unwrap();
    let (client, comm, before) = pair.a.run(|| {
        let before = tcp_ext("TCPKeepAlive");
        (
            sock::connect(server_addr, Some(FAST)),
            sock::thread_comm(),
            before,
        )
    });
    let (_server, _) = listener.accept().unwrap();
    let cookie = sock::cookie(&client);
    let local = sock::endpoint(client.local_addr().unwrap());
    world::drop_all_input(&pair.b);

    let err = pair.a.run(|| {
        let mut client = &client;
        let mut buf = [0u8; 1];
        client
            .read(&mut buf)
            .expect_err("read on a dead peer must fail")
    });
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    let delta = pair.a.run(|| tcp_ext("TCPKeepAlive")) - before;

    agent
        .wait_for(Duration::from_secs(5), |r| {
            r["event"] == "keepalive_timeout" && r["cookie"] == cookie
        })
        .expect("no keepalive_timeout event");
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    let timeouts: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "keepalive_timeout")
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:#?}");
    let t = timeouts[0];
    assert_eq!(t["cookie"], cookie);
    assert_eq!(t["local"], local);
    assert_eq!(t["remote"], sock::endpoint(server_addr));
    assert_eq!(t["netns"], pair.a.inode());
    assert_eq!(t["pid"], std::process::id());
    assert_eq!(t["comm"], comm);
    assert_eq!(t["errno"], libc::ETIMEDOUT);
    assert_eq!(t["cause"], "keepalive");
    let history: Vec<&Value> = records.iter().filter(|r| r["cookie"] == cookie).collect();
    // Probes before the drop rule took hold were answered (none on a fast
    // machine; some in a software-emulated VM, where set-up is slow): the
    // kernel's counter over the whole connection says how many in all.
    assert!(delta >= u64::from(FAST.cnt), "TCPKeepAlive delta {delta}");
    assert_eq!(
        t["probes"], delta,
        "probes counted before the kill; the socket's records: {history:#?}"
    );
    assert_eq!(t["probes_out"], FAST.cnt, "unanswered probes at the kill");
    // Idle until the first unanswered probe (TCP_KEEPIDLE after the last
    // ACK received), then TCP_KEEPCNT probes an interval apart, the last
    // interval ending in the abort.
    let unanswered = t["unanswered_s"].as_f64().expect("unanswered_s");
    let before = t["idle_before_s"].as_f64().expect("idle_before_s");
    let expect_unanswered = f64::from(FAST.intvl * FAST.cnt);
    assert!((unanswered - expect_unanswered).abs() < 0.1, "{t}");
    assert!((before - f64::from(FAST.idle)).abs() < 0.1, "{t}");
    assert_eq!(count(&records, "probe_sent", cookie), delta as usize);
    assert_eq!(stopped["counters"]["keepalive_timeouts"], 1);
    // The peer's link was up: every probe left through the veth; only
    // those before the drop were answered.
    assert_eq!(count(&records, "wire_probe", cookie), delta as usize);
    assert_eq!(
        count(&records, "probe_ack", cookie),
        (delta - u64::from(FAST.cnt)) as usize
    );
}

#[test]
fn socket_without_keepalive_sends_no_probes() {
    let ns = Netns::new("kan");
    let mut agent = Agent::start(&[]);
    let (cookie, delta) = ns.run(|| {
        let listener = sock::listen("127.0.0.1:0".parse().unwrap());
        let before = tcp_ext("TCPKeepAlive");
        let client = sock::connect(listener.local_addr().unwrap(), None);
        let (_server, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        (sock::cookie(&client), tcp_ext("TCPKeepAlive") - before)
    });
    agent.settle(Duration::from_millis(500));
    let (records, _) = agent.stop();
    assert_eq!(delta, 0);
    for event in ["keepalive_timer", "probe_sent", "wire_probe", "probe_ack"] {
        assert_eq!(count(&records, event, cookie), 0, "{event}");
    }
    assert_eq!(probes_in_netns(&records, ns.inode()), 0);
}

#[test]
fn busy_socket_sends_no_probes() {
    let ns = Netns::new("kab");
    let mut agent = Agent::start(&[]);
    let (cookie, delta) = ns.run(|| {
        let listener = sock::listen("127.0.0.1:0".parse().unwrap());
        let before = tcp_ext("TCPKeepAlive");
        let mut client = sock::connect(listener.local_addr().unwrap(), Some(FAST));
        let (mut server, _) = listener.accept().unwrap();
        // Traffic every 200 ms: the connection is never idle for 1 s.
        for _ in 0..20 {
            client.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            server.read_exact(&mut b).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        (sock::cookie(&client), tcp_ext("TCPKeepAlive") - before)
    });
    agent.settle(Duration::from_millis(500));
    let (records, _) = agent.stop();
    assert_eq!(delta, 0);
    assert_eq!(count(&records, "probe_sent", cookie), 0);
    assert_eq!(count(&records, "wire_probe", cookie), 0);
}

#[test]
fn hooks_report_their_mode() {
    let agent = Agent::start(&[]);
    let hooks = agent.ready["hooks"]
        .as_array()
        .expect("hooks in ready")
        .clone();
    let timer = hooks
        .iter()
        .find(|h| h["hook"] == "keepalive_timer")
        .expect("keepalive_timer hook");
    assert_eq!(timer["live"], true);
    let mode = timer["mode"].as_str().unwrap();
    assert!(mode == "fentry" || mode == "tp_btf", "{mode}");
    // The kernel matrix sets the mode each kernel must pick, so that a
    // silent fallback cannot pass.
    if let Ok(expected) = std::env::var("KEEPALIVE_EXPECT_TIMER_MODE") {
        assert_eq!(mode, expected);
    }
    let tc = hooks.iter().find(|h| h["hook"] == "tc").expect("tc hook");
    assert_eq!(tc["live"], true);
    let tc_mode = tc["mode"].as_str().unwrap();
    assert!(tc_mode == "tcx" || tc_mode == "netlink", "{tc_mode}");
    if let Ok(expected) = std::env::var("KEEPALIVE_EXPECT_TC_MODE") {
        assert_eq!(tc_mode, expected);
    }
    agent.stop();
}

/// With the timer hooks off, the TC egress classifier alone counts every
/// probe: it knows a keepalive probe by the socket's keepalive timer being
/// detached (its callback is running) while the probe leaves.
#[test]
fn wire_mode_probes_equal_kernel_counter() {
    let ns = Netns::new("kaw");
    let mut agent = Agent::start(&["--timer-mode", "wire"]);
    assert_eq!(agent.ready["hooks"][0]["mode"], "wire");
    assert_eq!(agent.ready["hooks"][0]["live"], false);
    // Replaced, not down: a restart would not bring the hook back.
    assert_eq!(agent.get("/healthz").0, 200);
    let (cookie, _, delta) = ns.run(|| idle_keepalive_client("127.0.0.1:0"));
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    assert_probes_match(&records, cookie, delta);
    assert_eq!(probes_in_netns(&records, ns.inode()), delta as usize);
    assert_eq!(stopped["counters"]["timer_fires"], 0);
    assert_eq!(stopped["counters"]["probes_wire_only"], delta);
    assert_eq!(stopped["counters"]["events_lost"], 0);
}

/// Zero-window probes look like keepalive probes on the wire; neither the
/// timer marker nor the wire-only rule may count them as keepalive probes.
fn zero_window_probes_are_told_apart(mode: &str) {
    let ns = Netns::new("kaz");
    let mut agent = Agent::start(&["--timer-mode", mode]);
    let zw = ns.run(|| scenario::zero_window_sender(Duration::from_secs(5)));
    agent.settle(Duration::from_millis(500));
    let (records, _) = agent.stop();
    assert!(
        zw.window_probes >= 3,
        "the kernel sent only {} zero-window probes",
        zw.window_probes
    );
    assert_eq!(
        zw.keepalive_probes, 0,
        "keepalive waits while data is queued"
    );
    assert_eq!(count(&records, "probe_sent", zw.cookie), 0);
    let wire: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "wire_probe" && r["cookie"] == zw.cookie)
        .collect();
    assert_eq!(wire.len() as u64, zw.window_probes, "TCPWinProbe");
    assert!(
        wire.iter().all(|r| r["keepalive_probe"] == false),
        "{wire:?}"
    );
}

#[test]
fn zero_window_probes_are_not_keepalive_probes() {
    zero_window_probes_are_told_apart("auto");
}

#[test]
fn zero_window_probes_are_not_keepalive_probes_in_wire_mode() {
    zero_window_probes_are_told_apart("wire");
}
