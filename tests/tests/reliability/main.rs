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

mod bad_input;
mod health;
mod hook_fallback;
mod hostile_clients;
mod hostile_interfaces;
mod hostile_processes;
mod least_privilege;
mod lost_events;
mod map_full;
mod namespace_churn;
mod random_input;
mod ring_overflow;
mod signals;
mod stalled_output;
