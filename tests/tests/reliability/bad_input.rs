//! Bad flags, environment, HTTP requests and clients: clear errors, others still served.

use super::*;

/// Every `run` setting given a bad value through its environment variable:
/// a clap error naming the value, exit code 2, nothing started.
#[test]
fn invalid_environment_variables_are_errors_with_exit_code_2() {
    // (variable, value, the part clap quotes: one element of a list)
    let cases: &[(&str, &str, &str)] = &[
        ("KEEPALIVE_MAX_SOCKETS", "abc", "abc"),
        ("KEEPALIVE_MAX_SOCKETS", "0", "0"),
        ("KEEPALIVE_MAX_SOCKETS", "16777217", "16777217"),
        ("KEEPALIVE_IDLE_TIMEOUT", "bogus", "bogus"),
        ("KEEPALIVE_IDLE_TIMEOUT", "0", "0"),
        ("KEEPALIVE_IDLE_TIMEOUT", "60@10.0.0.0/33", "60@10.0.0.0/33"),
        ("KEEPALIVE_IDLE_TIMEOUT", "aws-nlb,,60", ""),
        ("KEEPALIVE_LISTEN", "nope", "nope"),
        ("KEEPALIVE_LISTEN", "127.0.0.1:99999", "127.0.0.1:99999"),
        ("KEEPALIVE_RING_BUFFER_BYTES", "5000", "5000"),
        ("KEEPALIVE_RING_BUFFER_BYTES", "2048", "2048"),
        ("KEEPALIVE_TIMER_MODE", "kprobe", "kprobe"),
        ("KEEPALIVE_RESCAN_SECONDS", "0", "0"),
        ("KEEPALIVE_INVENTORY_SECONDS", "x", "x"),
        ("KEEPALIVE_MAX_PORT_LABELS", "0", "0"),
        ("KEEPALIVE_MAX_EVENT_CLIENTS", "-1", "-1"),
        ("KEEPALIVE_JSON", "maybe", "maybe"),
        ("KEEPALIVE_NO_TC", "perhaps", "perhaps"),
        ("KEEPALIVE_QUIET", "2", "2"),
        ("KEEPALIVE_ALL_EVENTS", "yes please", "yes please"),
    ];
    for (var, value, shown) in cases {
        // --listen on the command line would override KEEPALIVE_LISTEN.
        // (and --quiet would override KEEPALIVE_QUIET).
        let args: &[&str] = if *var == "KEEPALIVE_LISTEN" {
            &["run"]
        } else {
            &["run", "--listen", "127.0.0.1:0"]
        };
        let out = run_agent_cli(args, &[(var, value)], Duration::from_secs(10));
        assert!(
            !out.timed_out,
            "{var}={value:?} was accepted: the agent started"
        );
        assert_eq!(out.code, Some(2), "{var}={value:?}: {out:?}");
        let lines = out.stderr_lines();
        assert!(
            lines[0].starts_with(&format!("error: invalid value '{shown}'")),
            "{var}={value:?}: {}",
            out.stderr
        );
        // The error, maybe the possible values, and clap's pointer to --help.
        assert!(lines.len() <= 3, "{var}={value:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        assert!(out.stdout.is_empty(), "{var}={value:?}: {}", out.stdout);
    }
}

/// `KEEPALIVE_LOG` takes error, warn, info, debug, trace (or env_logger
/// directives); a typo silently turns every log line off today.
#[test]
fn invalid_log_level_is_an_error() {
    for value in ["verbose", "warn=loud", "inf"] {
        let out = run_agent_cli(
            &["run", "--quiet", "--listen", "127.0.0.1:0"],
            &[("KEEPALIVE_LOG", value)],
            Duration::from_secs(10),
        );
        assert!(!out.timed_out, "KEEPALIVE_LOG={value:?} was accepted");
        assert_eq!(out.code, Some(2), "KEEPALIVE_LOG={value:?}: {out:?}");
        assert!(out.stderr.starts_with("error:"), "{}", out.stderr);
    }
}

/// 16 clients at once, 30 requests each, mixing every endpoint and bad
/// filters: every answer is the one a lone client gets.
#[test]
fn http_api_answers_concurrent_clients_exactly() {
    let agent = Daemon::start(&[]);
    let addr = agent.addr();
    let cases: &[(&[u8], u16)] = &[
        (b"/metrics", 200),
        (b"/sockets", 200),
        (b"/sockets?state=estab&port=22", 200),
        (b"/healthz", 200),
        (b"/sockets?port=abc", 400),
        (b"/events?state=ESTAB", 400),
        (b"/events?event=nope", 400),
        (b"/nope", 404),
    ];
    let t = Instant::now();
    let results: Vec<Vec<(usize, Option<u16>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let addr = addr.clone();
                s.spawn(move || {
                    (0..30)
                        .map(|j| {
                            let k = (i + j) % cases.len();
                            (
                                k,
                                raw_get_status(&addr, cases[k].0, Duration::from_secs(10)),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = t.elapsed();
    let mut n = 0;
    for (k, status) in results.into_iter().flatten() {
        n += 1;
        assert_eq!(
            status,
            Some(cases[k].1),
            "GET {}",
            String::from_utf8_lossy(cases[k].0)
        );
    }
    eprintln!("{n} concurrent requests answered in {elapsed:?}");
    assert_eq!(n, 480);
    assert_eq!(agent.get("/healthz").0, 200);
    agent.stop();
}

/// Oversized requests get hyper's 4xx, and a client that sends half a
/// request and waits does not hold up the others.
#[test]
fn oversized_and_partial_requests_get_4xx_without_blocking_others() {
    let agent = Daemon::start(&[]);
    let addr = agent.addr();
    let mut long = b"/sockets?port=".to_vec();
    long.resize(70_000, b'1');
    assert_eq!(
        raw_get_status(&addr, &long, Duration::from_secs(5)),
        Some(414)
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = b"GET /healthz HTTP/1.1\r\nHost: agent\r\n".to_vec();
    for i in 0..200 {
        req.extend_from_slice(format!("X-Header-{i}: x\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 431", "200 headers");
    let mut partial = TcpStream::connect(&addr).unwrap();
    partial.write_all(b"GET /heal").unwrap();
    for _ in 0..20 {
        assert_eq!(
            raw_get_status(&addr, b"/healthz", Duration::from_secs(5)),
            Some(200)
        );
    }
    drop(partial);
    agent.stop();
}

/// Connections that never send a complete request are closed after the
/// 30 s header-read timeout: otherwise each would hold a file descriptor of
/// the agent for ever, and any local user could exhaust its descriptors
/// (and with them those the BPF iterator and namespace visits need).
#[test]
fn idle_http_connections_are_closed() {
    let agent = Daemon::start(&[]);
    let addr = agent.addr();
    let pid = agent.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    idle[0].write_all(b"GET /heal").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(fds() >= before + 50);
    std::thread::sleep(Duration::from_secs(35));
    let mut closed = 0;
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 256];
        // EOF, or a 408 before it: the agent ended the connection.
        if s.read(&mut b).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 50, "idle connections still open after 35 s");
    assert!(fds() < before + 5, "agent fds {} (was {before})", fds());
    agent.stop();
}

/// An open `/events` stream on a raw socket; the status code is read.
pub(crate) fn open_events(addr: &str, rcvbuf: Option<usize>) -> (TcpStream, u16) {
    let to: SocketAddr = addr.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: agent\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed in the head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (s, status)
}

/// `--max-event-clients 4`: four streams, the fifth is refused with 503,
/// and slots come back when clients leave.
#[test]
fn event_clients_are_capped_and_slots_come_back() {
    let agent = Daemon::start(&["--max-event-clients", "4"]);
    let addr = agent.addr();
    let mut open: Vec<TcpStream> = (0..4)
        .map(|i| {
            let (s, status) = open_events(&addr, None);
            assert_eq!(status, 200, "client {i}");
            s
        })
        .collect();
    let (mut fifth, status) = open_events(&addr, None);
    assert_eq!(status, 503, "fifth /events client");
    let mut body = String::new();
    let _ = fifth.read_to_string(&mut body);
    assert!(body.contains("too many /events clients"), "{body:?}");
    // /sockets and /metrics are not capped.
    assert_eq!(agent.get("/sockets").0, 200);
    drop(open.drain(..2));
    let mut back = Vec::new();
    assert!(
        eventually(Duration::from_secs(3), || {
            let (s, status) = open_events(&addr, None);
            if status == 200 {
                back.push(s);
            }
            back.len() == 2
        }),
        "slots of closed clients did not come back"
    );
    assert_eq!(open_events(&addr, None).1, 503, "cap still enforced");
    agent.stop();
}

/// A client that stops reading while ~30 000 events flow: memory stays
/// bounded, and when it reads again its stream ends (it lagged) and the
/// drop is counted once.
#[test]
fn lagging_event_reader_is_cut_off_counted_and_memory_stays_bounded() {
    let ns = Netns::new("ksl");
    let agent = Daemon::start(&["--max-event-clients", "4"]);
    let pid = agent.pid();
    let (mut slow, status) = open_events(&agent.addr(), Some(4096));
    assert_eq!(status, 200);
    let read_before = agent
        .metric("keepalive_agent_events_read_total", &[])
        .unwrap();
    let rss_before = vm_rss_kib(pid);
    ns.run(|| connection_churn(3000));
    assert!(
        eventually(Duration::from_secs(10), || agent
            .metric("keepalive_agent_events_read_total", &[])
            .unwrap()
            - read_before
            >= 25_000.0),
        "the agent read fewer than 25 000 events"
    );
    let rss_after = vm_rss_kib(pid);
    // Read on: the buffered part, then the end of the chunked body.
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let ended = loop {
        match slow.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"\r\n0\r\n\r\n") {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let dropped = agent.metric("keepalive_agent_event_clients_dropped_total", &[]);
    eprintln!(
        "lagging reader: RSS {rss_before} -> {rss_after} KiB, read {} bytes before the end, dropped {dropped:?}",
        got.len()
    );
    assert!(ended, "the lagging client's stream never ended");
    assert_eq!(dropped, Some(1.0));
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    // Its slot is free again: four new clients fit.
    let addr = agent.addr();
    let fresh: Vec<_> = (0..4).map(|_| open_events(&addr, None)).collect();
    assert!(fresh.iter().all(|(_, s)| *s == 200));
    agent.stop();
}

/// A client that never reads again: the agent cuts it off by itself once
/// its socket took nothing for 10 s (else four such clients would hold
/// every slot for ever), counts it, and keeps its memory bounded.
#[test]
fn never_reading_event_client_is_disconnected() {
    let ns = Netns::new("ksn");
    let agent = Daemon::start(&["--max-event-clients", "1"]);
    let pid = agent.pid();
    let (_stuck, status) = open_events(&agent.addr(), Some(4096));
    assert_eq!(status, 200);
    let rss_before = vm_rss_kib(pid);
    ns.run(|| connection_churn(3000));
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = vm_rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let addr = agent.addr();
    assert!(
        eventually(Duration::from_secs(10), || open_events(&addr, None).1
            == 200),
        "the only /events slot is still held by a client that reads nothing"
    );
    assert!(
        agent
            .metric("keepalive_agent_event_clients_dropped_total", &[])
            .is_some_and(|v| v >= 1.0)
    );
    agent.stop();
}

/// Flags that cannot work are refused before the kernel is touched:
/// exit 2, one clap-style line, nothing loaded.
#[test]
fn impossible_flags_exit_2_before_loading_anything() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--interfaces", ""], "--interfaces"),
        (&["--interfaces", "eth0,"], "--interfaces"),
        (&["--idle-timeout", "60@:0"], "--idle-timeout"),
        (
            &["--ring-buffer-bytes", "2147483648"],
            "--ring-buffer-bytes",
        ),
        (&["--listen", &busy], "--listen"),
        // TEST-NET-1: no address of this host.
        (&["--listen", "192.0.2.99:9977"], "--listen"),
    ];
    let before = orphans();
    for (flags, named) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        let started = Instant::now();
        let out = run_agent_cli(&args, &[], Duration::from_secs(10));
        let took = started.elapsed();
        assert_eq!(out.code, Some(2), "{flags:?}: {out:?}");
        assert!(out.stderr.contains(named), "{flags:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        assert!(took < Duration::from_secs(2), "{flags:?} took {took:?}");
    }
    // (Objects of an agent stopped just before may still be on their way
    // out: only new ones would be ours.)
    let new: Vec<String> = orphans()
        .into_iter()
        .filter(|o| !before.contains(o))
        .collect();
    assert!(new.is_empty(), "left loaded: {new:?}");
}

/// Boolean environment variables take the usual spellings, as Kubernetes
/// manifests write them.
#[test]
fn boolean_environment_variables_take_1_and_yes() {
    let agent = Daemon::launch(Launch {
        env: &[
            ("KEEPALIVE_JSON", "1"),
            ("KEEPALIVE_ALL_EVENTS", "yes"),
            ("KEEPALIVE_NO_TC", "0"),
        ],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("1/yes/0 refused: {e:?}"));
    let tc = agent.ready.hook(Hook::Tc).expect("tc hook");
    assert!(tc.live, "KEEPALIVE_NO_TC=0 turned the classifiers off");
    agent.stop();
}

/// A filter given twice is a 400, whichever value would have won.
#[test]
fn a_filter_given_twice_is_a_400() {
    let agent = Daemon::start(&[]);
    for target in [
        "/sockets?port=1&port=2",
        "/events?event=probe_sent&event=probe_ack",
    ] {
        let status = raw_get_status(&agent.addr(), target.as_bytes(), Duration::from_secs(5));
        assert_eq!(status, Some(400), "{target}");
    }
    agent.stop();
}
