//! Path idle timeouts (load balancers, NAT gateways, firewalls, conntrack)
//! and which sockets they endanger, plus the sysctl advice that fixes it.
//! Pure policy: no kernel access here.
//!
//! A middlebox forgets an idle flow after its timeout; the next packet gets
//! a reset or vanishes. TCP keepalive probes refresh L4 state (NLB, NAT,
//! conntrack, Azure LB) but not an L7 proxy's idle timer (ALB/CLB count
//! payload bytes), so for L7 profiles the fix is in the application.

mod advice;
mod profiles;
mod rule;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

pub use advice::{Advice, advise};
use keepalive_api::{Risk, RiskReason};
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
        RiskReason::L7NeedsApplicationKeepalive
    } else {
        match keepalive_idle_s {
            None => RiskReason::KeepaliveOff,
            Some(idle) if idle >= p.idle_timeout_s as f64 => RiskReason::IdleExceedsTimeout,
            Some(_) => return None,
        }
    };
    Some(Risk {
        profile: p.name.to_string(),
        idle_timeout_s: p.idle_timeout_s,
        reason,
    })
}
