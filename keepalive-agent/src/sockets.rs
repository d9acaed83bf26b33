//! The agent's table of sockets it knows an owner for, keyed by socket
//! cookie. Bounded: when full, new owners are not recorded and the refusal
//! is counted (exported as a metric), never silently dropped.

use std::collections::HashMap;

use keepalive_common::Event;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
}

impl Owner {
    pub fn from_event(ev: &Event) -> Self {
        let end = ev
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(ev.comm.len());
        Owner {
            pid: ev.pid,
            comm: String::from_utf8_lossy(&ev.comm[..end]).into_owned(),
            cgroup_id: ev.cgroup_id,
        }
    }
}

pub struct SocketTable {
    owners: HashMap<u64, Owner>,
    capacity: usize,
    /// Owners not recorded because the table was full.
    pub refused: u64,
}

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        SocketTable {
            owners: HashMap::new(),
            capacity,
            refused: 0,
        }
    }

    pub fn set_owner(&mut self, cookie: u64, owner: Owner) {
        if self.owners.len() >= self.capacity && !self.owners.contains_key(&cookie) {
            self.refused += 1;
            return;
        }
        self.owners.insert(cookie, owner);
    }

    pub fn owner(&self, cookie: u64) -> Option<&Owner> {
        self.owners.get(&cookie)
    }

    pub fn remove(&mut self, cookie: u64) {
        self.owners.remove(&cookie);
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            comm: "x".into(),
            cgroup_id: 1,
        }
    }

    #[test]
    fn bounded_and_counted() {
        let mut t = SocketTable::new(2);
        t.set_owner(1, owner(1));
        t.set_owner(2, owner(2));
        t.set_owner(3, owner(3));
        assert_eq!(t.len(), 2);
        assert_eq!(t.refused, 1);
        // Updating a known socket is not refused.
        t.set_owner(2, owner(22));
        assert_eq!(t.owner(2).unwrap().pid, 22);
        t.remove(1);
        t.set_owner(3, owner(3));
        assert_eq!(t.refused, 1);
        assert!(t.owner(3).is_some());
    }
}
