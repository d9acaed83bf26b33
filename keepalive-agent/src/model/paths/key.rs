//! Which destination group a connection belongs to.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use crate::model::risk::Rule;

/// A destination group: the connections that cross the same middleboxes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKey {
    /// The destination of the `--idle-timeout` rule at this index.
    Rule(usize),
    /// The remote /24 (IPv4) or /64 (IPv6), and the service port: the
    /// remote port of a connection we opened, our own of one we accepted.
    Subnet { net: IpAddr, port: u16 },
    /// Past `--max-paths`.
    Other,
}

impl PathKey {
    /// The group of a connection to `remote` whose service port is
    /// `service_port`; None for loopback (it crosses no middlebox).
    pub fn of(rules: &[Rule], remote: SocketAddr, service_port: u16) -> Option<PathKey> {
        let ip = canonical(remote.ip());
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        let by_rule = rules.iter().position(|r| {
            r.destination
                .as_ref()
                .is_some_and(|d| d.matches(ip, remote.port()))
        });
        Some(match by_rule {
            Some(i) => PathKey::Rule(i),
            None => PathKey::Subnet {
                net: subnet(ip),
                port: service_port,
            },
        })
    }

    /// The group of a server we connected to, for its idle closes: as
    /// [`PathKey::of`], loopback included (a server closes idle
    /// connections wherever its clients are).
    pub fn of_server(rules: &[Rule], remote: SocketAddr) -> PathKey {
        PathKey::of(rules, remote, remote.port()).unwrap_or(PathKey::Subnet {
            net: subnet(canonical(remote.ip())),
            port: remote.port(),
        })
    }

    /// Its name in `/paths` and the `path` label.
    pub fn label(&self, rules: &[Rule]) -> String {
        match self {
            PathKey::Rule(i) => rules
                .get(*i)
                .and_then(|r| r.destination.as_ref())
                .map_or_else(|| "other".into(), |d| d.to_string()),
            PathKey::Subnet { net, port } => Subnet(*net, *port).to_string(),
            PathKey::Other => "other".into(),
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
    }
}

struct Subnet(IpAddr, u16);

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}/24:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]/64:{}", self.1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_rule_else_subnet_and_service_port() {
        let rules: Vec<Rule> = vec!["aws-nlb@10.0.0.0/8:5432".parse().unwrap()];
        let key = |remote: &str, port| PathKey::of(&rules, remote.parse().unwrap(), port);
        assert_eq!(key("10.1.2.3:5432", 5432), Some(PathKey::Rule(0)));
        assert_eq!(
            key("10.1.2.3:5432", 5432).unwrap().label(&rules),
            "10.0.0.0/8:5432"
        );
        let client = key("192.0.2.77:5432", 5432).unwrap();
        assert_eq!(client.label(&rules), "192.0.2.0/24:5432");
        // A server's accepted connection: the client's subnet, our port.
        let server = key("192.0.2.9:51000", 8080).unwrap();
        assert_eq!(server.label(&rules), "192.0.2.0/24:8080");
        let v6 = key("[2001:db8::2]:443", 443).unwrap();
        assert_eq!(v6.label(&rules), "[2001:db8::]/64:443");
        assert_eq!(key("127.0.0.1:5432", 5432), None);
        let local_server = PathKey::of_server(&rules, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(local_server.label(&rules), "127.0.0.0/24:6379");
        assert_eq!(key("[::ffff:127.0.0.1]:5432", 5432), None);
    }
}
