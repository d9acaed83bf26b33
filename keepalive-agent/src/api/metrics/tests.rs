//! Rendering, the classic text format, capped port labels.

use std::collections::BTreeMap;

use keepalive_common::KernelCounters;

use super::{labels::PortLabels, *};
use crate::{
    api::naming::Naming,
    host::{runtime::directory::Directory, sysctl::KeepaliveSysctls},
    model::paths::PathBook,
    table::{Judge, SocketTable},
};

#[test]
fn converts_to_prometheus_text() {
    let om = "# HELP a_total x\n# HELP a x\n# TYPE a counter\na_total 1\n# HELP b_seconds y\n# TYPE b_seconds gauge\n# UNIT b_seconds seconds\nb_seconds 2\n# EOF\n";
    assert_eq!(
        to_prometheus_text(om),
        "# HELP a_total x\n# HELP a_total x\n# TYPE a_total counter\na_total 1\n# HELP b_seconds y\n# TYPE b_seconds gauge\nb_seconds 2\n"
    );
}

#[test]
fn port_labels_are_capped() {
    let mut p = PortLabels::new(2);
    assert_eq!(p.label(22), PortLabel::Port(22));
    assert_eq!(p.label(443), PortLabel::Port(443));
    assert_eq!(p.label(5432), PortLabel::Other);
    assert_eq!(p.label(22), PortLabel::Port(22));
}

#[test]
fn renders_openmetrics_with_units_and_eof() {
    let mut m = Metrics::new(MetricsConfig {
        max_port_labels: 8,
        netns_label: true,
        ..MetricsConfig::default()
    });
    let l = ScopePort {
        scope: m.scope(Workload::default(), Some(1)),
        port: PortLabel::Port(22),
    };
    m.probes.get_or_create(&l).inc();
    let table = SocketTable::new(4);
    let mut naming = Naming::new(Directory::new(None, 4));
    let text = m.render(Snapshot {
        hooks: &[],
        kernel: &KernelCounters::default(),
        table: &table,
        sysctls: &BTreeMap::from([(
            1,
            KeepaliveSysctls {
                time_s: 7200,
                intvl_s: 75,
                probes: 9,
                conntrack: None,
            },
        )]),
        judge: Judge {
            rules: &[],
            paths: &PathBook::new(4, 60),
            conntrack: &Default::default(),
        },
        tc_interfaces: 0,
        naming: &mut naming,
    });
    assert!(
        text.contains(
            "keepalive_probes_total{namespace=\"\",pod=\"\",container=\"\",service=\"\",netns=\"1\",port=\"22\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("keepalive_sysctl_time_seconds{netns=\"1\",namespace=\"\",pod=\"\"} 7200"),
        "{text}"
    );
    assert!(
        text.contains("keepalive_agent_build_info{version="),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}
