//! Servers that close idle connections, seen from both ends: a real
//! redis-server with `timeout 2` closes a client idle past it with a FIN,
//! the client's pool reuses the connection and gets EOF, then EPIPE; the
//! agent reports the peer's close with its idle gap (checked against the
//! moment the test's own socket saw the FIN), the client's RST as a stale
//! reuse and the server's RST as data after close, named `redis-server`.
//! A server that aborts idle connections (SO_LINGER 0) is an idle abort;
//! a client that closes first is neither. Client and server in their own
//! namespaces over a veth.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::{Duration, Instant},
};

use keepalive_api::{Hook, HookMode, IdleCloseRange, Record, RecordKind, ResetClass, TcpState};
use keepalive_tests::{
    agent::{Agent, of},
    cli::run_agent_cli,
    daemon::{self, Daemon, User},
    middlebox::{client, path_of},
    netstat::tcp_ext,
    world::{B_V4, B_V6, Pair},
};

const REDIS_PORT: u16 = 6390;
/// The server's idle close, and the pool's idle before it reuses.
const REDIS_TIMEOUT_S: u32 = 2;
const POOL_IDLE: Duration = Duration::from_secs(5);
/// How far the agent's idle gaps may be from what the test's socket saw
/// (a few jiffies, the test's 10 ms polling, and its wake-up in the
/// emulated VMs): the half second for a server's close, 0.3 s for
/// an abort.
const SLACK_S: f64 = 0.5;
const ABORT_SLACK_S: f64 = 0.3;

fn assert_within(what: &str, got: Option<f64>, want: f64, slack_s: f64) {
    let got = got.unwrap_or_else(|| panic!("{what}: none"));
    assert!(
        (got - want).abs() < slack_s,
        "{what}: agent {got} s, test {want} s"
    );
}

fn assert_near(what: &str, got: Option<f64>, want: f64) {
    assert_within(what, got, want, SLACK_S);
}

/// Waits until the peer's FIN has arrived on `s` (POLLRDHUP, nothing
/// read): when the test saw the server close.
fn wait_for_fin(s: &TcpStream, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let mut pfd = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd of a socket we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 10) };
        if n > 0 && pfd.revents & libc::POLLRDHUP != 0 {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "no FIN within {within:?}");
    }
}

/// redis-server on `bind` in `b`, closing clients idle `timeout_s` (0:
/// never).
fn redis(pair: &Pair, bind: &str, dir: &std::path::Path, timeout_s: u32) -> Daemon {
    let port = REDIS_PORT.to_string();
    let timeout = timeout_s.to_string();
    let argv = [
        "redis-server",
        "--bind",
        bind,
        "--port",
        &port,
        "--timeout",
        &timeout,
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        &dir.to_string_lossy(),
    ];
    Daemon::spawn(&pair.b, User::Root, "redis", &argv, dir)
}

fn ping(mut s: &TcpStream) -> std::io::Result<()> {
    s.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply)?;
    assert_eq!(&reply, b"+PONG\r\n");
    Ok(())
}

/// `advise` names both fixes: the client's pool evicts idle connections
/// below the server's idle close (the test process is a program the agent
/// does not know: the generic knob), and (where the server's RST was
/// seen) Redis keeps idle clients longer than the pool reused them after,
/// as `timeout N`.
fn assert_advice(agent: &Agent, to: SocketAddr, close_s: f64, server_side: bool) {
    let url = format!("http://{}", agent.addr());
    let out = run_agent_cli(&["advise", "--agent", &url], &[], Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out:?}");
    let text = out.stdout;
    eprintln!("{text}");
    let pool = ((close_s * 0.8).floor() as u32).max(1);
    let heading = format!("1 request to {to} reused after the server closed it (stale reuse)");
    assert!(text.contains(&heading), "{heading:?} not in:\n{text}");
    let knob = format!("the client pool evicts idle connections after {pool} s");
    assert!(text.contains(&knob), "{knob:?} not in:\n{text}");
    let server = "reset as data after close: this server closed connections idle for";
    assert_eq!(text.contains(server), server_side, "{server:?} in:\n{text}");
    if !server_side {
        return;
    }
    let redis = text
        .lines()
        .find(|l| l.starts_with("timeout ") && l.contains("CONFIG SET timeout"))
        .unwrap_or_else(|| panic!("no Redis timeout line in:\n{text}"));
    let keep: u32 = redis["timeout ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{redis}"));
    // Above the idle the pool reused after (5 s), not the 2 s it had.
    assert!(keep > POOL_IDLE.as_secs() as u32, "{redis}");
}

