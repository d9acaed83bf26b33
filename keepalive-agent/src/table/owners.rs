//! Who owns each socket: one shared owner per process, set by events and
//! by `/proc` walks for the sockets no event named (an accepted socket, one
//! that predates the agent).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use keepalive_api::Owner;

use super::SocketTable;

/// Every this many inventories, sockets no `/proc` walk found an owner
/// for are looked for again (a minute at the default 10 s).
pub(super) const UNFINDABLE_RETRY: u64 = 6;

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
        if let Some(e) = self.entry(cookie) {
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
    /// those an earlier walk did not find only every
    /// [`UNFINDABLE_RETRY`]th inventory (an fd passed on, a process that
    /// appeared late).
    pub fn ownerless_inodes(&self) -> HashSet<u64> {
        let retry = self.generation.is_multiple_of(UNFINDABLE_RETRY);
        self.live
            .values()
            .filter(|e| e.owner.is_none() && e.inode != 0)
            .filter(|e| retry || !self.unfindable.contains(&e.inode))
            .map(|e| e.inode)
            .collect()
    }

    /// Sets owners found by inode; the `searched` inodes not found are
    /// remembered as unfindable.
    pub fn set_owners_by_inode(&mut self, owners: HashMap<u64, Owner>, searched: &HashSet<u64>) {
        self.unfindable
            .extend(searched.iter().filter(|i| !owners.contains_key(i)));
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
        self.unfindable.retain(|i| ownerless.contains(i));
    }

    /// The owners live sockets refer to.
    pub fn owners(&self) -> impl Iterator<Item = &Owner> {
        self.owners.values().map(|o| &**o)
    }
}
