//! The agent's table of sockets, keyed by socket cookie: the last known
//! tuple and namespace, and the owner. Bounded: when full, new sockets are
//! not recorded and the refusal is counted, never silently dropped.
//!
//! A closed socket stays findable for a short while: the kernel reports a
//! connection's error after `tcp_done` has already moved it to CLOSE and
//! released its local port (tcp_done_with_error), so the error needs what
//! the table knew just before.

use std::collections::{HashMap, VecDeque};

use keepalive_common::Event;
use serde::Serialize;

/// How many closed sockets stay findable.
const RECENTLY_CLOSED: usize = 4096;

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

/// What the table knows of one socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub owner: Option<Owner>,
    pub local: Option<String>,
    pub remote: Option<String>,
    pub netns: Option<u32>,
}

pub struct SocketTable {
    live: HashMap<u64, Entry>,
    closed: HashMap<u64, Entry>,
    closed_order: VecDeque<u64>,
    capacity: usize,
    /// Sockets not recorded because the table was full.
    pub refused: u64,
}

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        SocketTable {
            live: HashMap::new(),
            closed: HashMap::new(),
            closed_order: VecDeque::new(),
            capacity,
            refused: 0,
        }
    }

    /// The live entry of `cookie`, created if there is room.
    fn entry(&mut self, cookie: u64) -> Option<&mut Entry> {
        if !self.live.contains_key(&cookie) && self.live.len() >= self.capacity {
            self.refused += 1;
            return None;
        }
        Some(self.live.entry(cookie).or_default())
    }

    pub fn set_owner(&mut self, cookie: u64, owner: Owner) {
        if let Some(e) = self.entry(cookie) {
            e.owner = Some(owner);
        }
    }

    /// Records where a socket is, from an event that read a full tuple.
    pub fn set_tuple(&mut self, cookie: u64, local: &str, remote: &str, netns: u32) {
        if let Some(e) = self.entry(cookie) {
            if e.local.as_deref() != Some(local) {
                e.local = Some(local.to_string());
            }
            if e.remote.as_deref() != Some(remote) {
                e.remote = Some(remote.to_string());
            }
            e.netns = Some(netns);
        }
    }

    /// A live or recently closed socket.
    pub fn get(&self, cookie: u64) -> Option<&Entry> {
        self.live.get(&cookie).or_else(|| self.closed.get(&cookie))
    }

    /// Moves the socket to the recently-closed set, evicting the oldest.
    pub fn close(&mut self, cookie: u64) {
        let Some(entry) = self.live.remove(&cookie) else {
            return;
        };
        if self.closed.len() >= RECENTLY_CLOSED {
            if let Some(old) = self.closed_order.pop_front() {
                self.closed.remove(&old);
            }
        }
        self.closed.insert(cookie, entry);
        self.closed_order.push_back(cookie);
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
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
        assert_eq!(t.get(2).unwrap().owner.as_ref().unwrap().pid, 22);
        t.close(1);
        t.set_owner(3, owner(3));
        assert_eq!(t.refused, 1);
        assert!(t.get(3).is_some());
    }

    #[test]
    fn closed_sockets_stay_findable_for_a_while() {
        let mut t = SocketTable::new(10);
        t.set_tuple(7, "1.2.3.4:5", "6.7.8.9:10", 42);
        t.set_owner(7, owner(9));
        t.close(7);
        assert_eq!(t.len(), 0);
        let e = t.get(7).unwrap();
        assert_eq!(e.local.as_deref(), Some("1.2.3.4:5"));
        assert_eq!(e.owner.as_ref().unwrap().pid, 9);
        for cookie in 100..100 + RECENTLY_CLOSED as u64 {
            t.set_tuple(cookie, "a", "b", 1);
            t.close(cookie);
        }
        assert!(t.get(7).is_none(), "oldest closed socket evicted");
        assert_eq!(t.closed.len(), RECENTLY_CLOSED);
    }
}
