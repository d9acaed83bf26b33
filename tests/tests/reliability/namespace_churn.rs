//! Namespaces come and go: classifiers follow, without error loops.

use super::*;

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
