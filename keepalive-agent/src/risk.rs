//! Path idle timeouts (load balancers, NAT gateways, firewalls, conntrack)
//! and which sockets they endanger, plus the sysctl advice that fixes it.
//! Pure policy: no kernel access here.
//!
//! A middlebox forgets an idle flow after its timeout; the next packet gets
//! a reset or vanishes. TCP keepalive probes refresh L4 state (NLB, NAT,
//! conntrack, Azure LB) but not an L7 proxy's idle timer (ALB/CLB count
//! payload bytes), so for L7 profiles the fix is in the application.

use std::{fmt, net::IpAddr, str::FromStr};

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

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RiskError {
    #[error(
        "unknown idle-timeout profile {0:?}: use seconds or one of aws-alb, aws-nlb, aws-nat-gateway, aws-ec2-conntrack, aws-network-firewall, azure-lb, gcp-cloud-nat, gcp-lb"
    )]
    UnknownProfile(String),
    #[error("idle timeout must be 1..=86400 seconds, got {0}")]
    BadSeconds(String),
    #[error("bad destination {0:?}: expected CIDR, CIDR:PORT, [IPv6/LEN]:PORT or :PORT")]
    BadDestination(String),
}

/// Where a rule applies: an address block and/or a remote port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub net: Option<(IpAddr, u8)>,
    pub port: Option<u16>,
}

impl Destination {
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.net.is_none_or(|(n, len)| in_net(ip, n, len))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len as u32)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len as u32)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `--idle-timeout` value: `PROFILE|SECONDS[@DESTINATION]`, e.g. `aws-nlb`,
/// `300`, `azure-lb@10.0.0.0/8`, `aws-alb@:443`, `600@[2001:db8::]/32:5432`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub profile: Profile,
    pub destination: Option<Destination>,
}

impl FromStr for Rule {
    type Err = RiskError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (timeout, dest) = match s.split_once('@') {
            Some((t, d)) => (t, Some(d)),
            None => (s, None),
        };
        let profile = match PROFILES.iter().find(|p| p.name == timeout) {
            Some(p) => *p,
            None if timeout.bytes().all(|b| b.is_ascii_digit()) && !timeout.is_empty() => {
                let secs: u32 = timeout
                    .parse()
                    .map_err(|_| RiskError::BadSeconds(timeout.into()))?;
                if !(1..=86_400).contains(&secs) {
                    return Err(RiskError::BadSeconds(timeout.into()));
                }
                Profile {
                    name: "custom",
                    idle_timeout_s: secs,
                    l7: false,
                    note: "configured idle timeout",
                }
            }
            None => return Err(RiskError::UnknownProfile(timeout.into())),
        };
        let destination = dest.map(parse_destination).transpose()?;
        Ok(Rule {
            profile,
            destination,
        })
    }
}

fn parse_destination(s: &str) -> Result<Destination, RiskError> {
    let bad = || RiskError::BadDestination(s.into());
    // (address[/len], port) as text.
    let (net, port): (Option<String>, Option<&str>) = if let Some(port) = s.strip_prefix(':') {
        (None, Some(port))
    } else if let Some(rest) = s.strip_prefix('[') {
        // [2001:db8::/32]:443 or [2001:db8::]/32:443
        let (inside, tail) = rest.split_once(']').ok_or_else(bad)?;
        let (len, port) = match tail.split_once(':') {
            Some((len, port)) => (len, Some(port)),
            None => (tail, None),
        };
        if !len.is_empty() && !len.starts_with('/') {
            return Err(bad());
        }
        (Some(format!("{inside}{len}")), port)
    } else {
        match s.split_once(':') {
            Some((net, port)) => (Some(net.to_string()), Some(port)),
            None => (Some(s.to_string()), None),
        }
    };
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad()))
        .transpose()?;
    let net = net
        .map(|n| {
            let (addr, len) = match n.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (n.as_str(), None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
                None => max,
            };
            Ok::<_, RiskError>((addr, len))
        })
        .transpose()?;
    if net.is_none() && port.is_none() {
        return Err(bad());
    }
    Ok(Destination { net, port })
}

/// Why a socket is at risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// SO_KEEPALIVE is off: nothing keeps the path's state alive while idle.
    KeepaliveOff,
    /// Keepalive is on, but its first probe comes after the path forgot the flow.
    IdleExceedsTimeout,
    /// An L7 proxy: keepalive probes carry no payload and do not count.
    L7NeedsApplicationKeepalive,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::KeepaliveOff => "keepalive_off",
            Reason::IdleExceedsTimeout => "idle_exceeds_timeout",
            Reason::L7NeedsApplicationKeepalive => "l7_needs_application_keepalive",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Risk {
    pub profile: &'static str,
    pub idle_timeout_s: u32,
    pub reason: Reason,
}

