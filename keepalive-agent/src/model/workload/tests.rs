//! The advisor against hand-made rows: each program's knob, pods, layer 7.
use keepalive_api::{Owner, ProgramInfo, Risk};

use super::*;

fn row(program: Program, local: &str, remote: &str, keepalive: Option<Keepalive>) -> SocketRow {
    let risk = match &keepalive {
        None => Some(RiskReason::KeepaliveOff),
        Some(k) if k.idle_s >= 350.0 => Some(RiskReason::IdleExceedsTimeout),
        Some(_) => None,
    };
    SocketRow {
        cookie: 1,
        netns: Some(9),
        state: TcpState::Established,
        local: Some(local.parse().unwrap()),
        remote: Some(remote.parse().unwrap()),
        owner: Some(Owner {
            pid: 42,
            comm: program.to_string(),
            program: Some(ProgramInfo {
                program,
                evidence: Evidence::Comm,
                version: None,
            }),
            ..Owner::default()
        }),
        pod: None,
        namespace: None,
        container: None,
        pod_uid: None,
        uid: 0,
        inode: 1,
        keepalive,
        idle_s: None,
        probes_out: 0,
        probes: 0,
        acks: 0,
        last_rtt_us: None,
        dead_after_s: None,
        risk: risk.map(|reason| Risk {
            profile: "aws-nlb".into(),
            idle_timeout_s: 350,
            reason,
            basis: RiskBasis::Configured,
        }),
    }
}

fn keepalive(idle_s: f64, source: Source) -> Keepalive {
    Keepalive {
        enabled: true,
        idle_s,
        idle_source: source,
        interval_s: 60.0,
        interval_source: source,
        count: 5,
        count_source: source,
        detection_s: idle_s + 300.0,
    }
}

#[test]
fn each_program_gets_its_own_knob() {
    let listener = row(Program::Nginx, "192.0.2.1:80", "0.0.0.0:0", None);
    let listening = [(listener.netns.unwrap(), 80)].into_iter().collect();
    let mut a = Advisor::new(Some(1), listening);
    a.add(&row(
        Program::Nginx,
        "192.0.2.1:80",
        "192.0.2.9:5000",
        Some(keepalive(400.0, Source::Socket)),
    ));
    a.add(&row(
        Program::Nginx,
        "192.0.2.1:40000",
        "192.0.2.7:8080",
        None,
    ));
    a.add(&row(
        Program::Python,
        "192.0.2.1:40001",
        "192.0.2.7:9",
        None,
    ));
    a.add(&row(
        Program::Postgres,
        "192.0.2.1:40002",
        "192.0.2.7:9",
        Some(keepalive(7200.0, Source::Sysctl)),
    ));
    let out = a.finish();
    let find = |p: Program, side: Side| {
        out.iter()
            .find(|w| w.program == p && w.side == side)
            .unwrap_or_else(|| panic!("{p} {side:?}: {out:#?}"))
    };
    let listen = &find(Program::Nginx, Side::Inbound).fixes[0];
    assert_eq!(listen.kind, FixKind::SocketTiming);
    assert_eq!(
        listen.change,
        ["listen … so_keepalive=175s:29s:9;   # idle:interval:count on the listen directive"]
    );
    assert!(
        listen
            .alternative
            .as_deref()
            .unwrap()
            .contains("so_keepalive=on")
    );
    let upstream = &find(Program::Nginx, Side::Outbound).fixes[0];
    assert_eq!(upstream.kind, FixKind::SwitchOn);
    assert!(upstream.change[0].starts_with("proxy_socket_keepalive on;"));
    assert_eq!(upstream.sysctls[0], "net.ipv4.tcp_keepalive_time = 175");
    assert_eq!(
        upstream.sysctl_scope,
        Some(SysctlScope::Netns {
            inode: 9,
            pid: Some(42)
        })
    );
    let python = &find(Program::Python, Side::Any).fixes[0];
    assert!(python.change[0].contains("SO_KEEPALIVE, 1"));
    let pg = &find(Program::Postgres, Side::Any).fixes[0];
    assert_eq!(pg.kind, FixKind::SysctlTiming);
    assert!(pg.change.is_empty());
    assert_eq!(pg.values.idle_s, 175);
    assert!(
        apply_sysctls(&SysctlScope::Pod, &pg.sysctls)
            .contains(&"  - name: net.ipv4.tcp_keepalive_time".to_string())
    );
}

#[test]
fn pods_get_their_security_context_and_l7_paths_get_pings() {
    let mut r = row(Program::Go, "10.1.0.5:40000", "10.2.0.9:443", None);
    r.pod = Some("web-0".into());
    r.namespace = Some("shop".into());
    r.container = Some("app".into());
    let mut ssh = row(
        Program::Ssh,
        "10.1.0.5:40001",
        "10.2.0.9:22",
        Some(keepalive(7200.0, Source::Sysctl)),
    );
    if let Some(risk) = ssh.risk.as_mut() {
        risk.reason = RiskReason::L7NeedsApplicationKeepalive;
        risk.idle_timeout_s = 60;
    }
    let mut a = Advisor::new(Some(1), Listening::new());
    a.add(&r);
    a.add(&ssh);
    let out = a.finish();
    let web = out.iter().find(|w| w.program == Program::Go).unwrap();
    assert_eq!(web.workload.label(), "pod shop/web-0 (app)");
    let fix = &web.fixes[0];
    assert_eq!(fix.sysctl_scope, Some(SysctlScope::Pod));
    let yaml = apply_sysctls(&SysctlScope::Pod, &fix.sysctls).join("\n");
    assert!(yaml.contains("securityContext:\n  sysctls:\n  - name: net.ipv4.tcp_keepalive_time\n    value: \"175\""), "{yaml}");
    let ssh = out.iter().find(|w| w.program == Program::Ssh).unwrap();
    let fix = &ssh.fixes[0];
    assert_eq!(fix.kind, FixKind::ApplicationPing);
    assert!(
        fix.change[0].starts_with("ServerAliveInterval 30"),
        "{fix:?}"
    );
    assert!(fix.sysctls.is_empty());
}
