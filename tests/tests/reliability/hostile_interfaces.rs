//! Interfaces any local user can make: uid 65534 (nobody) in a user and
//! network namespace of its own (`unshare -Urn`) with 150 veth pairs, as
//! the red team did. The agent, under a 300-descriptor limit, must attach
//! a bounded number per pass (the rest later), refuse, counted, the ones
//! whose descriptors are the API's, fold the namespace's series into the
//! node's, keep answering, and stop on SIGTERM.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use super::*;

const PAIRS: usize = 150;

/// nobody's namespace with `PAIRS` veth pairs up, held until killed.
struct HostileNamespace(std::process::Child);

impl HostileNamespace {
    fn make() -> HostileNamespace {
        let script = format!(
            "for i in $(seq 1 {PAIRS}); do ip link add a$i type veth peer name b$i || exit 1; \
             ip link set a$i up; ip link set b$i up; done; echo ready; exec sleep 1000"
        );
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "unshare",
                "-Urn",
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv and unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the hostile namespace's output");
        assert_eq!(
            line.trim(),
            "ready",
            "nobody could not make {PAIRS} veth pairs in its own namespace"
        );
        HostileNamespace(child)
    }
}

impl Drop for HostileNamespace {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn interfaces_a_user_makes_are_attached_in_bounded_passes_within_the_descriptor_limit() {
    let hostile = HostileNamespace::make();
    let agent = Daemon::launch(Launch {
        prefix: &["prlimit", "--nofile=300:300", "--"],
        args: &["--rescan-seconds", "1", "--inventory-seconds", "1"],
        ..Launch::default()
    })
    .unwrap_or_else(|e| panic!("agent did not become ready: {e:#?}"));
    // The first pass attached a bounded number, leaving the rest.
    let deferred = agent
        .stderr()
        .iter()
        .any(|l| l.contains("wait for the next pass"));
    assert!(deferred, "{:#?}", agent.stderr());
    // Later passes stop where the API's descriptors begin: refused, counted.
    let refused = eventually(Duration::from_secs(20), || {
        agent
            .metric(
                "keepalive_agent_untrusted_refused_total",
                &[("what", "tc_interface")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    assert!(refused, "no refusal counted: {:#?}", agent.stderr());
    // Each interface is counted once, however many passes (2 s) it waits.
    std::thread::sleep(Duration::from_secs(5));
    let refusals = agent
        .metric(
            "keepalive_agent_untrusted_refused_total",
            &[("what", "tc_interface")],
        )
        .unwrap_or(0.0);
    assert!(
        refusals <= (2 * PAIRS) as f64,
        "{refusals} refusals for {} interfaces: counted again at every pass",
        2 * PAIRS
    );
    let open = agent
        .metric("process_open_fds", &[])
        .expect("process_open_fds");
    let attached = agent
        .metric("keepalive_agent_tc_interfaces", &[])
        .expect("keepalive_agent_tc_interfaces");
    assert!(
        open <= 300.0 - 22.0,
        "{open} descriptors open: the API's 22 connections are not left"
    );
    assert!(
        attached < (2 * PAIRS) as f64,
        "{attached} interfaces attached under a 300-descriptor limit"
    );
    // nobody's namespace has the node's settings and no pod: its sysctl
    // series are the node's, folded and counted.
    let ino = std::fs::read_link(format!("/proc/{}/ns/net", hostile.0.id()))
        .expect("nobody's namespace")
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .to_string();
    let folded = eventually(Duration::from_secs(10), || {
        agent
            .metric(
                "keepalive_agent_untrusted_refused_total",
                &[("what", "netns_series")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    assert!(folded, "no namespace folded");
    let (_, text) = agent.get("/metrics");
    assert!(
        !text.contains(&format!("netns=\"{ino}\"")),
        "series of nobody's namespace {ino}"
    );
    // The API takes connections beyond what attaching could have used.
    let clients = keepalive_tests::nobody::Clients::start(&agent.addr(), 20, Some("/healthz"), 30);
    assert_eq!(clients.connected, 20, "connections the API took");
    let (status, _) = agent.get("/metrics");
    assert_eq!(status, 200);
    drop(clients);
    let signalled = Instant::now();
    let (_, stopped) = agent.stop();
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    eprintln!(
        "hostile interfaces: {} veth pairs by nobody; {attached} interfaces attached, {open} descriptors open of 300, stopped {:.2} s after SIGTERM ({} sockets refused)",
        PAIRS,
        took.as_secs_f64(),
        stopped.sockets_refused
    );
    drop(hostile);
}