/// The first rule whose destination matches (rules with a destination are
/// tried before global ones, in the order given). Loopback never crosses a
/// middlebox, so global rules skip it.
pub fn rule_for(rules: &[Rule], remote: IpAddr, remote_port: u16) -> Option<&Rule> {
    rules
        .iter()
        .find(|r| {
            r.destination
                .as_ref()
                .is_some_and(|d| d.matches(remote, remote_port))
        })
        .or_else(|| {
            if remote.is_loopback() {
                None
            } else {
                rules.iter().find(|r| r.destination.is_none())
            }
        })
}

/// The risk of an established socket towards `remote`, given its effective
/// keepalive idle time (None when keepalive is off).
pub fn assess(
    rules: &[Rule],
    remote: IpAddr,
    remote_port: u16,
    keepalive_idle_s: Option<f64>,
) -> Option<Risk> {
    let rule = rule_for(rules, remote, remote_port)?;
    let p = rule.profile;
    let reason = if p.l7 {
        Reason::L7NeedsApplicationKeepalive
    } else {
        match keepalive_idle_s {
            None => Reason::KeepaliveOff,
            Some(idle) if idle >= p.idle_timeout_s as f64 => Reason::IdleExceedsTimeout,
            Some(_) => return None,
        }
    };
    Some(Risk {
        profile: p.name,
        idle_timeout_s: p.idle_timeout_s,
        reason,
    })
}

/// Recommended `net.ipv4.tcp_keepalive_*` for a path idle timeout: first
/// probe at half the timeout, then probes every 10–30 s, 6–9 of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Advice {
    pub time_s: u32,
    pub intvl_s: u32,
    pub probes: u32,
    /// time + intvl × probes: how long a dead peer goes unnoticed.
    pub detection_s: u32,
}

pub fn advise(idle_timeout_s: u32) -> Advice {
    let time_s = (idle_timeout_s / 2).max(1);
    let intvl_s = (idle_timeout_s / 12).clamp(10, 30);
    let probes = if idle_timeout_s >= 300 { 9 } else { 6 };
    Advice {
        time_s,
        intvl_s,
        probes,
        detection_s: time_s + intvl_s * probes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_profiles_seconds_and_destinations() {
        let r: Rule = "aws-nlb".parse().unwrap();
        assert_eq!(r.profile.idle_timeout_s, 350);
        assert!(r.destination.is_none());
        let r: Rule = "300@10.0.0.0/8:5432".parse().unwrap();
        assert_eq!(r.profile.idle_timeout_s, 300);
        let d = r.destination.unwrap();
        assert!(d.matches("10.1.2.3".parse().unwrap(), 5432));
        assert!(!d.matches("10.1.2.3".parse().unwrap(), 5433));
        assert!(!d.matches("11.1.2.3".parse().unwrap(), 5432));
        let r: Rule = "aws-alb@:443".parse().unwrap();
        assert!(
            r.destination
                .unwrap()
                .matches("192.0.2.9".parse().unwrap(), 443)
        );
        let r: Rule = "azure-lb@[2001:db8::]/32:80".parse().unwrap();
        assert!(
            r.destination
                .unwrap()
                .matches("2001:db8:1::5".parse().unwrap(), 80)
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            "aws-nbl".parse::<Rule>(),
            Err(RiskError::UnknownProfile(_))
        ));
        assert!(matches!("0".parse::<Rule>(), Err(RiskError::BadSeconds(_))));
        assert!(matches!(
            "99999999999".parse::<Rule>(),
            Err(RiskError::BadSeconds(_))
        ));
        for bad in [
            "60@",
            "60@10.0.0.0/33",
            "60@10.0.0.0:99999",
            "60@[::1",
            "60@nonsense",
        ] {
            assert!(
                matches!(bad.parse::<Rule>(), Err(RiskError::BadDestination(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn risk_rules() {
        let rules: Vec<Rule> = vec!["aws-alb@:443".parse().unwrap(), "aws-nlb".parse().unwrap()];
        let remote: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            assess(&rules, remote, 5432, None).unwrap().reason,
            Reason::KeepaliveOff
        );
        assert_eq!(
            assess(&rules, remote, 5432, Some(7200.0)).unwrap().reason,
            Reason::IdleExceedsTimeout
        );
        assert_eq!(
            assess(&rules, remote, 5432, Some(350.0)).unwrap().reason,
            Reason::IdleExceedsTimeout
        );
        assert!(assess(&rules, remote, 5432, Some(60.0)).is_none());
        assert_eq!(
            assess(&rules, remote, 443, Some(30.0)).unwrap().reason,
            Reason::L7NeedsApplicationKeepalive
        );
        // Global rules do not apply to loopback.
        assert!(assess(&rules, "127.0.0.1".parse().unwrap(), 5432, None).is_none());
    }

    #[test]
    fn advice_follows_the_rule_of_thumb() {
        assert_eq!(
            advise(350),
            Advice {
                time_s: 175,
                intvl_s: 29,
                probes: 9,
                detection_s: 436
            }
        );
        assert_eq!(
            advise(60),
            Advice {
                time_s: 30,
                intvl_s: 10,
                probes: 6,
                detection_s: 90
            }
        );
        assert_eq!(
            advise(1200),
            Advice {
                time_s: 600,
                intvl_s: 30,
                probes: 9,
                detection_s: 870
            }
        );
    }
}
