//! Which network namespaces get `keepalive_sysctl_*` and
//! `keepalive_conntrack_*` series of their own. Any user can make
//! namespaces by the thousand (an unprivileged user namespace, 1-2 s for a
//! thousand): one that no pod owns and whose settings are the node's says
//! nothing the node's series do not, and is folded into them. Past
//! [`MAX_SHOWN`] the rest are folded too, pods' first kept, then those
//! with settings of their own. Folded namespaces are counted
//! (`keepalive_agent_untrusted_refused_total{what="netns_series"}`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::host::sysctl::KeepaliveSysctls;

/// Namespaces with series of their own at most (a node runs a few hundred pods).
pub const MAX_SHOWN: usize = 1024;

/// Namespaces shown, and how many were folded.
#[derive(Debug, PartialEq)]
pub struct Fold {
    pub shown: BTreeSet<u64>,
    pub folded: Vec<u64>,
}

/// `node`: the agent's own namespace's inode (always shown); `is_pod`:
/// whether a pod owns a namespace.
pub fn fold(
    sysctls: &BTreeMap<u64, KeepaliveSysctls>,
    node: u64,
    mut is_pod: impl FnMut(u64) -> bool,
) -> Fold {
    let node_values = sysctls.get(&node);
    // (rank, inode): pods first, then settings of their own.
    let mut candidates: Vec<(u8, u64)> = Vec::new();
    let mut folded = Vec::new();
    for (netns, v) in sysctls {
        if *netns == node {
            continue;
        }
        if is_pod(*netns) {
            candidates.push((0, *netns));
        } else if Some(v) != node_values {
            candidates.push((1, *netns));
        } else {
            folded.push(*netns);
        }
    }
    candidates.sort_unstable();
    let room = MAX_SHOWN.saturating_sub(usize::from(node_values.is_some()));
    folded.extend(candidates.iter().skip(room).map(|(_, n)| *n));
    let mut shown: BTreeSet<u64> = candidates.iter().take(room).map(|(_, n)| *n).collect();
    if node_values.is_some() {
        shown.insert(node);
    }
    Fold { shown, folded }
}

/// The folded namespaces not counted yet: each is counted once while it
/// lives.
#[derive(Default)]
pub struct FoldCount {
    counted: HashSet<u64>,
}

impl FoldCount {
    /// How many of `folded` are new; forgets namespaces no longer listed.
    pub fn newly(&mut self, folded: &[u64], listed: &BTreeMap<u64, KeepaliveSysctls>) -> u64 {
        self.counted.retain(|n| listed.contains_key(n));
        folded.iter().filter(|n| self.counted.insert(**n)).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(time_s: u32) -> KeepaliveSysctls {
        KeepaliveSysctls {
            time_s,
            intvl_s: 75,
            probes: 9,
            conntrack: None,
        }
    }

    #[test]
    fn the_node_pods_and_own_settings_are_shown_the_rest_folded() {
        let sysctls: BTreeMap<u64, KeepaliveSysctls> = [
            (1, values(7200)),
            (2, values(7200)), // a pod's, the node's settings
            (3, values(7200)), // nobody's, the node's settings
            (4, values(300)),  // nobody's, its own
        ]
        .into_iter()
        .collect();
        let f = fold(&sysctls, 1, |n| n == 2);
        assert_eq!(f.shown, [1, 2, 4].into_iter().collect());
        assert_eq!(f.folded, vec![3]);
        let mut count = FoldCount::default();
        assert_eq!(count.newly(&f.folded, &sysctls), 1);
        assert_eq!(count.newly(&f.folded, &sysctls), 0, "counted once");
    }

    #[test]
    fn past_the_cap_pods_are_kept_first() {
        let mut sysctls: BTreeMap<u64, KeepaliveSysctls> = BTreeMap::new();
        sysctls.insert(1, values(7200));
        // 2000 namespaces with settings of their own, then 10 pods'.
        for n in 10..2010 {
            sysctls.insert(n, values(300));
        }
        for n in 5000..5010 {
            sysctls.insert(n, values(7200));
        }
        let f = fold(&sysctls, 1, |n| n >= 5000);
        assert_eq!(f.shown.len(), MAX_SHOWN);
        assert!(f.shown.contains(&1));
        assert!((5000..5010).all(|n| f.shown.contains(&n)));
        assert_eq!(
            f.folded.len(),
            2010 - (MAX_SHOWN - 1),
            "the node takes one place"
        );
    }
}
