//! The kernel pipeline against the real kernel: probes counted exactly as
//! the kernel counts them (`TCPKeepAlive`), seen on the wire and answered,
//! a dead peer reported once as a keepalive timeout with its owner, and no
//! probes where the kernel sends none.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use keepalive_api::{Cause, Hook, HookMode, Record, RecordKind};
use keepalive_tests::{
    agent::{Agent, of},
    netstat::tcp_ext,
    scenario,
    sock::{self, FAST},
    world::{self, Netns, Pair},
};

const IDLE: Duration = Duration::from_millis(5500);

fn probes_in_netns(records: &[Record], netns: u64) -> usize {
    records
        .iter()
        .filter(|r| r.event == RecordKind::ProbeSent && r.netns.map(u64::from) == Some(netns))
        .count()
}

fn count(records: &[Record], event: RecordKind, cookie: u64) -> usize {
    of(records, event, cookie).len()
}

fn idle_keepalive_client(listen_on: &str) -> (u64, SocketAddr, u64) {
    scenario::idle_keepalive_client(listen_on, IDLE)
}

fn assert_probes_match(records: &[Record], cookie: u64, delta: u64) {
    assert!(
        delta >= 3,
        "the kernel sent only {delta} probes in {IDLE:?} with 1/1/3 keepalive"
    );
    let delta = delta as usize;
    let sent = of(records, RecordKind::ProbeSent, cookie);
    assert_eq!(sent.len(), delta, "probe_sent events vs TCPKeepAlive");
    assert_eq!(
        sent.last().and_then(|r| r.probes),
        Some(delta as u32),
        "the kernel map's per-socket count"
    );
    let wire = of(records, RecordKind::WireProbe, cookie);
    assert_eq!(wire.len(), delta, "probes seen by the TC egress classifier");
    assert!(
        wire.iter().all(|r| r.keepalive_probe == Some(true)),
        "{wire:?}"
    );
    let acks = of(records, RecordKind::ProbeAck, cookie);
    assert_eq!(acks.len(), delta, "every probe answered on loopback");
    for ack in acks {
        let rtt = ack.rtt_us.expect("rtt_us of an ACK");
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
    let first = of(&records, RecordKind::ProbeSent, cookie)[0];
    assert_eq!(first.local, Some(local));
    let k = first.keepalive.as_ref().expect("keepalive of a probe");
    assert_eq!((k.idle_s, k.idle_from_socket(), k.count), (1.0, true, 3));
    assert_eq!(stopped.counters.events_lost, 0);
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
    let probe = of(&records, RecordKind::ProbeSent, cookie)[0];
    assert_eq!(probe.netns.map(u64::from), Some(ns.inode()));
    assert_eq!(stopped.counters.events_lost, 0);
}

/// Idle until the first unanswered probe (TCP_KEEPIDLE after the last
/// ACK received), then TCP_KEEPCNT probes an interval apart, the last
/// interval ending in the abort.
fn assert_idle_then_unanswered(t: &Record) {
    let unanswered = t.unanswered_s.expect("unanswered_s");
    let before = t.idle_before_s.expect("idle_before_s");
    let expect_unanswered = f64::from(FAST.intvl * FAST.cnt);
    assert!((unanswered - expect_unanswered).abs() < 0.1, "{t:?}");
    assert!((before - f64::from(FAST.idle)).abs() < 0.1, "{t:?}");
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
    let local = client.local_addr().unwrap();
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
            r.event == RecordKind::KeepaliveTimeout && r.cookie == cookie
        })
        .expect("no keepalive_timeout event");
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    let timeouts: Vec<&Record> = records
        .iter()
        .filter(|r| r.event == RecordKind::KeepaliveTimeout)
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:#?}");
    let t = timeouts[0];
    assert_eq!(t.cookie, cookie);
    assert_eq!((t.local, t.remote), (Some(local), Some(server_addr)));
    assert_eq!(t.netns.map(u64::from), Some(pair.a.inode()));
    assert_eq!(t.pid, Some(std::process::id()));
    assert_eq!(t.comm.as_deref(), Some(comm.as_str()));
    assert_eq!(t.errno, Some(libc::ETIMEDOUT as u32));
    assert_eq!(t.cause, Some(Cause::Keepalive));
    let history: Vec<&Record> = records.iter().filter(|r| r.cookie == cookie).collect();
    // Probes before the drop rule took hold were answered (none on a fast
    // machine; some in a software-emulated VM, where set-up is slow): the
    // kernel's counter over the whole connection says how many in all.
    assert!(delta >= u64::from(FAST.cnt), "TCPKeepAlive delta {delta}");
    assert_eq!(
        t.probes,
        Some(delta as u32),
        "probes counted before the kill; the socket's records: {history:#?}"
    );
    assert_eq!(
        t.probes_out,
        Some(FAST.cnt),
        "unanswered probes at the kill"
    );
    assert_idle_then_unanswered(t);
    assert_eq!(
        count(&records, RecordKind::ProbeSent, cookie),
        delta as usize
    );
    assert_eq!(stopped.counters.keepalive_timeouts, 1);
    // The peer's link was up: every probe left through the veth; only
    // those before the drop were answered.
    assert_eq!(
        count(&records, RecordKind::WireProbe, cookie),
        delta as usize
    );
    assert_eq!(
        count(&records, RecordKind::ProbeAck, cookie),
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
    for event in [
        RecordKind::KeepaliveTimer,
        RecordKind::ProbeSent,
        RecordKind::WireProbe,
        RecordKind::ProbeAck,
    ] {
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
    assert_eq!(count(&records, RecordKind::ProbeSent, cookie), 0);
    assert_eq!(count(&records, RecordKind::WireProbe, cookie), 0);
}

#[test]
fn hooks_report_their_mode() {
    let agent = Agent::start(&[]);
    let timer = agent
        .ready
        .hook(Hook::KeepaliveTimer)
        .expect("keepalive_timer hook");
    assert!(timer.live);
    let mode = timer.mode;
    assert!(matches!(mode, HookMode::Fentry | HookMode::TpBtf), "{mode}");
    // The kernel matrix sets the mode each kernel must pick, so that a
    // silent fallback cannot pass.
    if let Ok(expected) = std::env::var("KEEPALIVE_EXPECT_TIMER_MODE") {
        assert_eq!(mode.as_str(), expected);
    }
    let tc = agent.ready.hook(Hook::Tc).expect("tc hook");
    assert!(tc.live);
    assert!(
        matches!(tc.mode, HookMode::Tcx | HookMode::Netlink),
        "{}",
        tc.mode
    );
    if let Ok(expected) = std::env::var("KEEPALIVE_EXPECT_TC_MODE") {
        assert_eq!(tc.mode.as_str(), expected);
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
    let timer = agent.ready.hook(Hook::KeepaliveTimer).expect("timer hook");
    assert_eq!((timer.mode, timer.live), (HookMode::Wire, false));
    // Replaced, not down: a restart would not bring the hook back.
    assert_eq!(agent.get("/healthz").0, 200);
    let (cookie, _, delta) = ns.run(|| idle_keepalive_client("127.0.0.1:0"));
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    assert_probes_match(&records, cookie, delta);
    assert_eq!(probes_in_netns(&records, ns.inode()), delta as usize);
    assert_eq!(stopped.counters.timer_fires, 0);
    assert_eq!(stopped.counters.probes_wire_only, delta);
    assert_eq!(stopped.counters.events_lost, 0);
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
    assert_eq!(count(&records, RecordKind::ProbeSent, zw.cookie), 0);
    let wire = of(&records, RecordKind::WireProbe, zw.cookie);
    assert_eq!(wire.len() as u64, zw.window_probes, "TCPWinProbe");
    assert!(
        wire.iter().all(|r| r.keepalive_probe == Some(false)),
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
