//! One fix in the program's own terms, from its knowledge-table entry and
//! the timeout its sockets face, and the sysctl lines as they are applied
//! where the sockets live (node, pod, namespace).

use super::{Fix, FixKind, Pending, SysctlScope};
use crate::model::{
    knowledge::{self, Entry, Values},
    risk::advise,
};

pub(super) fn fix(
    entry: &Entry,
    version: Option<&str>,
    kind: FixKind,
    p: Pending,
    scope: SysctlScope,
) -> Fix {
    let advice = advise(p.timeout.idle_timeout_s);
    let values = entry.values(advice);
    let sysctl_values = Values {
        idle_s: advice.time_s,
        intvl_s: advice.intvl_s,
        count: advice.probes,
    };
    let fill = |t: &str| knowledge::fill(t, values);
    let lines = |t: Option<&str>| t.map(|t| fill(t).lines().map(str::to_owned).collect());
    let sysctls = sysctl_lines(sysctl_values);
    let (change, why, alternative, sysctls): (Vec<String>, _, _, Vec<String>) = match kind {
        // A program whose switch always sets the timing (Redis) is
        // switched on by its timing knob; the sysctls then never apply.
        FixKind::SwitchOn => match entry.enable_for(version) {
            Some(enable) => {
                let follows = !entry.enable_sets_timing(version);
                let sysctls = if follows { sysctls } else { Vec::new() };
                (vec![fill(enable)], entry.off.clone(), None, sysctls)
            }
            None => (
                lines(entry.set_timing_for(version)).unwrap_or_default(),
                entry.off.clone(),
                None,
                Vec::new(),
            ),
        },
        FixKind::SocketTiming => match entry.set_timing_for(version) {
            Some(set) => (
                lines(Some(set)).unwrap_or_default(),
                None,
                entry.leave_timing.as_deref().map(fill),
                if entry.leave_timing.is_some() {
                    sysctls
                } else {
                    Vec::new()
                },
            ),
            None => (Vec::new(), None, None, sysctls),
        },
        FixKind::SysctlTiming => (Vec::new(), None, None, sysctls),
        FixKind::ApplicationPing => (
            vec![entry.l7.as_deref().map_or_else(
                || {
                    format!(
                        "application-level pings, or HTTP keep-alive / pool idle timeouts, below {} s: a layer-7 proxy ignores TCP keepalive (no payload)",
                        p.timeout.idle_timeout_s
                    )
                },
                fill,
            )],
            None,
            None,
            Vec::new(),
        ),
    };
    Fix {
        kind,
        reason: p.reason,
        connections: p.connections,
        timeout: p.timeout,
        values: if kind == FixKind::SysctlTiming {
            sysctl_values
        } else {
            values
        },
        change,
        why,
        alternative,
        recommends: entry.recommends,
        sysctl_scope: (!sysctls.is_empty()).then_some(scope),
        sysctls,
        note: entry.note.clone(),
    }
}

fn sysctl_lines(v: Values) -> Vec<String> {
    vec![
        format!("net.ipv4.tcp_keepalive_time = {}", v.idle_s),
        format!("net.ipv4.tcp_keepalive_intvl = {}", v.intvl_s),
        format!("net.ipv4.tcp_keepalive_probes = {}", v.count),
    ]
}

/// How to apply sysctl lines in `scope`, as lines to paste.
pub fn apply_sysctls(scope: &SysctlScope, sysctls: &[String]) -> Vec<String> {
    let pairs = sysctls.iter().filter_map(|l| l.split_once(" = "));
    match scope {
        SysctlScope::Node => {
            let mut out = vec!["# /etc/sysctl.d/90-keepalive.conf, then sysctl --system".into()];
            out.extend(sysctls.iter().cloned());
            out
        }
        SysctlScope::Pod => {
            let mut out = vec![
                "# the pod's spec (safe sysctls since Kubernetes 1.29; earlier, allow them with the kubelet's --allowed-unsafe-sysctls):".into(),
                "securityContext:".into(),
                "  sysctls:".into(),
            ];
            for (name, value) in pairs {
                out.push(format!("  - name: {name}"));
                out.push(format!("    value: \"{value}\""));
            }
            out
        }
        SysctlScope::Netns { inode, pid } => {
            let enter = pid.map_or_else(
                || format!("# in network namespace {inode}:"),
                |pid| {
                    format!(
                        "# network namespace {inode}: nsenter --net=/proc/{pid}/ns/net sysctl -w …"
                    )
                },
            );
            let mut out = vec![enter];
            out.extend(pairs.map(|(name, value)| {
                pid.map_or_else(
                    || format!("sysctl -w {name}={value}"),
                    |pid| format!("nsenter --net=/proc/{pid}/ns/net sysctl -w {name}={value}"),
                )
            }));
            out
        }
    }
}
