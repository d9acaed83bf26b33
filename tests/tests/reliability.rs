//! Reliability and security against the real kernel: a full ring buffer and
//! a full socket map (events lost, counts exact), SIGTERM and SIGKILL (no
//! BPF object left behind, immediate restart), namespace churn (classifiers
//! follow, no error loop), bad input (flags, environment, HTTP, slow and
//! too many `/events` clients), least privilege (`setpriv`), a kernel that
//! refuses fentry, and random input to the HTTP filters and the CLI.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use keepalive_api::{Hook, HookMode, KernelCounters, Record, RecordKind, Stopped};
use keepalive_tests::{
    agent::{Agent as Daemon, Launch, of},
    bpf::{self as daemon, held_by, held_map, kernel_counters, orphans, still_alive, u64_keys},
    cli::{run_agent_cli, run_with_timeout},
    http::raw_get_status,
    netstat::{keepalive_probes_everywhere, probes_between, tcp_ext},
    proc::{self as caps, agent_capabilities, thread_caps, vm_rss_kib},
    rng::Rng,
    scenario,
    sock::{self, FAST},
    wait::eventually,
    world::{Netns, Pair, interfaces_everywhere},
};

fn count(records: &[Record], event: RecordKind, cookie: u64) -> usize {
    of(records, event, cookie).len()
}

/// A kernel counter by field: `counter(&stopped, |c| c.probes)`.
fn counter(stopped: &Stopped, field: impl Fn(&KernelCounters) -> u64) -> u64 {
    field(&stopped.counters)
}

/// `n` connected pairs with 1/1/3 keepalive on the client side, on loopback
/// of the calling thread's namespace.
fn keepalive_pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = sock::listen("127.0.0.1:0".parse().unwrap());
    let to = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let c = sock::connect(to, Some(FAST));
            let (s, _) = listener.accept().unwrap();
            (c, s)
        })
        .collect()
}

/// Opens and closes `n` loopback connections: about ten state-change
/// events each.
fn connection_churn(n: usize) {
    let listener = sock::listen("127.0.0.1:0".parse().unwrap());
    let to = listener.local_addr().unwrap();
    for _ in 0..n {
        let c = TcpStream::connect(to).unwrap();
        let (s, _) = listener.accept().unwrap();
        drop(c);
        drop(s);
    }
}

/// Every probe of a 1/1/3 client in `ns` (made after the agent started)
/// counted exactly: as the kernel's own TCPKeepAlive, on the wire, answered.
fn assert_probes_exact_in(agent: Daemon, ns: &Netns) -> Stopped {
    let mut agent = agent;
    let (cookie, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
    agent.settle(Duration::from_millis(500));
    let (records, stopped) = agent.stop();
    assert!(delta >= 2, "the kernel sent only {delta} probes");
    let d = delta as usize;
    let seen = |event| count(&records, event, cookie);
    let why = || {
        let mine: Vec<&Record> = records.iter().filter(|r| r.cookie == cookie).collect();
        format!(
            "netns {}: TCPKeepAlive {delta}; kernel {:?}; events of the socket: {mine:#?}",
            ns.inode(),
            stopped.counters
        )
    };
    assert_eq!(seen(RecordKind::ProbeSent), d, "probe_sent; {}", why());
    assert_eq!(seen(RecordKind::WireProbe), d, "wire_probe; {}", why());
    assert_eq!(seen(RecordKind::ProbeAck), d, "probe_ack; {}", why());
    stopped
}

/// A `keepalive_agent_*` counter in /metrics against the kernel map it
/// copies every second, read directly (bpftool) before and after: always
/// between the two reads, and equal to the kernel's when the kernel's did
/// not move (other tests on the node may keep it moving). Returns it.
fn assert_metric_mirrors_kernel(
    agent: &Daemon,
    metric: &str,
    counter: (&str, fn(&KernelCounters) -> u64),
) -> u64 {
    let (counter, field) = counter;
    let mut m = 0;
    for _ in 0..6 {
        let k1 = field(&kernel_counters(agent.pid()));
        std::thread::sleep(Duration::from_millis(1200));
        m = agent
            .metric(metric, &[])
            .unwrap_or_else(|| panic!("{metric} missing")) as u64;
        let k2 = field(&kernel_counters(agent.pid()));
        assert!(
            k1 <= m && m <= k2,
            "{metric} {m} outside the kernel's {counter} {k1}..={k2}"
        );
        if k1 == k2 {
            assert_eq!(m, k1, "{metric} vs kernel {counter}");
            return m;
        }
    }
    eprintln!("{counter} kept moving: {metric} only checked between kernel reads");
    m
}

// 1. Ring buffer overflow ------------------------------------------------

/// 300 keepalive sockets whose timers expire in the same timer-wheel slots
/// flood a 4096-byte ring (21 events of 192 bytes): events are lost and
/// counted, the agent keeps serving, and the kernel's probe counter is
/// still exactly what the kernel sent.
#[test]
fn ring_buffer_overflow_loses_events_but_kernel_counts_stay_exact() {
    const SOCKETS: usize = 300;
    let ns = Netns::new("kro");
    let agent = Daemon::start(&["--ring-buffer-bytes", "4096"]);
    let addr = agent.addr();
    let before = keepalive_probes_everywhere();
    let probes_at_before = kernel_counters(agent.pid()).probes;
    // /healthz, polled all along the burst.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let poller = std::thread::spawn(move || {
        let mut statuses = Vec::new();
        while stop_rx.try_recv().is_err() {
            statuses.push(raw_get_status(&addr, b"/healthz", Duration::from_secs(5)));
            std::thread::sleep(Duration::from_millis(100));
        }
        statuses
    });
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

