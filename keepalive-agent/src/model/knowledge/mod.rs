//! Where each program's keepalive is set: `programs.yaml`, a table kept as
//! data (one entry per program and side, each citing its documentation),
//! parsed once and checked by the unit tests, so that every [`Program`] has
//! an entry and every template fills.

use std::sync::OnceLock;

use keepalive_api::Program;
use serde::{Deserialize, Serialize};

use super::risk::Advice;

/// Which connections of a program an entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Every connection.
    Any,
    /// Connections it accepted (it is the server).
    Inbound,
    /// Connections it made (it is the client).
    Outbound,
}

/// What a program's documentation recommends for the timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recommends {
    /// Set it in the program.
    Socket,
    /// Leave it to the operating system's sysctls.
    Sysctl,
    /// The documentation states no preference.
    None,
}

/// One program's (and side's) keepalive knobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub program: Program,
    pub side: Side,
    pub title: String,
    pub docs: Vec<String>,
    pub default: String,
    pub enable: Option<String>,
    pub set_timing: Option<String>,
    pub leave_timing: Option<String>,
    pub recommends: Recommends,
    pub l7: Option<String>,
    pub note: Option<String>,
    pub off: Option<String>,
    pub older: Option<Older>,
    pub interval_divisor: Option<u32>,
    pub fixed_count: Option<u32>,
    pub pool_idle: Option<String>,
    pub server_idle: Option<String>,
}

/// What a version below `before` writes instead.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Older {
    pub before: String,
    pub enable: Option<String>,
    #[serde(default)]
    pub enable_sets_timing: bool,
    pub set_timing: Option<String>,
}

/// The values the templates are filled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values {
    pub idle_s: u32,
    pub intvl_s: u32,
    pub count: u32,
}

/// Probes at most this far apart (the advice's 10–30 s).
const MAX_INTERVAL_S: u32 = 30;

impl Entry {
    /// The advice in this program's own terms: a program that derives the
    /// interval from the idle time gets the idle time that keeps it ≤ 30 s.
    pub fn values(&self, advice: Advice) -> Values {
        match self.interval_divisor {
            Some(d) => {
                let idle_s = advice.time_s.min(MAX_INTERVAL_S * d).max(1);
                Values {
                    idle_s,
                    intvl_s: (idle_s / d).max(1),
                    count: self.fixed_count.unwrap_or(advice.probes),
                }
            }
            None => Values {
                idle_s: advice.time_s,
                intvl_s: advice.intvl_s,
                count: self.fixed_count.unwrap_or(advice.probes),
            },
        }
    }

    /// The switch for this version (`go1.19.8`), older variants included.
    pub fn enable_for(&self, version: Option<&str>) -> Option<&str> {
        self.older_for(version)
            .and_then(|o| o.enable.as_deref())
            .or(self.enable.as_deref())
    }

    /// Whether this version's switch also sets the timing (the sysctls
    /// then do not apply).
    pub fn enable_sets_timing(&self, version: Option<&str>) -> bool {
        self.older_for(version)
            .is_some_and(|o| o.enable_sets_timing)
    }

    pub fn set_timing_for(&self, version: Option<&str>) -> Option<&str> {
        self.older_for(version)
            .and_then(|o| o.set_timing.as_deref())
            .or(self.set_timing.as_deref())
    }

    fn older_for(&self, version: Option<&str>) -> Option<&Older> {
        let older = self.older.as_ref()?;
        let (have, before) = (release(version?)?, release(&older.before)?);
        (have < before).then_some(older)
    }
}

/// `go1.19.8`, `1.23` → (1, 19): the release a version belongs to.
fn release(version: &str) -> Option<(u32, u32)> {
    let digits = version.trim_start_matches(|c: char| !c.is_ascii_digit());
    let leading = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let mut parts = digits.split('.');
    let major = leading(parts.next()?)?;
    let minor = parts.next().and_then(leading).unwrap_or(0);
    Some((major, minor))
}

/// Fills `{idle}`, `{intvl}`, `{count}` and `{idle_ms}`.
pub fn fill(template: &str, v: Values) -> String {
    template
        .replace("{idle_ms}", &(u64::from(v.idle_s) * 1000).to_string())
        .replace("{idle}", &v.idle_s.to_string())
        .replace("{intvl}", &v.intvl_s.to_string())
        .replace("{count}", &v.count.to_string())
}

/// Fills an idle-close template: `{close}` / `{close_ms}` (a client
/// pool's advised idle eviction) and `{keep}` / `{keep_ms}` (a server's
/// advised idle close), in whole seconds.
pub fn fill_idle(template: &str, close_s: u32, keep_s: u32) -> String {
    template
        .replace("{close_ms}", &(u64::from(close_s) * 1000).to_string())
        .replace("{close}", &close_s.to_string())
        .replace("{keep_ms}", &(u64::from(keep_s) * 1000).to_string())
        .replace("{keep}", &keep_s.to_string())
}

