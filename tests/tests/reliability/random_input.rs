//! Random input to the HTTP filters and the CLI: 200 or 400, never a crash or a hang.

use keepalive_api::TcpState;
use keepalive_tests::cli::Outcome;

use super::*;
use crate::bad_input::open_events;

/// Query keys and values the well-formed queries draw from.
const KEYS: &[&str] = &[
    "port", "pid", "netns", "state", "event", "risk", "colour", "", "PORT", "port ",
];
const VALUES: &[&str] = &[
    "22",
    "0",
    "65535",
    "65536",
    "-1",
    "+22",
    " 22",
    "abc",
    "",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    "1e3",
    "estab",
    "ESTAB",
    "time-wait",
    "Time-Wait",
    "open",
    "probe_sent",
    "PROBE_SENT",
    "probe",
    "true",
    "false",
    "1",
    "yes",
    "ü",
    "%",
    "\u{0}",
    "a b",
];
/// Pieces of malformed query strings.
const GARBAGE: &[&[u8]] = &[
    b"%",
    b"%z",
    b"%zz",
    b"%F0%28",
    b"%C3",
    b"&",
    b"=",
    b"==",
    b"+",
    b"?",
    b"#",
    b"/",
    b";",
    b"port",
    b"event",
    b"22",
    b"\xc3\xbc",
    b"\xff",
    b" ",
    b"\t",
    b"[",
    b"]",
    b"\"",
    b"{",
];
/// Profiles and their timeouts, as `--idle-timeout` takes them.
const PROFILES: &[(&str, u32)] = &[
    ("aws-alb", 60),
    ("aws-nlb", 350),
    ("aws-nat-gateway", 350),
    ("aws-ec2-conntrack", 350),
    ("aws-network-firewall", 350),
    ("azure-lb", 240),
    ("gcp-cloud-nat", 1200),
    ("gcp-lb", 600),
];
/// Destinations a rule may name.
const GOOD_DEST: &[&str] = &[
    "",
    "@10.0.0.0/8",
    "@10.0.0.0/8:443",
    "@192.0.2.1",
    "@0.0.0.0/0",
    "@:443",
    "@:65535",
    "@[2001:db8::/32]:443",
    "@[2001:db8::]/32:5432",
    "@[::1]",
    "@2001:db8::/32",
];
/// Values clap must refuse.
const BAD: &[&str] = &[
    "aws-nbl",
    "0",
    "86401",
    "4294967296",
    "-5",
    "60s",
    "60@",
    "60@:",
    "60@:65536",
    "60@10.0.0.0/33",
    "60@300.1.1.1",
    "60@[::1",
    "60@[::1]x",
    "60@2001:db8::/32:443",
    "aws-nlb@@10.0.0.0/8",
    "",
    " 60",
    "AWS-NLB",
];

