//! Known middlebox idle timeouts.

use serde::Serialize;

/// A named middlebox timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: &'static str,
    pub idle_timeout_s: u32,
    /// Layer 7: keepalive probes do not count as activity.
    pub l7: bool,
    /// What a user should know beyond the number.
    pub note: &'static str,
}

pub const PROFILES: &[Profile] = &[
    Profile {
        name: "aws-alb",
        idle_timeout_s: 60,
        l7: true,
        note: "ALB/CLB idle timeout counts payload bytes only (default 60 s)",
    },
    Profile {
        name: "aws-nlb",
        idle_timeout_s: 350,
        l7: false,
        note: "NLB TCP idle timeout (default 350 s), then RST on the next packet",
    },
    Profile {
        name: "aws-nat-gateway",
        idle_timeout_s: 350,
        l7: false,
        note: "NAT gateway drops idle TCP flows after 350 s",
    },
    Profile {
        name: "aws-ec2-conntrack",
        idle_timeout_s: 350,
        l7: false,
        note: "EC2 Nitro v6 connection tracking, established TCP idle 350 s",
    },
    Profile {
        name: "aws-network-firewall",
        idle_timeout_s: 350,
        l7: false,
        note: "AWS Network Firewall stateful idle timeout 350 s",
    },
    Profile {
        name: "azure-lb",
        idle_timeout_s: 240,
        l7: false,
        note: "Azure LB idle timeout (default 4 min); drops silently unless TCP reset is enabled",
    },
    Profile {
        name: "gcp-cloud-nat",
        idle_timeout_s: 1200,
        l7: false,
        note: "Cloud NAT established TCP idle timeout (default 1200 s)",
    },
    Profile {
        name: "gcp-lb",
        idle_timeout_s: 600,
        l7: true,
        note: "Google HTTP(S) LB backend keepalive timeout (600 s)",
    },
];