/// `/paths`' idle close of `to`'s destination group.
fn learned_idle_close(agent: &Agent, to: SocketAddr) -> IdleCloseRange {
    let paths = agent.paths();
    let row = paths
        .iter()
        .find(|p| p.path == path_of(to))
        .unwrap_or_else(|| panic!("no path {}: {paths:#?}", path_of(to)));
    row.idle_close.clone().expect("an idle close learned")
}

fn records_where(records: &[Record], pred: impl Fn(&Record) -> bool) -> Vec<&Record> {
    records.iter().filter(|r| pred(r)).collect()
}

/// How Redis's closed socket waits for the late data.
#[derive(Clone, Copy, PartialEq)]
enum Orphan {
    /// tcp_fin_timeout 60 s (the default): a time-wait socket in FIN-WAIT-2
    /// (tcp_time_wait), which resets late data without a MIB count.
    TimeWait,
    /// tcp_fin_timeout 120 s: the full socket stays in FIN-WAIT-2, and
    /// tcp_rcv_state_process aborts on the late data (TCPAbortOnData).
    FullSocket,
}

/// Before 6.10, tcp_v4_send_reset and tcp_v6_send_reset called the
/// tcp_send_reset tracepoint for full sockets only: a time-wait socket's
/// RST is not seen there (the full socket's abort on data is).
fn kernel_traces_time_wait_resets() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap()) >= (6, 10)
}