/// What the filter parser must answer for distinct `pairs` (the model of
/// filters.rs, written from its documentation).
fn expected_status(events: bool, pairs: &[(&str, &str)]) -> u16 {
    let allowed: &[&str] = if events {
        &["event", "port", "pid", "netns"]
    } else {
        &["port", "pid", "netns", "state", "risk"]
    };
    let ok = pairs.iter().all(|(k, v)| {
        allowed.contains(k)
            && match *k {
                "port" => v.parse::<u16>().is_ok(),
                "pid" | "netns" => v.parse::<u32>().is_ok(),
                "state" => TcpState::NAMES.contains(&v.to_ascii_uppercase().as_str()),
                "event" => RecordKind::NAMES.contains(v),
                "risk" => matches!(*v, "true" | "false" | "1" | "0"),
                _ => false,
            }
    });
    let keys: std::collections::BTreeSet<&str> = pairs.iter().map(|(k, _)| *k).collect();
    // A filter given twice is refused, whichever value would win.
    if ok && keys.len() == pairs.len() {
        200
    } else {
        400
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A query of `/events` (or `/sockets`): well-formed two times in three
/// (percent-encoded, with the status it must get), else
/// garbage (None: 200 or 400 both do).
fn random_query(rng: &mut Rng, events: bool) -> (Vec<u8>, Option<u16>) {
    let path: &[u8] = if events { b"/events?" } else { b"/sockets?" };
    let mut target = path.to_vec();
    let expected = if rng.below(3) > 0 {
        // Well-formed (percent-encoded), keys sometimes repeated.
        let pairs: Vec<(&str, &str)> = (0..rng.below(4))
            .map(|_| (*rng.pick(KEYS), *rng.pick(VALUES)))
            .collect();
        let q: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        target.extend_from_slice(q.join("&").as_bytes());
        Some(expected_status(events, &pairs))
    } else {
        for _ in 0..1 + rng.below(40) {
            let piece = *rng.pick(GARBAGE);
            target.extend_from_slice(piece);
        }
        None
    };
    (target, expected)
}

/// 2000 query strings against /sockets and /events: well-formed ones
/// (percent-encoded; a key given twice is a 400) get exactly the status the parser's
/// rules give; garbage (bad escapes, stray `&=+#`, bytes over 0x7f, spaces)
/// gets 200 or 400. Never a 5xx, never a hang, and the agent stays healthy.
#[test]
fn random_query_strings_get_200_or_400_never_5xx_or_hang() {
    let (seed, mut rng) = Rng::from_clock();
    let agent = Daemon::start(&[]);
    let addr = agent.addr();
    let (mut exact, mut loose) = (0, 0);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..2000 {
        let events = i % 2 == 1;
        let (target, expected) = random_query(&mut rng, events);
        if expected.is_some() {
            exact += 1;
        } else {
            loose += 1;
        }
        let status = raw_get_status(&addr, &target, Duration::from_secs(5));
        let shown = String::from_utf8_lossy(&target).into_owned();
        let status = status.unwrap_or_else(|| panic!("seed {seed}: no answer to {shown:?}"));
        *statuses.entry(status).or_default() += 1;
        match expected {
            Some(want) => assert_eq!(status, want, "seed {seed}: GET {shown:?}"),
            None => assert!(
                status == 200 || status == 400,
                "seed {seed}: GET {shown:?} -> {status}"
            ),
        }
    }
    eprintln!("seed {seed}: {exact} well-formed, {loose} garbage queries: {statuses:?}");
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/sockets").0, 200);
    // Every /events stream was closed: all 32 slots are free again.
    let held: Vec<_> = (0..32).map(|_| open_events(&addr, None)).collect();
    assert!(
        held.iter().all(|(_, s)| *s == 200),
        "slots leaked by closed /events clients"
    );
    drop(held);
    agent.stop();
}

/// The `i`-th random `--idle-timeout` value, and what the CLI must do
/// with it: Some(Some(seconds)) advise on that timeout, Some(None) refuse
/// it (exit 2), None either. `counts`: (valid, invalid, random) so far.
fn random_idle_timeout(
    rng: &mut Rng,
    i: usize,
    counts: &mut (usize, usize, usize),
) -> (String, Option<Option<u32>>) {
    let alphabet: Vec<char> = "0123456789@:/[].,-abcdefgnlsw \u{fc}\u{1F600}%"
        .chars()
        .collect();
    match i % 3 {
        0 => {
            let (name, secs) = if rng.below(2) == 0 {
                let (n, s) = *rng.pick(PROFILES);
                (n.to_string(), s)
            } else {
                let s = 1 + rng.below(86_400) as u32;
                (s.to_string(), s)
            };
            counts.0 += 1;
            (format!("{name}{}", rng.pick(GOOD_DEST)), Some(Some(secs)))
        }
        1 => {
            counts.1 += 1;
            (rng.pick(BAD).to_string(), Some(None))
        }
        _ => {
            counts.2 += 1;
            let n = rng.below(24);
            ((0..n).map(|_| *rng.pick(&alphabet)).collect(), None)
        }
    }
}

/// What the CLI did with `value` is what it must do (`want`, as
/// [`random_idle_timeout`] says), and it never hung or panicked.
fn assert_cli_outcome(seed: u64, value: &str, want: Option<Option<u32>>, out: &Outcome) {
    assert!(!out.timed_out, "seed {seed}: {value:?} hung");
    assert!(
        !out.stderr.contains("panicked"),
        "seed {seed}: {value:?}: {}",
        out.stderr
    );
    match want {
        Some(Some(secs)) => {
            assert_eq!(out.code, Some(0), "seed {seed}: {value:?}: {out:?}");
            assert!(
                out.stdout.contains(&format!("idle timeout {secs} s")),
                "seed {seed}: {value:?}: {}",
                out.stdout
            );
            // L7 profiles get application advice instead of sysctls.
            let l7 = value.starts_with("aws-alb") || value.starts_with("gcp-lb");
            assert_eq!(
                out.stdout.contains("net.ipv4.tcp_keepalive_time = "),
                !l7,
                "seed {seed}: {value:?}: {}",
                out.stdout
            );
        }
        Some(None) => {
            assert_eq!(out.code, Some(2), "seed {seed}: {value:?}: {out:?}");
            assert!(
                out.stderr.starts_with("error: invalid value"),
                "seed {seed}: {value:?}: {}",
                out.stderr
            );
        }
        None => assert!(
            out.code == Some(0) || out.code == Some(2),
            "seed {seed}: {value:?}: {out:?}"
        ),
    }
}

/// `--idle-timeout` values, random: valid ones (a profile or 1..=86400
/// seconds, optionally @CIDR[:PORT], @[IPv6/LEN]:PORT or @:PORT) are
/// advised on with their own timeout; known-bad ones exit 2 with a clap
/// error; garbage does one or the other. Never a panic.
#[test]
fn random_idle_timeout_values_never_crash_the_cli() {
    let (seed, mut rng) = Rng::from_clock();
    let mut counts = (0, 0, 0);
    for i in 0..450 {
        let (value, want) = random_idle_timeout(&mut rng, i, &mut counts);
        let arg = format!("--idle-timeout={value}");
        let out = run_agent_cli(
            &["advise", &arg, "--agent", "http://127.0.0.1:1"],
            &[],
            Duration::from_secs(10),
        );
        assert_cli_outcome(seed, &value, want, &out);
    }
    let (valid, invalid, random) = counts;
    eprintln!("seed {seed}: {valid} valid, {invalid} invalid, {random} random idle timeouts");
}
