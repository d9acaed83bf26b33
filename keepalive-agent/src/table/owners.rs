//! Who owns each socket: one shared owner per process, set by events and
//! by `/proc` walks for the sockets no event named (an accepted socket, one
//! that predates the agent).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use keepalive_api::Owner;

use super::SocketTable;

/// Inventories before sockets no `/proc` walk found an owner for are
/// looked for again (a minute at the default 10 s).
pub(super) const UNFINDABLE_RETRY: u64 = 6;

/// The longest wait between such walks (an hour at the default 10 s):
/// a socket no process will ever hold (a kernel or NFS socket) must not
/// make the agent read every descriptor of the node each minute.
pub(super) const UNFINDABLE_RETRY_MAX: u64 = 360;

/// Inodes a `/proc` walk looked for and no process held (a kernel
/// socket, a process in no pid namespace we see), and when to look for
/// them again: the wait doubles while retries find none of them and is
/// back to [`UNFINDABLE_RETRY`] once one is found.
#[derive(Debug)]
pub(super) struct Unfindable {
    pub(super) inodes: HashSet<u64>,
    /// The inventory generation of the next retry.
    next_retry: u64,
    /// Inventories from one retry to the next.
    wait: u64,
}

impl Default for Unfindable {
    fn default() -> Self {
        Unfindable {
            inodes: HashSet::new(),
            next_retry: UNFINDABLE_RETRY,
            wait: UNFINDABLE_RETRY,
        }
    }
}

impl Unfindable {
    fn retry_due(&self, generation: u64) -> bool {
        generation >= self.next_retry
    }

    /// Records a walk at `generation` that looked for `searched`.
    fn searched(&mut self, generation: u64, searched: &HashSet<u64>, found: &HashMap<u64, Owner>) {
        if self.inodes.iter().any(|i| searched.contains(i)) {
            // A retry: back to the shortest wait if it found one of them.
            self.wait = if self.inodes.iter().any(|i| found.contains_key(i)) {
                UNFINDABLE_RETRY
            } else {
                (self.wait * 2).min(UNFINDABLE_RETRY_MAX)
            };
            self.next_retry = generation + self.wait;
        } else if self.inodes.is_empty() {
            // The first unfindable ones wait from now.
            self.next_retry = generation + self.wait;
        }
        self.inodes
            .extend(searched.iter().filter(|i| !found.contains_key(i)));
    }
}

impl SocketTable {
    pub fn set_owner(&mut self, cookie: u64, owner: Owner) {
        let owner = self.intern(owner);
        self.set_shared_owner(cookie, owner);
    }

    /// The owner already known for `owner`'s process, if it is the same
    /// program in the same cgroup (a reused pid is not).
    pub fn known_owner(&self, owner: &Owner) -> Option<Arc<Owner>> {
        self.owners
            .get(&owner.pid)
            .filter(|k| k.comm == owner.comm && k.cgroup_id == owner.cgroup_id)
            .cloned()
    }

    pub fn set_shared_owner(&mut self, cookie: u64, owner: Arc<Owner>) {
        if let Some(e) = self.entry(cookie, None) {
            e.owner = Some(owner);
        }
    }

    /// The shared copy of `owner` (a pid reused by another program gets a
    /// copy of its own).
    fn intern(&mut self, owner: Owner) -> Arc<Owner> {
        match self.owners.get(&owner.pid) {
            Some(known) if **known == owner => known.clone(),
            _ => {
                let shared = Arc::new(owner);
                self.owners.insert(shared.pid, shared.clone());
                shared
            }
        }
    }

    /// The inodes of sockets whose owner is not known, for a `/proc` walk:
    /// those an earlier walk did not find only when their retry is due
    /// (an fd passed on, a process that appeared late).
    pub fn ownerless_inodes(&self) -> HashSet<u64> {
        let retry = self.unfindable.retry_due(self.generation);
        self.live
            .values()
            .filter(|e| e.owner.is_none() && e.inode != 0)
            .filter(|e| retry || !self.unfindable.inodes.contains(&e.inode))
            .map(|e| e.inode)
            .collect()
    }

    /// Sets owners found by inode; the `searched` inodes not found are
    /// remembered as unfindable.
    pub fn set_owners_by_inode(&mut self, owners: HashMap<u64, Owner>, searched: &HashSet<u64>) {
        self.unfindable.searched(self.generation, searched, &owners);
        let shared: HashMap<u64, Arc<Owner>> = owners
            .into_iter()
            .map(|(inode, o)| (inode, self.intern(o)))
            .collect();
        for e in self.live.values_mut() {
            if e.owner.is_none()
                && let Some(o) = shared.get(&e.inode)
            {
                e.owner = Some(o.clone());
            }
        }
        // Only inodes of live ownerless sockets stay remembered.
        let ownerless: HashSet<u64> = self
            .live
            .values()
            .filter(|e| e.owner.is_none())
            .map(|e| e.inode)
            .collect();
        self.unfindable.inodes.retain(|i| ownerless.contains(i));
    }

    /// How many sockets have no owner a `/proc` walk could find, and the
    /// inventories between the walks that look for them again.
    pub fn unfindable_owners(&self) -> (usize, u64) {
        (self.unfindable.inodes.len(), self.unfindable.wait)
    }

    /// The owners live sockets refer to.
    pub fn owners(&self) -> impl Iterator<Item = &Owner> {
        self.owners.values().map(|o| &**o)
    }
}