/// Redis closes the idle client; the client writes 3 s later.
fn redis_stale_reuse(v6: bool, orphan: Orphan) {
    let sent_seen = orphan == Orphan::FullSocket || kernel_traces_time_wait_resets();
    let pair = Pair::new();
    if orphan == Orphan::FullSocket {
        pair.b
            .exec(&["sysctl", "-qw", "net.ipv4.tcp_fin_timeout=120"]);
    }
    let aborts_before = pair.b.run(|| tcp_ext("TCPAbortOnData"));
    let dir = std::env::temp_dir().join(keepalive_tests::world::unique("kaidle"));
    std::fs::create_dir_all(&dir).unwrap();
    let ip = if v6 { B_V6 } else { B_V4 };
    let to = SocketAddr::new(ip.parse().unwrap(), REDIS_PORT);
    let mut server = redis(&pair, ip, &dir, REDIS_TIMEOUT_S);
    server.wait_listening(&pair.b, to);
    let mut agent = Agent::start(&[]);
    let sent = agent
        .ready
        .hook(Hook::TcpSendReset)
        .expect("tcp_send_reset hook");
    assert_eq!((sent.mode, sent.live), (HookMode::TpBtf, true));

    let (c, cookie, _) = client(&pair.a, to, None);
    ping(&c).unwrap();
    let last = Instant::now();
    let fin = wait_for_fin(&c, Duration::from_secs(10));
    let gap = fin.duration_since(last).as_secs_f64();
    assert!(
        (f64::from(REDIS_TIMEOUT_S)..f64::from(REDIS_TIMEOUT_S) + 2.0).contains(&gap),
        "redis closed after {gap} s"
    );
    thread::sleep(POOL_IDLE.saturating_sub(last.elapsed()));
    // The pool's reuse: the write is accepted (CLOSE-WAIT), the reply is
    // EOF, and the next write fails with the RST's EPIPE.
    let wrote = Instant::now();
    (&c).write_all(b"PING\r\n")
        .expect("a write in CLOSE-WAIT leaves");
    let closed_for = wrote.duration_since(fin).as_secs_f64();
    thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 16];
    assert_eq!((&c).read(&mut buf).unwrap(), 0, "EOF first");
    let err = (&c)
        .write_all(b"PING\r\n")
        .expect_err("then the RST's error");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    // The kernel's own count where it keeps one.
    let aborts = pair.b.run(|| tcp_ext("TCPAbortOnData")) - aborts_before;
    let expected_aborts = u64::from(orphan == Orphan::FullSocket);
    assert_eq!(
        aborts, expected_aborts,
        "TCPAbortOnData in redis's namespace"
    );
    let client_addr = c.local_addr().unwrap();

    let reset = agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionReset
        })
        .expect("no connection_reset record");
    let is_redis_side = |r: &Record| {
        r.event == RecordKind::ResetSent && r.local == Some(to) && r.remote == Some(client_addr)
    };
    let sent = agent.wait_for(Duration::from_secs(5), is_redis_side);
    assert_eq!(
        sent.is_some(),
        sent_seen,
        "reset_sent of redis's socket: {sent:?}"
    );
    let (a, b) = (pair.a.inode().to_string(), pair.b.inode().to_string());
    let metric = |name, labels: &[(&str, &str)]| agent.metric(name, labels);
    assert_eq!(
        metric(
            "keepalive_peer_closes_total",
            &[("after_idle", "true"), ("netns", &a)]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            "keepalive_connection_resets_total",
            &[("class", "stale_reuse"), ("netns", &a)]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            "keepalive_resets_sent_total",
            &[("class", "data_after_close"), ("netns", &b)]
        ),
        sent_seen.then_some(1.0)
    );
    // The server's idle close, learned for its destination group.
    let learned = learned_idle_close(&agent, to);
    assert_eq!(learned.count, 1);
    assert_near("learned idle close min", Some(learned.min_s), gap);
    assert_eq!(learned.min_s, learned.max_s);
    let gauge = agent.metric(
        "keepalive_peer_idle_close_seconds",
        &[("path", &path_of(to))],
    );
    assert_eq!(gauge, Some(learned.min_s));
    // Redis's own idle close, on its side: since its PONG.
    let own = agent.metric("keepalive_idle_close_seconds", &[("netns", &b)]);
    assert_near("keepalive_idle_close_seconds", own, gap);
    assert_advice(&agent, to, learned.min_s, sent_seen);
    agent.settle(Duration::from_millis(300));
    let (records, _) = agent.stop();

    let closes = of(&records, RecordKind::PeerClose, cookie);
    assert_eq!(closes.len(), 1, "{closes:#?}");
    let close = closes[0];
    eprintln!("{close:?}\n{reset:?}\n{sent:?}");
    assert_eq!(close.state, Some(TcpState::CloseWait));
    assert_eq!((close.local, close.remote), (Some(client_addr), Some(to)));
    assert_near("peer_close idle_before_s", close.idle_before_s, gap);

    assert_eq!(reset.class, Some(ResetClass::StaleReuse));
    assert_eq!(reset.state, Some(TcpState::CloseWait));
    assert_eq!(
        (reset.errno, reset.error.as_deref()),
        (Some(32), Some("EPIPE"))
    );
    assert_near("stale_reuse idle_before_s", reset.idle_before_s, gap);
    assert_near("stale_reuse closed_for_s", reset.closed_for_s, closed_for);
    assert_eq!(reset.pid, Some(std::process::id()));

    let _ = std::fs::remove_dir_all(&dir);
    let Some(sent) = sent else { return };
    assert_eq!(sent.class, Some(ResetClass::DataAfterClose));
    assert_eq!(sent.comm.as_deref(), Some("redis-server"));
    assert_eq!(sent.netns.map(u64::from), Some(pair.b.inode()));
    // Redis's idle close, from its side: since its PONG.
    assert_near("data_after_close idle_before_s", sent.idle_before_s, gap);
    assert_near(
        "data_after_close closed_for_s",
        sent.closed_for_s,
        closed_for,
    );
    assert_eq!(records_where(&records, is_redis_side).len(), 1);
}

#[test]
fn redis_idle_close_then_pool_reuse_v4() {
    redis_stale_reuse(false, Orphan::TimeWait);
}

#[test]
fn redis_idle_close_then_pool_reuse_v6() {
    redis_stale_reuse(true, Orphan::TimeWait);
}

#[test]
fn redis_idle_close_then_pool_reuse_abort_on_data() {
    redis_stale_reuse(false, Orphan::FullSocket);
}

