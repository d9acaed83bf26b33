//! Health follows the node: a hook that attaches later is up from then
//! on, and one whose interfaces go is down again (`/healthz`, `hook_up`).

use super::*;

fn tc_up(agent: &Daemon) -> (u16, Option<f64>) {
    (
        agent.get("/healthz").0,
        agent.metric("keepalive_agent_hook_up", &[("hook", "tc")]),
    )
}

#[test]
fn tc_health_tracks_interfaces_that_come_and_go() {
    let ns = Netns::new("khl");
    let agent = Daemon::start(&["--interfaces", "rtz*", "--rescan-seconds", "1"]);
    assert_eq!(tc_up(&agent), (503, Some(0.0)), "no rtz* interface yet");
    let (_, body) = agent.get("/healthz");
    assert!(body.contains("tc"), "{body}");
    ns.exec(&[
        "ip", "link", "add", "rtzA", "type", "veth", "peer", "name", "rtzB",
    ]);
    let up = eventually(Duration::from_secs(5), || tc_up(&agent) == (200, Some(1.0)));
    assert!(
        up,
        "tc still down with rtzA/rtzB attached: {:?}",
        tc_up(&agent)
    );
    assert_eq!(
        agent.metric("keepalive_agent_tc_interfaces", &[]),
        Some(2.0)
    );
    ns.exec(&["ip", "link", "del", "rtzA"]);
    let down = eventually(Duration::from_secs(5), || tc_up(&agent) == (503, Some(0.0)));
    assert!(down, "tc still up with no interface: {:?}", tc_up(&agent));
    agent.stop();
}

/// A namespace's series leave with it: they would otherwise stay for ever
/// and merge into a namespace that reuses the inode.
#[test]
fn a_gone_namespace_takes_its_series_along() {
    let agent = Daemon::start(&["--inventory-seconds", "1"]);
    let ns = Netns::new("kgone");
    let ino = ns.inode().to_string();
    let (_, _, delta) =
        ns.run(|| scenario::idle_keepalive_client("127.0.0.1:0", Duration::from_millis(3500)));
    let probes = |agent: &Daemon| agent.metric("keepalive_probes_total", &[("netns", &ino)]);
    assert!(
        eventually(Duration::from_secs(5), || probes(&agent)
            == Some(delta as f64)),
        "probes of the namespace: {:?} (TCPKeepAlive {delta})",
        probes(&agent)
    );
    drop(ns);
    let gone = eventually(Duration::from_secs(10), || {
        !agent
            .get("/metrics")
            .1
            .contains(&format!("netns=\"{ino}\""))
    });
    assert!(gone, "series of the deleted namespace {ino} stayed");
    agent.stop();
}
