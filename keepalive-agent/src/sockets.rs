//! The agent's table of TCP sockets, keyed by socket cookie: where each is
//! (tuple, namespace), who owns it, its keepalive settings and counters.
//! Fed by the periodic inventory (every socket, even those that predate the
//! agent) and by kernel events in between. Bounded: when full, new sockets
//! are not recorded and the refusal is counted, never silently dropped.
//!
//! A closed socket stays findable for a short while: the kernel reports a
//! connection's error after `tcp_done` has already moved it to CLOSE and
//! released its local port (tcp_done_with_error), so the error needs what
//! the table knew just before.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    net::SocketAddr,
    sync::Arc,
};

use keepalive_common::{Event, FLAG_COUNTERS, FLAG_FULL_SOCK, FLAG_KEEPALIVE_ON, SocketRecord};
use serde::Serialize;

use crate::{
    events::{self, Clock, Keepalive},
    risk::{self, Risk, Rule},
};

/// How many closed sockets stay findable.
const RECENTLY_CLOSED: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
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
            cgroup: None,
            container_id: None,
        }
    }
}

/// What the table knows of one socket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    /// Shared by every socket of the process (see [`SocketTable::intern`]).
    pub owner: Option<Arc<Owner>>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub netns: Option<u32>,
    pub state: u8,
    pub inode: u64,
    pub uid: u32,
    pub keepalive: Option<Keepalive>,
    pub probes_out: u32,
    /// From the kernel's per-socket map (exact) or the latest event.
    pub probes: u64,
    pub acks: u64,
    pub last_rtt_us: Option<f64>,
    /// When the first of the probes now unanswered went out (event
    /// `ts_ns`): how long the socket had idled before it, at a timeout.
    pub first_unanswered_probe_ns: Option<u64>,
    /// Seconds since the socket last received anything, at the last scan.
    pub idle_s: Option<f64>,
    /// Seconds until the keepalive timer fires, at the last scan.
    pub timer_in_s: Option<f64>,
    /// Inventory generation that last saw the socket.
    generation: u64,
}

