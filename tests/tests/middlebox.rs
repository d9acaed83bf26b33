//! Resets and silent drops after idle, explained per connection, and each
//! path's idle timeout learned: through a real middlebox (a router
//! namespace whose conntrack forgets idle flows after a few seconds, then
//! rejects or drops their next packet), checked against the application's
//! own errno and timing and the kernel's own counters.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use keepalive_api::{
    Cause, Hook, HookMode, PathRow, Record, RecordKind, ResetClass, RiskBasis, RiskReason,
    TcpState, Trigger,
};
use keepalive_tests::{
    agent::Agent,
    cli::run_agent_cli,
    middlebox::{Forget, Middlebox, client, exchange, path_of},
    netstat::tcp_snmp,
    sock,
    wait::eventually_some,
    world::{self, Pair},
};

/// The conntrack timeout of the middlebox, and idle gaps either side.
const TIMEOUT_S: u32 = 3;
const PAST: Duration = Duration::from_millis(4500);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The tcp_receive_reset hook is a BTF tracepoint on every kernel of the
/// matrix; the timer hooks (which see the stalls) are what the matrix says.
fn assert_hook_modes(agent: &Agent) {
    let reset = agent
        .ready
        .hook(Hook::TcpReceiveReset)
        .expect("tcp_receive_reset hook");
    assert_eq!((reset.mode, reset.live), (HookMode::TpBtf, true));
    let timer = agent.ready.hook(Hook::KeepaliveTimer).expect("timer hook");
    if let Ok(expected) = std::env::var("KEEPALIVE_EXPECT_TIMER_MODE") {
        assert_eq!(timer.mode.as_str(), expected);
    }
}

fn the_one(records: &[Record], event: RecordKind, cookie: u64) -> &Record {
    let found = keepalive_tests::agent::of(records, event, cookie);
    assert_eq!(found.len(), 1, "{event} records of {cookie}: {found:#?}");
    found[0]
}

/// Idle past the middlebox's timeout, then write: the application gets
/// ECONNRESET, and the agent one `connection_reset`, class `idle_reset`,
/// with the idle the application measured and the RST right after the write.
fn idle_reset(v6: bool) {
    let mb = Middlebox::new(TIMEOUT_S, Forget::Reset);
    let mut agent = Agent::start(&[]);
    assert_hook_modes(&agent);
    let to = mb.echo_server(v6);
    let (c, cookie, comm) = client(&mb.client, to, None);
    exchange(&c).unwrap();
    let last = Instant::now();
    let resets_before = mb.client.run(|| tcp_snmp("EstabResets"));
    thread::sleep(PAST);
    let app_idle = last.elapsed().as_secs_f64();
    let wrote_at = unix_now();
    let err = exchange(&c).expect_err("the middlebox forgot the flow");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let r = agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionReset
        })
        .expect("no connection_reset record");
    let netns = mb.client.inode().to_string();
    let counted = agent.metric(
        "keepalive_connection_resets_total",
        &[("class", "idle_reset"), ("netns", &netns)],
    );
    assert_eq!(counted, Some(1.0));
    agent.settle(Duration::from_millis(300));
    let (records, _) = agent.stop();
    eprintln!("{r:?}");
    assert_eq!(the_one(&records, RecordKind::ConnectionReset, cookie), &r);
    // The RST is the connection's one report of its death.
    assert!(keepalive_tests::agent::of(&records, RecordKind::SocketError, cookie).is_empty());
    assert_eq!(r.class, Some(ResetClass::IdleReset));
    assert_eq!(r.trigger, Some(Trigger::Write));
    assert_eq!(
        (r.errno, r.error.as_deref()),
        (Some(104), Some("ECONNRESET"))
    );
    assert_eq!(r.state, Some(TcpState::Established));
    assert_eq!(
        (r.local, r.remote),
        (Some(c.local_addr().unwrap()), Some(to))
    );
    assert_eq!(r.pid, Some(std::process::id()));
    assert_eq!(r.comm.as_deref(), Some(comm.as_str()));
    assert_eq!(r.netns.map(u64::from), Some(mb.client.inode()));
    let before = r.idle_before_s.expect("idle_before_s");
    assert!(
        (before - app_idle).abs() < 0.3,
        "idle {before} s, the app's {app_idle} s"
    );
    let since_send = r.since_send_s.expect("since_send_s");
    assert!(since_send < 0.2, "RST {since_send} s after the write");
    assert!(
        (r.time - wrote_at).abs() < 1.0,
        "record at {}, write at {wrote_at}",
        r.time
    );
    assert_eq!(r.keepalive.as_ref().map(|k| k.enabled), Some(false));
    assert_eq!(r.path.as_deref(), Some(path_of(to).as_str()));
    // The kernel's own count of resets of established connections.
    assert_eq!(mb.client.run(|| tcp_snmp("EstabResets")) - resets_before, 1);
}