/// A server that aborts its idle connection after 2 s (SO_LINGER 0): the
/// client's read fails with ECONNRESET, and the agent calls it an idle
/// abort with the silence the client saw before it.
#[test]
fn a_server_aborting_idle_connections_is_an_idle_abort() {
    let pair = Pair::new();
    let to = SocketAddr::new(B_V4.parse().unwrap(), 6391);
    let listener = pair.b.run(|| keepalive_tests::sock::listen(to));
    let mut agent = Agent::start(&[]);
    let server = thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        (&s).read_exact(&mut buf).unwrap();
        (&s).write_all(&buf).unwrap();
        thread::sleep(Duration::from_secs(2));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    });
    let (c, cookie, _) = client(&pair.a, to, None);
    (&c).write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&c).read_exact(&mut buf).unwrap();
    let last = Instant::now();
    let err = (&c).read(&mut buf).expect_err("the server's abort");
    let gap = last.elapsed().as_secs_f64();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    server.join().unwrap();
    let r = agent
        .wait_for(Duration::from_secs(5), |r| {
            r.cookie == cookie && r.event == RecordKind::ConnectionReset
        })
        .expect("no connection_reset record");
    let a = pair.a.inode().to_string();
    assert_eq!(
        agent.metric(
            "keepalive_connection_resets_total",
            &[("class", "idle_abort"), ("netns", &a)]
        ),
        Some(1.0)
    );
    let (records, _) = agent.stop();
    assert_eq!(r.class, Some(ResetClass::IdleAbort), "{r:?}");
    assert_eq!((r.errno, r.state), (Some(104), Some(TcpState::Established)));
    assert_within(
        "idle_abort idle_before_s",
        r.idle_before_s,
        gap,
        ABORT_SLACK_S,
    );
    // No FIN came first.
    assert!(of(&records, RecordKind::PeerClose, cookie).is_empty());
}