// 2. Socket map full -----------------------------------------------------

/// `--max-sockets 8` and 30 keepalive sockets: the kernel map holds 8,
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
    let refused_metric = agent.metric("keepalive_agent_sockets_refused_total", &[]);
    let (_, stopped) = agent.stop();

    let ours_open = open_keys.intersection(&cookies).count();
    let full = counter(&stopped, |c| c.socket_map_full);
    eprintln!(
        "max-sockets 8, {SOCKETS} sockets: map held {} entries ({ours_open} ours) while open, \
         {} after close; socket_map_full {full}; sockets_refused {}; probes {} (TCPKeepAlive {delta})",
        open_keys.len(),
        closed_keys.len(),
        stopped.sockets_refused,
        counter(&stopped, |c| c.probes),
    );
    assert_eq!(open_keys.len(), 8, "the map is full at 8: {open_keys:?}");
    assert!(ours_open >= 1, "none of our sockets in the map");
    assert!(full > 0, "a full map refused nothing: {stopped:?}");
    assert!(
        full_metric > 0 && full_metric <= full,
        "keepalive_agent_socket_map_full_total {full_metric}"
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

// 3. SIGTERM and SIGKILL -------------------------------------------------

/// What the kernel must show of an agent in tp_btf mode: 7 programs (4
/// tracepoints, 2 classifiers, the iterator), 4 tracepoint links plus 2
/// TCX links per interface, the 5 named maps and .rodata.
fn assert_holds_its_objects(agent: &Daemon) -> daemon::BpfIds {
    let held = held_by(agent.pid());
    let interfaces = agent.ready.interfaces.len();
    assert!(interfaces >= 1, "{:?}", agent.ready);
    assert_eq!(held.tcx_links.len(), 2 * interfaces, "{held:?}");
    assert_eq!(held.links.len(), 4 + 2 * interfaces, "{held:?}");
    let (progs, maps, _) = daemon::live();
    let names = |objs: &[daemon::Object], ids: &BTreeSet<u64>| {
        objs.iter()
            .filter(|o| ids.contains(&o.id))
            .map(|o| o.name.clone())
            .collect::<BTreeSet<String>>()
    };
    let expected: BTreeSet<String> = [
        "timer_expire_entry",
        "timer_expire_exit",
        "inet_sock_set_state",
        "inet_sk_error_report",
        "tc_egress",
        "tc_ingress",
        "dump_tcp",
    ]
    .map(String::from)
    .into();
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

// 4. Namespace churn -----------------------------------------------------

fn lines_about(lines: &[String], what: &str, netns: u64) -> usize {
    let tail = format!(" in netns {netns}");
    lines
        .iter()
        .filter(|l| l.contains(what) && (l.ends_with(&tail) || l.contains(&format!("{tail} "))))
        .count()
}

const ATTACHED: &str = "tc: classifiers attached to ";
const GONE: &str = "is gone";

fn tc_interfaces(agent: &Daemon) -> f64 {
    agent
        .metric("keepalive_agent_tc_interfaces", &[])
        .expect("keepalive_agent_tc_interfaces")
}

/// The interface gauge equals the interfaces that exist (other tests may
/// be making namespaces too: a moment when nothing moved is waited for).
fn assert_gauge_matches_interfaces(agent: &Daemon, cycle: usize) {
    let mut seen = (0.0, 0);
    assert!(
        eventually(Duration::from_secs(5), || {
            let n = interfaces_everywhere();
            seen = (tc_interfaces(agent), n);
            seen.0 == n as f64 && interfaces_everywhere() == n
        }),
        "cycle {cycle}: tc_interfaces {} vs {} interfaces on the node",
        seen.0,
        seen.1
    );
}

/// Ten rounds of two namespaces joined by a veth pair, made and deleted
/// under a running agent: each interface gets its classifiers, each gone
/// one is forgotten, the interface gauge follows the node's interfaces (up
/// by four, back to its baseline when nothing else changed), the log
/// stays bounded, and a namespace made afterwards is counted exactly.
#[test]
fn namespace_churn_attaches_and_forgets_classifiers_without_error_loops() {
    const CYCLES: usize = 10;
    let agent = Daemon::start(&["--rescan-seconds", "1"]);
    let start = agent.stderr_len();
    let baseline = tc_interfaces(&agent);
    assert_gauge_matches_interfaces(&agent, 0);
    for cycle in 0..CYCLES {
        let mark = agent.stderr_len();
        let pair = Pair::new();
        let (a, b) = (pair.a.inode(), pair.b.inode());
        // lo and the veth end, in each namespace.
        let attached = agent.wait_stderr(mark, Duration::from_secs(5), |l| {
            lines_about(l, ATTACHED, a) == 2 && lines_about(l, ATTACHED, b) == 2
        });
        assert!(
            attached,
            "cycle {cycle}: classifiers not attached in netns {a}/{b}:\n{}",
            agent.stderr_since(mark).join("\n")
        );
        assert_gauge_matches_interfaces(&agent, cycle);
        let mark = agent.stderr_len();
        drop(pair);
        let forgotten = agent.wait_stderr(mark, Duration::from_secs(5), |l| {
            lines_about(l, GONE, a) == 2 && lines_about(l, GONE, b) == 2
        });
        assert!(
            forgotten,
            "cycle {cycle}: interfaces of netns {a}/{b} not forgotten:\n{}",
            agent.stderr_since(start).join("\n")
        );
        assert_gauge_matches_interfaces(&agent, cycle);
    }
    let log = agent.stderr_since(start);
    // Per cycle: 4 attached, 4 gone, and a summary per rescan that changed
    // something (a pair may take two or three rescans to appear).
    assert!(
        log.len() <= 14 * CYCLES + 10,
        "{} log lines for {CYCLES} cycles:\n{}",
        log.len(),
        log.join("\n")
    );
    let bad: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(bad.is_empty(), "warnings during churn: {bad:#?}");
    eprintln!(
        "{CYCLES} churn cycles: {} log lines, tc_interfaces {baseline} at start, {} at end",
        log.len(),
        tc_interfaces(&agent)
    );

    // A namespace born after all that is still counted exactly.
    let mark = agent.stderr_len();
    let ns = Netns::new("kcn");
    let inode = ns.inode();
    assert!(
        agent.wait_stderr(mark, Duration::from_secs(5), |l| lines_about(
            l, ATTACHED, inode
        ) == 1)
    );
    assert_probes_exact_in(agent, &ns);
}

/// A namespace deleted and another created between two rescans: the kernel
/// reuses the namespace inode (nsfs numbers are recycled) and the new
/// namespace's loopback has the same ifindex (1): keyed by (netns inode,
/// ifindex) alone, the new loopback would look covered and its probes be
/// missing from the wire view. The namespace cookie tells them apart.
#[test]
fn namespace_replaced_between_rescans_gets_classifiers() {
    let agent = Daemon::start(&["--rescan-seconds", "3"]);
    let mark = agent.stderr_len();
    let old = Netns::new("kro");
    let old_inode = old.inode();
    assert!(
        agent.wait_stderr(mark, Duration::from_secs(5), |l| lines_about(
            l, ATTACHED, old_inode
        ) == 1)
    );
    // Right after a rescan: about 3 s before the next one.
    let replaced_at = Instant::now();
    let mark = agent.stderr_len();
    drop(old);
    let mut new = Netns::new("krn");
    for _ in 0..10 {
        if new.inode() == old_inode {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        new = Netns::new("krn");
    }
    let reused = new.inode() == old_inode;
    let within = replaced_at.elapsed();
    let saw_gone = lines_about(&agent.stderr_since(mark), GONE, old_inode) > 0;
    eprintln!(
        "netns inode {old_inode} reused: {reused}, replaced in {within:?}, rescan in between: {saw_gone}"
    );
    let inode = new.inode();
    assert!(
        agent.wait_stderr(mark, Duration::from_secs(7), |l| lines_about(
            l, ATTACHED, inode
        ) >= 1),
        "loopback of the new netns {inode} never got classifiers (inode reused: {reused}):\n{}",
        agent.stderr_since(mark).join("\n")
    );
    assert_probes_exact_in(agent, &new);
}

// 5. Bad input -----------------------------------------------------------

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
fn open_events(addr: &str, rcvbuf: Option<usize>) -> (TcpStream, u16) {
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

// 6. Least privilege -----------------------------------------------------

fn bounding_set(caps: &[&str]) -> String {
    let mut s = String::from("-all");
    for c in caps {
        s.push_str(",+");
        s.push_str(c);
    }
    s
}

/// The bounding set for the agent: REQUIRED and START_ONLY of caps.rs,
/// minus `without`. (setpriv cannot add what our own bounding set lacks:
/// CAP_SYS_RESOURCE on this VM.)
fn agent_set(without: Option<u32>) -> String {
    let mut all = agent_capabilities("REQUIRED");
    all.extend(agent_capabilities("START_ONLY"));
    let mut names: Vec<&str> = all
        .iter()
        .filter(|c| Some(c.bit) != without)
        .map(|c| c.setpriv.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    bounding_set(&names)
}

fn mask(caps: &[caps::Capability]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1u64 << c.bit)
}

/// Under `setpriv` with the documented sets, the agent runs, every thread
/// holds the same capabilities: all of REQUIRED except START_ONLY (dropped
/// after start), nothing else; and probes are
/// counted exactly.
#[test]
fn runs_with_exactly_the_required_capabilities() {
    let set = agent_set(None);
    // REQUIRED is checked at start; START_ONLY (some of which are also
    // REQUIRED, e.g. CAP_SYSLOG for kallsyms) is dropped once started.
    let start_only = mask(&agent_capabilities("START_ONLY"));
    let required = mask(&agent_capabilities("REQUIRED")) & !start_only;
    let ns = Netns::new("kcp");
    let agent = Daemon::launch(Launch {
        prefix: &["setpriv", "--bounding-set", &set, "--"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent under {set}: {e:#?}"));
    let threads = thread_caps(agent.pid());
    let (_, _, eff0, prm0) = threads[0].clone();
    for (tid, name, eff, prm) in &threads {
        assert_eq!(
            (*eff, *prm),
            (eff0, prm0),
            "thread {tid} ({name}) differs from the main thread"
        );
        assert_eq!(
            *eff & required,
            required,
            "thread {tid} ({name}): CapEff {eff:x} lacks some of {required:x}"
        );
        assert_eq!(
            (*eff | *prm) & !required,
            0,
            "thread {tid} ({name}): CapEff {eff:x} CapPrm {prm:x} beyond {required:x} \
             (start-only {start_only:x} must be dropped)"
        );
    }
    eprintln!(
        "{} threads with CapEff {eff0:016x} under setpriv {set}",
        threads.len()
    );
    assert_probes_exact_in(agent, &ns);
}

/// Each required capability removed in turn: a start-up failure naming it,
/// one line, no panic, nothing loaded.
#[test]
fn each_missing_capability_is_named_and_nothing_starts() {
    for cap in agent_capabilities("REQUIRED") {
        let name = &cap.name;
        let set = agent_set(Some(cap.bit));
        let out = run_with_timeout(
            &["setpriv", "--bounding-set", &set, "--"],
            &["run", "--json", "--listen", "127.0.0.1:0"],
            &[("KEEPALIVE_LOG", "warn")],
            Duration::from_secs(20),
        );
        assert!(!out.timed_out, "started without {name}");
        assert_eq!(out.code, Some(1), "without {name}: {out:?}");
        let lines = out.stderr_lines();
        assert_eq!(lines.len(), 1, "without {name}: {}", out.stderr);
        assert!(
            lines[0].contains(&format!("missing capabilities: {name} (")),
            "without {name}: {}",
            lines[0]
        );
        assert!(!out.stderr.contains("panicked"));
        assert!(out.stdout.is_empty(), "{}", out.stdout);
    }
    assert!(
        eventually(Duration::from_secs(3), || orphans().is_empty()),
        "{:?}",
        orphans()
    );
}

/// caps.rs drops the start-only capabilities (CAP_SYSLOG, used for
/// /proc/kallsyms; CAP_SYS_RESOURCE where held) before the tokio runtime
/// starts its workers. capset(2) changes the calling thread only: every
/// thread must have lost them, not just the main one.
#[test]
fn start_only_capability_is_dropped_from_every_thread() {
    let set = agent_set(None);
    let agent = Daemon::launch(Launch {
        prefix: &["setpriv", "--bounding-set", &set, "--"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("dropped capabilities no longer needed: CAP_SYSLOG"))
    );
    let threads = thread_caps(agent.pid());
    assert!(
        threads.len() >= 3,
        "main thread and tokio workers: {threads:?}"
    );
    for (tid, name, eff, prm) in threads {
        for (bit, cap) in [(34, "CAP_SYSLOG"), (24, "CAP_SYS_RESOURCE")] {
            assert_eq!(
                (eff | prm) & (1 << bit),
                0,
                "thread {tid} ({name}) still holds {cap}"
            );
        }
        // What the run still needs stays.
        assert_ne!(eff & (1 << 39), 0, "thread {tid} ({name}) lost CAP_BPF");
    }
    agent.stop();
}

// 7. A kernel without the hook ------------------------------------------

/// `--timer-mode fentry` where the kernel refuses fentry: exit 1 with one
/// line (no verifier dump, no panic), nothing left loaded. Where the kernel
/// permits fentry, the agent must say it uses it.
#[test]
fn fentry_mode_where_refused_fails_in_one_line() {
    match Daemon::launch(Launch {
        args: &["--timer-mode", "fentry"],
        env: &[("KEEPALIVE_LOG", "warn")],
        ..Launch::default()
    }) {
        Ok(agent) => {
            let timer = agent.ready.hook(Hook::KeepaliveTimer).map(|h| h.mode);
            assert_eq!(timer, Some(HookMode::Fentry), "{:?}", agent.ready);
            agent.stop();
        }
        Err(exited) => {
            eprintln!("--timer-mode fentry: {:?}", exited.stderr);
            assert_eq!(exited.status.code(), Some(1), "{exited:?}");
            assert!(exited.records.is_empty(), "{exited:?}");
            let lines: Vec<&String> = exited
                .stderr
                .iter()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(lines.len(), 1, "{:#?}", exited.stderr);
            assert!(lines[0].starts_with("keepalive-agent: "), "{}", lines[0]);
            assert!(lines[0].len() < 400, "{}", lines[0]);
            assert!(!lines[0].contains("panicked"));
            assert!(
                eventually(Duration::from_secs(3), || orphans().is_empty()),
                "{:?}",
                orphans()
            );
        }
    }
}

/// The one line must say that fentry is what failed, and not suggest that
/// root lacks privileges.
#[test]
fn fentry_mode_error_names_fentry() {
    let out = run_agent_cli(
        &[
            "run",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--timer-mode",
            "fentry",
        ],
        &[("KEEPALIVE_LOG", "warn")],
        Duration::from_secs(20),
    );
    if out.stdout.contains("\"ready\"") {
        panic!("this kernel permits fentry: nothing to check");
    }
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("fentry"), "{}", lines[0]);
    assert!(!lines[0].contains("are you root"), "{}", lines[0]);
}

/// `--timer-mode tracepoint` is reported as tp_btf, without a note about
/// fentry (it was not tried), and counts exactly.
#[test]
fn tracepoint_mode_is_reported_and_counts_exactly() {
    let ns = Netns::new("ktp");
    let agent = Daemon::start(&["--timer-mode", "tracepoint"]);
    let timer = agent
        .ready
        .hook(Hook::KeepaliveTimer)
        .cloned()
        .expect("keepalive_timer hook");
    assert_eq!(timer.mode, HookMode::TpBtf);
    assert!(timer.live);
    assert_eq!(timer.note, None, "{timer:?}");
    assert_eq!(
        agent.metric(
            "keepalive_agent_hook_up",
            &[("hook", "keepalive_timer"), ("mode", "tp_btf")]
        ),
        Some(1.0)
    );
    assert_probes_exact_in(agent, &ns);
}

// 8. Random input --------------------------------------------------------

const STATES: &[&str] = &[
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
    "NEW-SYN-RECV",
];
const EVENTS: &[&str] = &[
    "keepalive_timer",
    "probe_sent",
    "wire_probe",
    "probe_ack",
    "keepalive_timeout",
    "connection_timeout",
    "socket_error",
    "state_change",
    "socket_closed",
    "sysctl_changed",
];

/// What the filter parser must answer for distinct `pairs` (the model of
/// filters.rs, written from its documentation).
fn expected_status(events: bool, pairs: &[(&str, &str)]) -> u16 {
    let allowed: &[&str] = if events {
        &["event", "port", "pid", "netns"]
    } else {
        &["port", "pid", "netns", "state", "risk"]
    };
    let ok = pairs.iter().all(|(k, v)| {
        allowed.contains(k)
            && match *k {
                "port" => v.parse::<u16>().is_ok(),
                "pid" | "netns" => v.parse::<u32>().is_ok(),
                "state" => STATES.contains(&v.to_ascii_uppercase().as_str()),
                "event" => EVENTS.contains(v),
                "risk" => matches!(*v, "true" | "false" | "1" | "0"),
                _ => false,
            }
    });
    if ok { 200 } else { 400 }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// 2000 query strings against /sockets and /events: well-formed ones
/// (distinct keys, percent-encoded) get exactly the status the parser's
/// rules give; garbage (bad escapes, stray `&=+#`, bytes over 0x7f, spaces)
/// gets 200 or 400. Never a 5xx, never a hang, and the agent stays healthy.
#[test]
fn random_query_strings_get_200_or_400_never_5xx_or_hang() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed);
    let agent = Daemon::start(&[]);
    let addr = agent.addr();
    let keys = [
        "port", "pid", "netns", "state", "event", "risk", "colour", "", "PORT", "port ",
    ];
    let values = [
        "22",
        "0",
        "65535",
        "65536",
        "-1",
        "+22",
        " 22",
        "abc",
        "",
        "4294967295",
        "4294967296",
        "99999999999999999999",
        "1e3",
        "estab",
        "ESTAB",
        "time-wait",
        "Time-Wait",
        "open",
        "probe_sent",
        "PROBE_SENT",
        "probe",
        "true",
        "false",
        "1",
        "yes",
        "ü",
        "%",
        "\u{0}",
        "a b",
    ];
    let garbage: &[&[u8]] = &[
        b"%",
        b"%z",
        b"%zz",
        b"%F0%28",
        b"%C3",
        b"&",
        b"=",
        b"==",
        b"+",
        b"?",
        b"#",
        b"/",
        b";",
        b"port",
        b"event",
        b"22",
        b"\xc3\xbc",
        b"\xff",
        b" ",
        b"\t",
        b"[",
        b"]",
        b"\"",
        b"{",
    ];
    let (mut exact, mut loose) = (0, 0);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..2000 {
        let events = i % 2 == 1;
        let path: &[u8] = if events { b"/events?" } else { b"/sockets?" };
        let mut target = path.to_vec();
        let expected = if rng.below(3) > 0 {
            // Well-formed: distinct keys.
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            for _ in 0..rng.below(4) {
                let k = *rng.pick(&keys);
                if pairs.iter().all(|(pk, _)| *pk != k) {
                    pairs.push((k, *rng.pick(&values)));
                }
            }
            let q: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            target.extend_from_slice(q.join("&").as_bytes());
            exact += 1;
            Some(expected_status(events, &pairs))
        } else {
            for _ in 0..1 + rng.below(40) {
                let piece = *rng.pick(garbage);
                target.extend_from_slice(piece);
            }
            loose += 1;
            None
        };
        let status = raw_get_status(&addr, &target, Duration::from_secs(5));
        let shown = String::from_utf8_lossy(&target).into_owned();
        let status = status.unwrap_or_else(|| panic!("seed {seed}: no answer to {shown:?}"));
        *statuses.entry(status).or_default() += 1;
        match expected {
            Some(want) => assert_eq!(status, want, "seed {seed}: GET {shown:?}"),
            None => assert!(
                status == 200 || status == 400,
                "seed {seed}: GET {shown:?} -> {status}"
            ),
        }
    }
    eprintln!("seed {seed}: {exact} well-formed, {loose} garbage queries: {statuses:?}");
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/sockets").0, 200);
    // Every /events stream was closed: all 32 slots are free again.
    let held: Vec<_> = (0..32).map(|_| open_events(&addr, None)).collect();
    assert!(
        held.iter().all(|(_, s)| *s == 200),
        "slots leaked by closed /events clients"
    );
    drop(held);
    agent.stop();
}

/// `--idle-timeout` values, random: valid ones (a profile or 1..=86400
/// seconds, optionally @CIDR[:PORT], @[IPv6/LEN]:PORT or @:PORT) are
/// advised on with their own timeout; known-bad ones exit 2 with a clap
/// error; garbage does one or the other. Never a panic.
#[test]
fn random_idle_timeout_values_never_crash_the_cli() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed);
    let profiles = [
        ("aws-alb", 60),
        ("aws-nlb", 350),
        ("aws-nat-gateway", 350),
        ("aws-ec2-conntrack", 350),
        ("aws-network-firewall", 350),
        ("azure-lb", 240),
        ("gcp-cloud-nat", 1200),
        ("gcp-lb", 600),
    ];
    let good_dest = [
        "",
        "@10.0.0.0/8",
        "@10.0.0.0/8:443",
        "@192.0.2.1",
        "@0.0.0.0/0",
        "@:443",
        "@:65535",
        "@[2001:db8::/32]:443",
        "@[2001:db8::]/32:5432",
        "@[::1]",
    ];
    let bad = [
        "aws-nbl",
        "0",
        "86401",
        "4294967296",
        "-5",
        "60s",
        "60@",
        "60@:",
        "60@:65536",
        "60@10.0.0.0/33",
        "60@300.1.1.1",
        "60@[::1",
        "60@[::1]x",
        "60@2001:db8::/32",
        "aws-nlb@@10.0.0.0/8",
        "",
        " 60",
        "AWS-NLB",
    ];
    let alphabet: Vec<char> = "0123456789@:/[].,-abcdefgnlsw \u{fc}\u{1F600}%"
        .chars()
        .collect();
    let (mut valid, mut invalid, mut random) = (0, 0, 0);
    for i in 0..450 {
        let (value, want): (String, Option<Option<u32>>) = match i % 3 {
            0 => {
                let (name, secs) = if rng.below(2) == 0 {
                    let (n, s) = *rng.pick(&profiles);
                    (n.to_string(), s)
                } else {
                    let s = 1 + rng.below(86_400) as u32;
                    (s.to_string(), s)
                };
                valid += 1;
                (format!("{name}{}", rng.pick(&good_dest)), Some(Some(secs)))
            }
            1 => {
                invalid += 1;
                (rng.pick(&bad).to_string(), Some(None))
            }
            _ => {
                random += 1;
                let n = rng.below(24);
                ((0..n).map(|_| *rng.pick(&alphabet)).collect(), None)
            }
        };
        let arg = format!("--idle-timeout={value}");
        let out = run_agent_cli(
            &["advise", &arg, "--agent", "http://127.0.0.1:1"],
            &[],
            Duration::from_secs(10),
        );
        assert!(!out.timed_out, "seed {seed}: {value:?} hung");
        assert!(
            !out.stderr.contains("panicked"),
            "seed {seed}: {value:?}: {}",
            out.stderr
        );
        match want {
            Some(Some(secs)) => {
                assert_eq!(out.code, Some(0), "seed {seed}: {value:?}: {out:?}");
                assert!(
                    out.stdout.contains(&format!("idle timeout {secs} s")),
                    "seed {seed}: {value:?}: {}",
                    out.stdout
                );
                // L7 profiles get application advice instead of sysctls.
                let l7 = value.starts_with("aws-alb") || value.starts_with("gcp-lb");
                assert_eq!(
                    out.stdout.contains("net.ipv4.tcp_keepalive_time = "),
                    !l7,
                    "seed {seed}: {value:?}: {}",
                    out.stdout
                );
            }
            Some(None) => {
                assert_eq!(out.code, Some(2), "seed {seed}: {value:?}: {out:?}");
                assert!(
                    out.stderr.starts_with("error: invalid value"),
                    "seed {seed}: {value:?}: {}",
                    out.stderr
                );
            }
            None => assert!(
                out.code == Some(0) || out.code == Some(2),
                "seed {seed}: {value:?}: {out:?}"
            ),
        }
    }
    eprintln!("seed {seed}: {valid} valid, {invalid} invalid, {random} random idle timeouts");
}