#[test]
fn idle_reset_v4() {
    idle_reset(false);
}

#[test]
fn idle_reset_v6() {
    idle_reset(true);
}

/// Keepalive whose first probe comes after the middlebox's timeout: the
/// probe itself is reset, an idle reset triggered by the keepalive probe,
/// the gap before it the keepalive time.
#[test]
fn a_keepalive_probe_past_the_timeout_is_reset() {
    let mb = Middlebox::new(TIMEOUT_S, Forget::Reset);
    let mut agent = Agent::start(&[]);
    let to = mb.echo_server(false);
    let late = sock::Keepalive {
        idle: 4,
        intvl: 1,
        cnt: 3,
    };
    let (c, cookie, _) = client(&mb.client, to, Some(late));
    exchange(&c).unwrap();
    let err = (&c)
        .read(&mut [0u8; 1])
        .expect_err("the probe after 4 s idle is reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionReset
        })
        .expect("no connection_reset");
    agent.settle(Duration::from_millis(300));
    let (records, _) = agent.stop();
    let r = the_one(&records, RecordKind::ConnectionReset, cookie);
    eprintln!("{r:?}");
    assert_eq!(r.class, Some(ResetClass::IdleReset));
    assert_eq!(r.trigger, Some(Trigger::KeepaliveProbe));
    // The gap before the probe: the idle the keepalive timer saw when it
    // sent it (at least TCP_KEEPIDLE; the timer wheel fires a little late).
    let before = r.idle_before_s.expect("idle_before_s");
    let probe = the_one(&records, RecordKind::ProbeSent, cookie);
    assert_eq!(probe.probes_out, Some(1));
    let at_probe = probe.idle_s.expect("idle at the probe");
    assert!(
        (4.0..4.6).contains(&before) && (before - at_probe).abs() < 0.05,
        "gap {before} s before the probe, idle {at_probe} s at it"
    );
    assert_eq!(r.keepalive.as_ref().map(|k| k.idle_s), Some(4.0));
}

/// Keepalive probes below the middlebox's timeout keep the flow: the same
/// idle gap, then the write is answered; probes ACKed, no reset.
#[test]
fn keepalive_below_the_timeout_survives() {
    let mb = Middlebox::new(TIMEOUT_S, Forget::Reset);
    let mut agent = Agent::start(&[]);
    let to = mb.echo_server(false);
    let (c, cookie, _) = client(&mb.client, to, Some(sock::FAST));
    exchange(&c).unwrap();
    thread::sleep(PAST);
    exchange(&c).expect("keepalive kept the flow through the middlebox");
    agent.settle(Duration::from_millis(300));
    let paths = agent.paths();
    let (records, _) = agent.stop();
    assert!(keepalive_tests::agent::of(&records, RecordKind::ConnectionReset, cookie).is_empty());
    let acks = keepalive_tests::agent::of(&records, RecordKind::ProbeAck, cookie);
    // Probes at 1, 2, 3, 4 s of the 4.5 s gap (1 s idle, 1 s apart).
    assert!(acks.len() >= 3, "{acks:#?}");
    // Each answered probe proves the path kept the flow ~1 s idle.
    let row = paths
        .iter()
        .find(|p| p.path == path_of(to))
        .unwrap_or_else(|| panic!("no path {}: {paths:#?}", path_of(to)));
    let survived = row.survived.as_ref().expect("a survived gap").idle_s;
    assert!((1.0..2.0).contains(&survived), "{row:#?}");
    assert_eq!(
        (row.resets, row.blackholes, row.fatal.as_ref()),
        (0, 0, None)
    );
}