/// Controls: a client that closes its own idle connection first is no
/// peer close and no reset on either end; a server with no idle timeout
/// does not close an idle client.
#[test]
fn a_client_closing_first_and_a_server_without_timeout_are_neither() {
    let pair = Pair::new();
    let dir = std::env::temp_dir().join(keepalive_tests::world::unique("kaidle"));
    std::fs::create_dir_all(&dir).unwrap();
    let to = SocketAddr::new(B_V4.parse().unwrap(), REDIS_PORT);
    let mut server = redis(&pair, B_V4, &dir, 0);
    server.wait_listening(&pair.b, to);
    let mut agent = Agent::start(&[]);
    let (idle, idle_cookie, _) = client(&pair.a, to, None);
    let (closer, closer_cookie, _) = client(&pair.a, to, None);
    ping(&idle).unwrap();
    ping(&closer).unwrap();
    thread::sleep(Duration::from_secs(3));
    let closer_addr = closer.local_addr().unwrap();
    drop(closer);
    thread::sleep(Duration::from_millis(500));
    // Still open after 3.5 s idle: the server has no idle timeout.
    ping(&idle).unwrap();
    agent.settle(Duration::from_millis(500));
    let b = pair.b.inode().to_string();
    let a = pair.a.inode().to_string();
    assert_eq!(
        agent.metric("keepalive_peer_closes_total", &[("netns", &a)]),
        None
    );
    assert_eq!(
        agent.metric("keepalive_resets_sent_total", &[("netns", &b)]),
        None
    );
    let (records, _) = agent.stop();
    for cookie in [idle_cookie, closer_cookie] {
        assert!(of(&records, RecordKind::PeerClose, cookie).is_empty());
        assert!(of(&records, RecordKind::ConnectionReset, cookie).is_empty());
    }
    // Redis saw the closer's FIN: its socket's peer close is the server's
    // view of a client that closed first, after 3 s idle.
    let server_side = records_where(&records, |r| {
        r.event == RecordKind::PeerClose && r.remote == Some(closer_addr)
    });
    assert_eq!(server_side.len(), 1, "{server_side:#?}");
    assert!(records_where(&records, |r| r.event == RecordKind::ResetSent).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request on a kept-alive connection, its `ok` read.
fn get(mut s: &TcpStream) -> std::io::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.ends_with(b"ok") && !reply.ends_with(b"ok\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// `n` pooled HTTP connections, each reused `reuse_after` after its
/// request: the server's idle close first. Each reuse reads EOF (Python's
/// RemoteDisconnected): the server had closed; the returned gaps are the
/// test's own FIN timings.
fn http_reuses(pair: &Pair, to: SocketAddr, n: usize, reuse_after: Duration) -> Vec<(u64, f64)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let (c, cookie, _) = client(&pair.a, to, None);
        get(&c).unwrap();
        let last = Instant::now();
        let fin = wait_for_fin(&c, reuse_after + Duration::from_secs(5));
        seen.push((cookie, fin.duration_since(last).as_secs_f64()));
        thread::sleep(reuse_after.saturating_sub(last.elapsed()));
        let err = get(&c).expect_err("the server closed the idle connection");
        assert!(
            matches!(
                err.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
    seen
}

/// The agent's learned idle close of `to`'s destination, once every
/// `peer_close` of `seen` came in: each within the slack of the test's.
fn assert_learned(agent: &mut Agent, to: SocketAddr, seen: &[(u64, f64)]) -> (f64, f64) {
    for &(cookie, gap) in seen {
        let close = agent
            .wait_for(Duration::from_secs(5), |r| {
                r.cookie == cookie && r.event == RecordKind::PeerClose
            })
            .expect("no peer_close");
        assert_near("peer_close idle_before_s", close.idle_before_s, gap);
        let reset = agent
            .wait_for(Duration::from_secs(5), |r| {
                r.cookie == cookie && r.event == RecordKind::ConnectionReset
            })
            .expect("no connection_reset");
        assert_eq!(reset.class, Some(ResetClass::StaleReuse), "{reset:?}");
    }
    let learned = learned_idle_close(agent, to);
    assert_eq!(learned.count, seen.len() as u64);
    (learned.min_s, learned.max_s)
}

/// nginx with `keepalive_timeout 2s`: three pooled connections reused
/// after 5 s; its idle close learned within [1.8, 3] s, each late request
/// reset as data after close by an nginx worker.
#[test]
fn nginx_idle_close_is_learned() {
    let pair = Pair::new();
    let dir = std::env::temp_dir().join(keepalive_tests::world::unique("kaidle"));
    std::fs::create_dir_all(&dir).unwrap();
    let to = SocketAddr::new(B_V4.parse().unwrap(), 8090);
    let mut server = daemon::nginx(
        &pair.b,
        &dir,
        "keepalive_timeout 2s;",
        &format!("listen {to};\nlocation / {{ return 200 \"ok\"; }}"),
    );
    server.wait_listening(&pair.b, to);
    let mut agent = Agent::start(&[]);
    let seen = http_reuses(&pair, to, 3, POOL_IDLE);
    let (min, max) = assert_learned(&mut agent, to, &seen);
    assert!(min >= 1.8 && max <= 3.0, "nginx closes at {min}-{max} s");
    let b = pair.b.inode().to_string();
    assert_eq!(
        agent.metric(
            "keepalive_resets_sent_total",
            &[("class", "data_after_close"), ("netns", &b)]
        ),
        kernel_traces_time_wait_resets().then_some(3.0)
    );
    let (records, _) = agent.stop();
    let sent = records_where(&records, |r| {
        r.event == RecordKind::ResetSent && r.local == Some(to)
    });
    let traced = if kernel_traces_time_wait_resets() {
        3
    } else {
        0
    };
    assert_eq!(sent.len(), traced, "{sent:#?}");
    for r in sent {
        assert_eq!(r.class, Some(ResetClass::DataAfterClose));
        assert_eq!(r.comm.as_deref(), Some("nginx"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Node.js HTTP server with its default keepAliveTimeout (5 s; Node 20
/// closes about a second later, its buffer): a pool that reuses after 8 s
/// learns Node's idle close, and `advise` names `server.keepAliveTimeout`
/// for the server.
#[test]
fn node_default_keep_alive_timeout_is_learned_and_advised() {
    let pair = Pair::new();
    let dir = std::env::temp_dir().join(keepalive_tests::world::unique("kaidle"));
    std::fs::create_dir_all(&dir).unwrap();
    let to = SocketAddr::new(B_V4.parse().unwrap(), 8091);
    let script = format!(
        "require('http').createServer((q, s) => s.end('ok')).listen({}, '{}', () => console.log('listening'));",
        to.port(),
        to.ip()
    );
    let mut server = Daemon::spawn(&pair.b, User::Root, "node", &["node", "-e", &script], &dir);
    server.wait_listening(&pair.b, to);
    let mut agent = Agent::start(&[]);
    let seen = http_reuses(&pair, to, 1, Duration::from_secs(8));
    let (min, _) = assert_learned(&mut agent, to, &seen);
    assert!((5.0..7.0).contains(&min), "node closes at {min} s");
    let url = format!("http://{}", agent.addr());
    let out = run_agent_cli(&["advise", "--agent", &url], &[], Duration::from_secs(10));
    assert_eq!(out.code, Some(0), "{out:?}");
    let node = out
        .stdout
        .lines()
        .find(|l| l.starts_with("server.keepAliveTimeout = "))
        .unwrap_or_else(|| panic!("no server.keepAliveTimeout in:\n{}", out.stdout));
    // Above the 8 s the pool reused after.
    let ms: u64 = node["server.keepAliveTimeout = ".len()..]
        .split(';')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{node}"));
    assert!(ms > 8000, "{node}");
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
