//! Path idle timeouts (load balancers, NAT gateways, firewalls, conntrack)
//! and which sockets they endanger, plus the sysctl advice that fixes it.
//! Pure policy: no kernel access here.
//!
//! A middlebox forgets an idle flow after its timeout; the next packet gets
//! a reset or vanishes. TCP keepalive probes refresh L4 state (NLB, NAT,
//! conntrack, Azure LB) but not an L7 proxy's idle timer (ALB/CLB count
//! payload bytes), so for L7 profiles the fix is in the application.

mod advice;
pub mod profiles;
mod rule;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use advice::{Advice, advise, advise_learned};
use keepalive_api::{Risk, RiskBasis, RiskReason};
pub use rule::{Destination, Rule};

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

/// A path idle timeout a socket faces, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathTimeout {
    pub profile: &'static str,
    pub idle_timeout_s: u32,
    /// Layer 7: keepalive probes do not count as activity.
    pub l7: bool,
    pub basis: RiskBasis,
}

/// The timeout a socket towards `remote` faces: the configured rule for
/// its destination, else its path's learned upper bound (`learned`); and
/// its own namespace's conntrack (`conntrack_s`), whichever forgets first.
pub fn path_timeout(
    rules: &[Rule],
    remote: IpAddr,
    remote_port: u16,
    learned_s: Option<u32>,
    conntrack_s: Option<u32>,
) -> Option<PathTimeout> {
    let configured = rule_for(rules, remote, remote_port).map(|r| PathTimeout {
        profile: r.profile.name,
        idle_timeout_s: r.profile.idle_timeout_s,
        l7: r.profile.l7,
        basis: RiskBasis::Configured,
    });
    let learned = learned_s.map(|s| PathTimeout {
        profile: "learned",
        idle_timeout_s: s,
        l7: false,
        basis: RiskBasis::Learned,
    });
    let conntrack = conntrack_s.map(|s| PathTimeout {
        profile: "linux-conntrack",
        idle_timeout_s: s,
        l7: false,
        basis: RiskBasis::Conntrack,
    });
    [configured.or(learned), conntrack]
        .into_iter()
        .flatten()
        .min_by_key(|t| t.idle_timeout_s)
}

/// The risk of an established socket facing `timeout`, given its effective
/// keepalive idle time (None when keepalive is off).
pub fn judge(timeout: PathTimeout, keepalive_idle_s: Option<f64>) -> Option<Risk> {
    let reason = if timeout.l7 {
        RiskReason::L7NeedsApplicationKeepalive
    } else {
        match keepalive_idle_s {
            None => RiskReason::KeepaliveOff,
            Some(idle) if idle >= timeout.idle_timeout_s as f64 => RiskReason::IdleExceedsTimeout,
            Some(_) => return None,
        }
    };
    Some(Risk {
        profile: timeout.profile.to_string(),
        idle_timeout_s: timeout.idle_timeout_s,
        reason,
        basis: timeout.basis,
    })
}

/// The risk against the configured rules alone.
pub fn assess(
    rules: &[Rule],
    remote: IpAddr,
    remote_port: u16,
    keepalive_idle_s: Option<f64>,
) -> Option<Risk> {
    judge(
        path_timeout(rules, remote, remote_port, None, None)?,
        keepalive_idle_s,
    )
}