/// One row of `/sockets`.
#[derive(Clone, Debug, Serialize)]
pub struct SocketView {
    pub cookie: u64,
    pub netns: Option<u32>,
    pub state: &'static str,
    pub local: Option<String>,
    pub remote: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub uid: u32,
    pub inode: u64,
    pub keepalive: Option<Keepalive>,
    pub idle_s: Option<f64>,
    pub probes_out: u32,
    pub probes: u64,
    pub acks: u64,
    pub last_rtt_us: Option<f64>,
    /// If the peer vanished now, seconds until the kernel declares the
    /// connection dead (next timer + remaining probes × interval).
    pub dead_after_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

type CookieMap<V> = HashMap<u64, V, BuildHasherDefault<CookieHasher>>;

/// Socket cookies are kernel-made counters (handed out in per-CPU runs), not
/// attacker-chosen keys. Hashed to themselves, sockets made together sit
/// together in the table, and events come in such runs (a burst of
/// connects, timers armed together): lookups hit the cache instead of
/// missing it once per event. Only the top 7 bits, which the table compares
/// in groups, are mixed.
#[derive(Default)]
pub struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any other key still hashes soundly.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, cookie: u64) {
        self.0 = cookie;
    }

    fn finish(&self) -> u64 {
        const LOW: u64 = u64::MAX >> 7;
        (self.0 & LOW) | (self.0.wrapping_mul(MIX) & !LOW)
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

pub struct SocketTable {
    live: CookieMap<Entry>,
    /// One owner per process, shared by its sockets: a process with
    /// thousands of connections stores its comm and cgroup once.
    owners: HashMap<u32, Arc<Owner>>,
    closed: CookieMap<Entry>,
    closed_order: VecDeque<u64>,
    capacity: usize,
    generation: u64,
    /// Sockets not recorded because the table was full.
    pub refused: u64,
}

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        SocketTable {
            live: CookieMap::default(),
            owners: HashMap::new(),
            closed: CookieMap::default(),
            closed_order: VecDeque::new(),
            capacity,
            generation: 0,
            refused: 0,
        }
    }

    /// The live entry of `cookie`, created if there is room.
    fn entry(&mut self, cookie: u64) -> Option<&mut Entry> {
        if !self.live.contains_key(&cookie) && self.live.len() >= self.capacity {
            self.refused += 1;
            return None;
        }
        // Born in this pass: an inventory that started before the socket
        // existed must not count it as gone.
        let generation = self.generation;
        Some(self.live.entry(cookie).or_insert_with(|| Entry {
            generation,
            ..Entry::default()
        }))
    }

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

    /// Records where a socket is, from an event that read a full tuple.
    pub fn set_tuple(&mut self, cookie: u64, ev: &Event) {
        let (local, remote) = events::addrs(ev);
        if let Some(e) = self.entry(cookie) {
            e.local = Some(local);
            e.remote = Some(remote);
            e.netns = Some(ev.netns);
            e.state = ev.state;
        }
    }

    /// Applies what an event says about a socket's keepalive and counters.
    pub fn update(&mut self, cookie: u64, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.live.get_mut(&cookie) {
            f(e);
        }
    }

    pub fn is_live(&self, cookie: u64) -> bool {
        self.live.contains_key(&cookie)
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
        if self.closed.len() >= RECENTLY_CLOSED
            && let Some(old) = self.closed_order.pop_front()
        {
            self.closed.remove(&old);
        }
        self.closed.insert(cookie, entry);
        self.closed_order.push_back(cookie);
    }

    /// Starts an inventory pass; sockets of a scanned namespace that the
    /// pass does not see are gone (their close event may have been lost).
    pub fn begin_inventory(&mut self) -> u64 {
        // Owners no socket refers to any more.
        self.owners.retain(|_, o| Arc::strong_count(o) > 1);
        self.generation += 1;
        self.generation
    }

    /// Takes in inventory records (a chunk of a namespace's).
    pub fn apply_inventory(&mut self, records: &[SocketRecord], clock: &Clock) {
        let generation = self.generation;
        for rec in records {
            if rec.cookie == 0 {
                continue;
            }
            let Some(e) = self.entry(rec.cookie) else {
                continue;
            };
            let (local, remote) = events::record_addrs(rec);
            // A closing socket's local port reads 0: keep what we knew.
            if rec.sport != 0 || e.local.is_none() {
                e.local = Some(local);
                e.remote = Some(remote);
            }
            e.netns = Some(rec.netns);
            e.state = rec.state;
            e.inode = rec.inode;
            e.uid = rec.uid;
            e.generation = generation;
            if rec.flags & FLAG_FULL_SOCK != 0 {
                let on = rec.flags & FLAG_KEEPALIVE_ON != 0;
                e.keepalive = Some(Keepalive::from_kernel(&rec.settings, on, clock));
                e.probes_out = rec.probes_out;
                e.idle_s = Some(clock.seconds(rec.idle_jiffies));
                e.timer_in_s = (rec.timer_expires != 0)
                    .then(|| clock.seconds(rec.timer_expires.saturating_sub(rec.jiffies) as u32));
            }
            // Exact counters from the kernel's per-socket map.
            if rec.flags & FLAG_COUNTERS != 0 {
                e.probes = rec.probes;
                e.acks = rec.acks;
                if rec.last_rtt_ns != 0 {
                    e.last_rtt_us = Some(rec.last_rtt_ns as f64 / 1e3);
                }
            }
        }
    }

    /// A namespace's inventory is complete: its sockets the pass did not
    /// see are gone.
    pub fn end_inventory_of(&mut self, netns: u32) {
        let generation = self.generation;
        let gone: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, e)| e.netns == Some(netns) && e.generation != generation)
            .map(|(c, _)| *c)
            .collect();
        for cookie in gone {
            self.close(cookie);
        }
    }

    /// Inodes of live sockets without a known owner (for `/proc` lookup).
    pub fn ownerless_inodes(&self) -> HashSet<u64> {
        self.live
            .values()
            .filter(|e| e.owner.is_none() && e.inode != 0)
            .map(|e| e.inode)
            .collect()
    }

    /// Sets owners found by inode.
    pub fn set_owners_by_inode(&mut self, owners: HashMap<u64, Owner>) {
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
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Entry)> {
        self.live.iter()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// `/sockets` rows, with risk against `rules`.
    pub fn views(&self, rules: &[Rule]) -> Vec<SocketView> {
        let mut rows: Vec<SocketView> = self.live.iter().map(|(c, e)| view(*c, e, rules)).collect();
        rows.sort_by_key(|r| r.cookie);
        rows
    }
}

