//! Which namespaces a TC pass has to enter. Entering one (a thread,
//! `setns`, a netlink dump) is most of what a pass costs on a node of many
//! pods, every `--rescan-seconds`; the names of its interfaces can be read
//! from outside (`/proc/<pid>/net/dev` shows the namespace of `<pid>`), so
//! a namespace whose process and interface names are as they were when it
//! was last entered, and whose interfaces all got their classifiers, is
//! left alone for up to [`REVISIT`]. `ip netns` namespaces without a
//! process have no such view: they are entered at every pass.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::{Duration, Instant},
};

use crate::host::netns::Netns;

/// The longest a namespace goes unentered: what a change its names do not
/// show (an interface replaced by one of the same name) waits at most.
pub const REVISIT: Duration = Duration::from_secs(30);

/// A namespace seen from outside: its lowest process and a hash of its
/// interfaces' names. A namespace deleted and its inode reused by a new
/// one has another process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    pid: u32,
    names: u64,
}

impl Look {
    /// `None` for a namespace without a process, or whose process is gone.
    pub fn of(ns: &Netns) -> Option<Look> {
        let pid = ns.first_pid?;
        let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
        let mut h = DefaultHasher::new();
        // Two header lines, then `name: counters…` per interface.
        for line in dev.lines().skip(2) {
            line.split(':').next().map(str::trim).hash(&mut h);
        }
        Some(Look {
            pid,
            names: h.finish(),
        })
    }
}

#[derive(Default)]
pub struct Looks {
    entered: BTreeMap<u64, (Look, Instant)>,
    /// Namespaces whose last pass left interfaces without classifiers
    /// (deferred, refused for descriptors).
    unfinished: BTreeSet<u64>,
}

impl Looks {
    /// Whether the pass may leave namespace `inode` as it is.
    pub fn unchanged(&self, inode: u64, now: Option<Look>) -> bool {
        let Some(now) = now else { return false };
        !self.unfinished.contains(&inode)
            && self
                .entered
                .get(&inode)
                .is_some_and(|(look, at)| *look == now && at.elapsed() < REVISIT)
    }

    /// Namespace `inode` was entered and read, looking like `look` just
    /// before.
    pub fn entered(&mut self, inode: u64, look: Option<Look>) {
        match look {
            Some(look) => self.entered.insert(inode, (look, Instant::now())),
            None => self.entered.remove(&inode),
        };
    }

    /// The namespaces whose interfaces this pass left without classifiers;
    /// looks of namespaces no longer listed are forgotten.
    pub fn end_pass(&mut self, unfinished: BTreeSet<u64>, listed: &BTreeSet<u64>) {
        self.unfinished = unfinished;
        self.entered.retain(|inode, _| listed.contains(inode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Netns {
        Netns {
            inode: 1,
            path: "/proc/self/ns/net".into(),
            first_pid: Some(std::process::id()),
        }
    }

    #[test]
    fn a_namespace_is_left_alone_only_as_it_was_entered() {
        let look = Look::of(&own());
        assert!(look.is_some(), "our own /proc/<pid>/net/dev");
        let mut looks = Looks::default();
        assert!(!looks.unchanged(1, look), "never entered");
        looks.entered(1, look);
        assert!(looks.unchanged(1, look));
        let other = Look {
            pid: 1,
            ..look.unwrap()
        };
        assert!(!looks.unchanged(1, Some(other)), "another process");
        assert!(!looks.unchanged(1, None), "no view from outside");
        looks.end_pass(BTreeSet::from([1]), &BTreeSet::from([1]));
        assert!(!looks.unchanged(1, look), "work left");
        looks.end_pass(BTreeSet::new(), &BTreeSet::new());
        assert!(!looks.unchanged(1, look), "no longer listed");
    }
}
