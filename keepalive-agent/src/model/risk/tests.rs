//! Rules, risk and advice.

use super::{rule::RiskError, *};

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
        "60@:0",
        "60@10.0.0.0/8:0",
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
        RiskReason::KeepaliveOff
    );
    assert_eq!(
        assess(&rules, remote, 5432, Some(7200.0)).unwrap().reason,
        RiskReason::IdleExceedsTimeout
    );
    assert_eq!(
        assess(&rules, remote, 5432, Some(350.0)).unwrap().reason,
        RiskReason::IdleExceedsTimeout
    );
    assert!(assess(&rules, remote, 5432, Some(60.0)).is_none());
    assert_eq!(
        assess(&rules, remote, 443, Some(30.0)).unwrap().reason,
        RiskReason::L7NeedsApplicationKeepalive
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

/// A configured rule beats a learned bound for its destination; the
/// namespace's conntrack counts too, whichever forgets first.
#[test]
fn the_first_middlebox_to_forget_is_the_one_judged() {
    let rules: Vec<Rule> = vec!["aws-nlb@10.0.0.0/8".parse().unwrap()];
    let (nlb, other) = ("10.1.2.3".parse().unwrap(), "192.0.2.9".parse().unwrap());
    let t = path_timeout(&rules, nlb, 5432, Some(40), None).unwrap();
    assert_eq!((t.profile, t.basis), ("aws-nlb", RiskBasis::Configured));
    let t = path_timeout(&rules, other, 5432, Some(40), None).unwrap();
    assert_eq!(
        (t.profile, t.idle_timeout_s, t.basis),
        ("learned", 40, RiskBasis::Learned)
    );
    let t = path_timeout(&rules, nlb, 5432, None, Some(120)).unwrap();
    assert_eq!((t.idle_timeout_s, t.basis), (120, RiskBasis::Conntrack));
    assert_eq!(path_timeout(&rules, other, 5432, None, None), None);
    let r = judge(t, Some(60.0));
    assert_eq!(r, None, "first probe at 60 s, before 120 s");
    let r = judge(t, None).unwrap();
    assert_eq!(
        (r.reason, r.basis),
        (RiskReason::KeepaliveOff, RiskBasis::Conntrack)
    );
    // A Destination prints as --idle-timeout takes it.
    let d = rules[0].destination.as_ref().unwrap();
    assert_eq!(d.to_string(), "10.0.0.0/8");
    let r: Rule = "60@[2001:db8::]/32:443".parse().unwrap();
    assert_eq!(r.to_string(), "60@[2001:db8::]/32:443");
    assert_eq!(r.destination.unwrap().to_string(), "[2001:db8::]/32:443");
    // So does a rule, for /advice?idle_timeout=.
    for text in ["aws-nlb", "azure-lb@10.0.0.0/8", "300@:5432"] {
        assert_eq!(text.parse::<Rule>().unwrap().to_string(), text);
    }
}

mod properties {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::super::{
        profiles::{PROFILES, Profile},
        *,
    };

    fn profile() -> impl Strategy<Value = Profile> {
        prop_oneof![
            prop::sample::select(PROFILES.to_vec()),
            (1u32..=86_400).prop_map(|secs| Profile {
                name: "custom",
                idle_timeout_s: secs,
                l7: false,
                note: "configured idle timeout",
            }),
        ]
    }

    fn net() -> impl Strategy<Value = (IpAddr, u8)> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, len)| (IpAddr::from(a), len)),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, len)| (IpAddr::from(a), len)),
        ]
    }

    fn destination() -> impl Strategy<Value = Destination> {
        (prop::option::of(net()), prop::option::of(1u16..))
            .prop_filter("a destination names a block or a port", |(n, p)| {
                n.is_some() || p.is_some()
            })
            .prop_map(|(net, port)| Destination { net, port })
    }

    proptest! {
        /// What `Display` writes, `--idle-timeout` reads back unchanged.
        #[test]
        fn a_rule_written_out_reads_back_the_same(
            profile in profile(),
            destination in prop::option::of(destination()),
        ) {
            let rule = Rule { profile, destination };
            let text = rule.to_string();
            prop_assert_eq!(text.parse::<Rule>(), Ok(rule), "{}", text);
        }
    }
}