/// Connections idling below and above the timeout: the learned bounds
/// bracket it (survived < T <= fatal), `/paths` and the metrics agree,
/// and an idle connection on the path is judged against the learned bound.
#[test]
fn learned_bounds_bracket_the_timeout() {
    let mb = Middlebox::new(TIMEOUT_S, Forget::Reset);
    let agent = Agent::start(&["--inventory-seconds", "1"]);
    let to = mb.echo_server(false);
    let (idle_one, idle_cookie, _) = client(&mb.client, to, None);
    exchange(&idle_one).unwrap();
    let gaps = [2.0, 2.5, 4.0, 5.0];
    let outcomes: Vec<bool> = thread::scope(|s| {
        let handles: Vec<_> = gaps
            .iter()
            .map(|&gap| {
                let mb = &mb;
                s.spawn(move || {
                    let (c, _, _) = client(&mb.client, to, None);
                    exchange(&c).unwrap();
                    thread::sleep(Duration::from_secs_f64(gap));
                    let ok = exchange(&c).is_ok();
                    // Open past two scans: the next one sees it received.
                    thread::sleep(Duration::from_millis(2500));
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes, [true, true, false, false], "gaps {gaps:?}");
    let path = path_of(to);
    let row: PathRow = eventually_some(Duration::from_secs(5), || {
        agent
            .paths()
            .into_iter()
            .find(|p| p.path == path && p.survived.is_some() && p.resets == 2)
    })
    .unwrap_or_else(|| panic!("no bounds for {path}: {:#?}", agent.paths()));
    eprintln!("{row:#?}");
    let lower = row.survived.as_ref().unwrap().idle_s;
    let upper = row.fatal.as_ref().expect("a fatal gap").idle_s;
    let t = f64::from(TIMEOUT_S);
    assert!(lower < t && t <= upper, "{lower} < {t} <= {upper}");
    assert!(
        lower >= 1.0,
        "survived {lower} s: the 2.5 s gap was seen at a scan"
    );
    assert!((upper - 4.0).abs() < 0.3, "shortest fatal gap {upper} s");
    assert!(row.survived_count >= 2, "{row:#?}");
    assert_eq!(row.blackholes, 0);
    // Nothing known times out between 2 and 4 s.
    assert!(row.consistent_with.is_empty(), "{row:#?}");
    let label = [("path", path.as_str())];
    assert_eq!(
        agent.metric("keepalive_path_idle_survived_seconds", &label),
        Some(lower)
    );
    assert_eq!(
        agent.metric("keepalive_path_idle_fatal_seconds", &label),
        Some(upper)
    );
    // The idle connection without keepalive is judged against what was learned.
    let rows = agent.sockets("state=ESTAB");
    let idle = rows
        .iter()
        .find(|r| r.cookie == idle_cookie)
        .expect("idle socket");
    let risk = idle
        .risk
        .as_ref()
        .expect("at risk against the learned bound");
    assert_eq!(risk.basis, RiskBasis::Learned);
    assert_eq!(risk.reason, RiskReason::KeepaliveOff);
    assert_eq!(risk.idle_timeout_s, upper.floor() as u32);
    assert_eq!(row.sockets, 1);
    assert_eq!(row.at_risk, 1);
    assert_cli_shows(&agent, &row);
    agent.stop();
}

/// `paths` prints the row; `advise` (no --idle-timeout) advises a first
/// probe below the gap the path survived.
fn assert_cli_shows(agent: &Agent, row: &PathRow) {
    let url = format!("http://{}", agent.addr());
    let run = |args: &[&str]| {
        let out = run_agent_cli(args, &[], Duration::from_secs(10));
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
        out.stdout
    };
    let table = run(&["paths", "--agent", &url]);
    let line = table
        .lines()
        .find(|l| l.starts_with(&row.path))
        .unwrap_or_else(|| panic!("{} not in:\n{table}", row.path));
    let fatal = format!("<={:.1}s", row.fatal.as_ref().unwrap().idle_s);
    assert!(line.contains(&fatal) && line.contains(" 2 "), "{line}");
    let advice = run(&["advise", "--agent", &url, "--json"]);
    let advice: serde_json::Value = serde_json::from_str(&advice).unwrap();
    let learned = advice["learned"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["path"] == row.path.as_str()))
        .unwrap_or_else(|| panic!("{advice:#}"));
    let time = learned["advice"]["time_s"].as_f64().unwrap();
    let survived = row.survived.as_ref().unwrap().idle_s;
    assert!(
        time >= 1.0 && time < survived,
        "time {time} s, survived {survived} s"
    );
    let text = run(&["advise", "--agent", &url]);
    assert!(
        text.contains(&format!("net.ipv4.tcp_keepalive_time = {time}")),
        "{text}"
    );
}

/// A middlebox that drops the forgotten flow's packets: `idle_blackhole`
/// within a few seconds of the write, then the kernel's own ETIMEDOUT,
/// cause retransmit, carrying the same idle gap.
#[test]
fn idle_blackhole_then_retransmit_timeout() {
    let mb = Middlebox::new(TIMEOUT_S, Forget::Drop);
    mb.client
        .exec(&["sysctl", "-qw", "net.ipv4.tcp_retries2=3"]);
    let mut agent = Agent::start(&[]);
    assert_hook_modes(&agent);
    let to = mb.echo_server(false);
    let (c, cookie, _) = client(&mb.client, to, None);
    exchange(&c).unwrap();
    let last = Instant::now();
    thread::sleep(PAST);
    let app_idle = last.elapsed().as_secs_f64();
    let wrote_at = unix_now();
    let err = exchange(&c).expect_err("the middlebox dropped the flow");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionTimeout
        })
        .expect("no connection_timeout");
    agent.settle(Duration::from_millis(300));
    let paths = agent.paths();
    let (records, _) = agent.stop();
    let b = the_one(&records, RecordKind::IdleBlackhole, cookie);
    eprintln!("{b:?}");
    assert!(
        b.time - wrote_at < 3.0,
        "blackhole said {} s after the write",
        b.time - wrote_at
    );
    let before = b.idle_before_s.expect("idle_before_s");
    assert!(
        (before - app_idle).abs() < 0.3,
        "idle {before} s, the app's {app_idle} s"
    );
    assert_eq!(b.trigger, Some(Trigger::Write));
    assert!(b.retransmits.unwrap_or(0) >= 2, "{b:?}");
    assert_eq!(b.pid, Some(std::process::id()));
    let t = the_one(&records, RecordKind::ConnectionTimeout, cookie);
    assert_eq!(t.cause, Some(Cause::Retransmit));
    let t_before = t.idle_before_s.expect("idle_before_s");
    assert!((t_before - app_idle).abs() < 0.3, "{t:?}");
    let row = paths
        .iter()
        .find(|p| p.path == path_of(to))
        .expect("the path");
    assert_eq!((row.blackholes, row.resets), (1, 0));
    assert!((row.fatal.as_ref().unwrap().idle_s - before).abs() < 0.01);
}

/// An RST that is not after idle (the server aborts an active connection
/// with SO_LINGER 0): class `peer_reset`, nothing learned of the path.
#[test]
fn an_active_connection_reset_by_its_peer_is_a_peer_reset() {
    let pair = Pair::new();
    let mut agent = Agent::start(&[]);
    assert_hook_modes(&agent);
    let listener = pair
        .b
        .run(|| sock::listen(format!("{}:0", world::B_V4).parse().unwrap()));
    let to = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        for _ in 0..10 {
            (&conn).read_exact(&mut buf).unwrap();
            (&conn).write_all(&buf).unwrap();
        }
        socket2::SockRef::from(&conn)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(conn);
    });
    let (c, cookie, _) = client(&pair.a, to, None);
    let err = loop {
        if let Err(e) = exchange(&c) {
            break e;
        }
        thread::sleep(Duration::from_millis(20));
    };
    server.join().unwrap();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionReset
        })
        .expect("no connection_reset");
    let netns = pair.a.inode().to_string();
    let peer = [("class", "peer_reset"), ("netns", netns.as_str())];
    assert_eq!(
        agent.metric("keepalive_connection_resets_total", &peer),
        Some(1.0)
    );
    let idle = [("class", "idle_reset"), ("netns", netns.as_str())];
    assert_eq!(
        agent.metric("keepalive_connection_resets_total", &idle),
        None
    );
    let paths = agent.paths();
    let (records, _) = agent.stop();
    let r = the_one(&records, RecordKind::ConnectionReset, cookie);
    assert_eq!(r.class, Some(ResetClass::PeerReset));
    assert_eq!((r.trigger, r.idle_before_s), (None, None));
    assert_eq!(r.errno, Some(104));
    assert!(r.idle_s.unwrap() < 0.5, "{r:?}");
    assert!(
        paths.iter().all(|p| p.path != path_of(to) || p.resets == 0),
        "{paths:#?}"
    );
}

