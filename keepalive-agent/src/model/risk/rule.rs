//! `--idle-timeout` rules: a profile or seconds, and where they apply.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::Serialize;

use super::profiles::{PROFILES, Profile};

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

/// As `--idle-timeout` writes it: `10.0.0.0/8:5432`, `[2001:db8::]/32:443`, `:443`.
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.net {
            Some((IpAddr::V6(a), len)) if self.port.is_some() => write!(f, "[{a}]/{len}")?,
            Some((a, len)) => write!(f, "{a}/{len}")?,
            None => {}
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
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

/// As `--idle-timeout` takes it back: `aws-nlb`, `300@:443`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if PROFILES.iter().any(|p| p.name == self.profile.name) {
            f.write_str(self.profile.name)?;
        } else {
            write!(f, "{}", self.profile.idle_timeout_s)?;
        }
        match &self.destination {
            Some(d) => write!(f, "@{d}"),
            None => Ok(()),
        }
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
    } else if s
        .split('/')
        .next()
        .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    {
        // An IPv6 block without a port needs no brackets: 2001:db8::/32.
        (Some(s.to_string()), None)
    } else {
        match s.split_once(':') {
            Some((net, port)) => (Some(net.to_string()), Some(port)),
            None => (Some(s.to_string()), None),
        }
    };
    // Port 0 is no destination port: a rule for it would match nothing.
    let port = port
        .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad))
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