const TABLE: &str = include_str!("programs.yaml");

fn table() -> &'static [Entry] {
    static PARSED: OnceLock<Vec<Entry>> = OnceLock::new();
    // The table is part of the binary and checked by the unit tests: a
    // parse failure is a build defect, not a runtime condition.
    PARSED.get_or_init(|| serde_norway::from_str(TABLE).expect("programs.yaml parses"))
}

/// The entry for `program`'s connections on `side`: the side's own, else
/// the program's `any`, else the unknown program's.
pub fn entry(program: Program, side: Side) -> &'static Entry {
    let table = table();
    let find = |p: Program, s: Side| table.iter().find(|e| e.program == p && e.side == s);
    find(program, side)
        .or_else(|| find(program, Side::Any))
        // A program with only sided entries: the other side's is closer
        // than the unknown program's.
        .or_else(|| table.iter().find(|e| e.program == program))
        .or_else(|| find(Program::Unknown, Side::Any))
        .expect("programs.yaml has an entry for unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::risk::advise;

    #[test]
    fn every_program_has_an_entry_with_sources_and_templates_that_fill() {
        for &program in Program::ALL {
            let e = entry(program, Side::Any);
            assert_eq!(e.program, program, "{program} has no entry");
        }
        for e in table() {
            assert!(
                e.docs.iter().all(|d| d.starts_with("https://")),
                "{}: every entry cites its documentation",
                e.title
            );
            assert!(
                e.enable.is_some() || e.set_timing.is_some(),
                "{}: a way to switch keepalive on",
                e.title
            );
            let v = e.values(advise(350));
            for t in [&e.enable, &e.set_timing, &e.leave_timing, &e.l7]
                .into_iter()
                .flatten()
            {
                assert_eq!(placeholder(&fill(t, v)), None, "{t}");
            }
            for t in [&e.pool_idle, &e.server_idle].into_iter().flatten() {
                assert_eq!(placeholder(&fill_idle(t, 4, 75)), None, "{t}");
            }
        }
    }

    /// A `{name}` left in a filled template (Go's `Dialer{KeepAlive…}` is
    /// code: capitalised).
    fn placeholder(s: &str) -> Option<&str> {
        s.match_indices('{').find_map(|(i, _)| {
            let rest = &s[i + 1..];
            let end = rest.find('}')?;
            let name = &rest[..end];
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .then_some(name)
        })
    }

    #[test]
    fn idle_close_knobs_are_in_the_programs_terms() {
        let node = entry(Program::Node, Side::Inbound);
        let keep = fill_idle(node.server_idle.as_deref().unwrap(), 4, 75);
        assert!(
            keep.starts_with("server.keepAliveTimeout = 75000;"),
            "{keep}"
        );
        let go = entry(Program::Go, Side::Outbound);
        let close = fill_idle(go.pool_idle.as_deref().unwrap(), 4, 75);
        assert!(
            close.contains("IdleConnTimeout: 4 * time.Second"),
            "{close}"
        );
        let redis = entry(Program::Redis, Side::Inbound);
        assert!(
            redis
                .server_idle
                .as_deref()
                .unwrap()
                .starts_with("timeout {keep}")
        );
        // Every program has a knob on at least one side, the unknown one both.
        let unknown = entry(Program::Unknown, Side::Any);
        assert!(unknown.pool_idle.is_some() && unknown.server_idle.is_some());
    }

    #[test]
    fn values_follow_the_program_and_versions_pick_their_variant() {
        let redis = entry(Program::Redis, Side::Any);
        let v = redis.values(advise(350));
        assert_eq!((v.idle_s, v.intvl_s, v.count), (90, 30, 3));
        let nginx = entry(Program::Nginx, Side::Inbound);
        assert_eq!(nginx.values(advise(350)).idle_s, 175);
        assert!(
            entry(Program::Nginx, Side::Outbound)
                .enable
                .as_deref()
                .unwrap()
                .contains("proxy_socket_keepalive")
        );
        let go = entry(Program::Go, Side::Outbound);
        assert!(
            go.enable_for(Some("go1.23.1"))
                .unwrap()
                .contains("KeepAliveConfig")
        );
        assert!(
            go.enable_for(Some("go1.19.8"))
                .unwrap()
                .contains("KeepAlive: 0")
        );
        assert!(go.enable_for(None).unwrap().contains("KeepAliveConfig"));
        assert_eq!(release("go1.19.8"), Some((1, 19)));
        assert_eq!(release("go1.23rc1"), Some((1, 23)));
        assert_eq!(release("devel"), None);
    }
}