pub fn view(cookie: u64, e: &Entry, rules: &[Rule]) -> SocketView {
    let dead_after_s = e.keepalive.as_ref().filter(|k| k.enabled).and_then(|k| {
        let remaining = k.count.saturating_sub(e.probes_out) as f64;
        e.timer_in_s.map(|t| t + remaining * k.interval_s)
    });
    SocketView {
        cookie,
        netns: e.netns,
        state: events::state_name(e.state),
        local: e.local.map(events::endpoint_of),
        remote: e.remote.map(events::endpoint_of),
        owner: e.owner.as_deref().cloned(),
        uid: e.uid,
        inode: e.inode,
        keepalive: e.keepalive.clone(),
        idle_s: e.idle_s,
        probes_out: e.probes_out,
        probes: e.probes,
        acks: e.acks,
        last_rtt_us: e.last_rtt_us,
        dead_after_s,
        risk: risk_of(e, rules),
    }
}

/// Only established connections cross a middlebox's idle timer.
pub fn risk_of(e: &Entry, rules: &[Rule]) -> Option<Risk> {
    const ESTABLISHED: u8 = 1;
    if e.state != ESTABLISHED {
        return None;
    }
    let remote = e.remote?;
    let idle = e.keepalive.as_ref().filter(|k| k.enabled).map(|k| k.idle_s);
    risk::assess(rules, remote.ip(), remote.port(), idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(pid: u32) -> Owner {
        Owner {
            pid,
            comm: "x".into(),
            ..Default::default()
        }
    }

    /// An inventory pass closes its namespace's sockets it did not see,
    /// but not one that an event brought in while the pass ran.
    #[test]
    fn inventory_closes_the_unseen_but_not_the_newborn() {
        let mut t = SocketTable::new(10);
        let mut ev = Event::zeroed();
        ev.netns = 7;
        ev.sport = 1;
        t.set_tuple(1, &ev);
        t.begin_inventory();
        t.set_tuple(2, &ev);
        t.apply_inventory(&[], &Clock::new(250));
        t.end_inventory_of(7);
        assert!(!t.is_live(1), "unseen by the pass: gone");
        assert!(t.is_live(2), "born during the pass: kept");
    }

    /// Consecutive cookies keep consecutive bucket bits (locality) and get
    /// distinct top bits (what the table's group match compares).
    #[test]
    fn cookie_hash_keeps_runs_together_and_mixes_the_top() {
        let hash = |c: u64| {
            let mut h = CookieHasher::default();
            h.write_u64(c);
            h.finish()
        };
        let base = 0x1_0000_1000u64;
        let tops: HashSet<u64> = (0..64)
            .map(|i| {
                assert_eq!(hash(base + i) & 0xffff, (base + i) & 0xffff);
                hash(base + i) >> 57
            })
            .collect();
        assert!(tops.len() > 32, "top 7 bits barely vary: {tops:?}");
    }

    #[test]
    fn sockets_of_one_process_share_its_owner() {
        let mut t = SocketTable::new(10);
        t.set_owner(1, owner(5));
        t.set_owner(2, owner(5));
        let (a, b) = (t.get(1).unwrap(), t.get(2).unwrap());
        assert!(Arc::ptr_eq(
            a.owner.as_ref().unwrap(),
            b.owner.as_ref().unwrap()
        ));
        // The pid reused by another program: a copy of its own.
        let mut other = owner(5);
        other.comm = "other".into();
        t.set_owner(3, other);
        assert_eq!(t.get(3).unwrap().owner.as_ref().unwrap().comm, "other");
        assert_ne!(t.get(1).unwrap().owner.as_ref().unwrap().comm, "other");
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
        t.set_owner(7, owner(9));
        t.close(7);
        assert_eq!(t.len(), 0);
        assert_eq!(t.get(7).unwrap().owner.as_ref().unwrap().pid, 9);
        for cookie in 100..100 + RECENTLY_CLOSED as u64 {
            t.set_owner(cookie, owner(1));
            t.close(cookie);
        }
        assert!(t.get(7).is_none(), "oldest closed socket evicted");
        assert_eq!(t.closed.len(), RECENTLY_CLOSED);
    }

    #[test]
    fn dead_after_counts_remaining_probes() {
        let mut e = Entry {
            keepalive: Some(Keepalive {
                enabled: true,
                idle_s: 60.0,
                idle_source: events::Source::Sysctl,
                interval_s: 10.0,
                interval_source: events::Source::Sysctl,
                count: 5,
                count_source: events::Source::Sysctl,
                detection_s: 110.0,
            }),
            timer_in_s: Some(4.0),
            probes_out: 2,
            ..Default::default()
        };
        assert_eq!(view(1, &e, &[]).dead_after_s, Some(34.0));
        e.timer_in_s = None;
        assert_eq!(view(1, &e, &[]).dead_after_s, None);
    }
}