/// A namespace's own conntrack forgets idle flows too: its timeout is
/// exported, and the namespace's sockets are judged against it.
#[test]
fn a_namespace_conntrack_is_a_middlebox_too() {
    let ns = world::Netns::new("kct");
    let rules = "table inet kact {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tct state established,related accept\n\t}\n}\n";
    world::load_nft(&ns, rules);
    ns.exec(&[
        "sysctl",
        "-qw",
        "net.netfilter.nf_conntrack_tcp_timeout_established=120",
    ]);
    let agent = Agent::start(&["--inventory-seconds", "1"]);
    let listener = ns.run(|| sock::listen("127.0.0.1:0".parse().unwrap()));
    let to = listener.local_addr().unwrap();
    let short = sock::Keepalive {
        idle: 60,
        intvl: 10,
        cnt: 3,
    };
    let long = sock::Keepalive { idle: 300, ..short };
    let clients: Vec<_> = [None, Some(short), Some(long)]
        .into_iter()
        .map(|k| client(&ns, to, k))
        .collect();
    let _servers: Vec<_> = (0..3).map(|_| listener.accept().unwrap()).collect();
    let netns = ns.inode().to_string();
    let gauge = eventually_some(Duration::from_secs(5), || {
        agent.metric(
            "keepalive_conntrack_tcp_timeout_established_seconds",
            &[("netns", &netns)],
        )
    });
    assert_eq!(gauge, Some(120.0));
    let judged = |cookie: u64| {
        eventually_some(Duration::from_secs(5), || {
            let rows = agent.sockets(&format!("netns={netns}"));
            let row = rows.into_iter().find(|r| r.cookie == cookie)?;
            row.keepalive.is_some().then_some(row.risk)
        })
        .expect("socket inventoried")
    };
    let off = judged(clients[0].1).expect("keepalive off: at risk");
    assert_eq!(
        (
            off.basis,
            off.profile.as_str(),
            off.idle_timeout_s,
            off.reason
        ),
        (
            RiskBasis::Conntrack,
            "linux-conntrack",
            120,
            RiskReason::KeepaliveOff
        )
    );
    assert_eq!(judged(clients[1].1), None, "first probe at 60 s < 120 s");
    let late = judged(clients[2].1).expect("first probe at 300 s: at risk");
    assert_eq!(late.reason, RiskReason::IdleExceedsTimeout);
    agent.stop();
}
