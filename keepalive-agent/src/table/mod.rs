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
//!
//! Module map: [`apply`] (an event's record, and what it changes here),
//! `dying` (the timings and class of a reset, a stall or a death),
//! `credit` (what the labelled counters were given per socket), `entry`,
//! `view` (a row of `/sockets`, its risk), `hasher` (cookie hashing).
//! Depends on `model` and `host` (a connecting process's cgroup).

pub mod apply;
mod credit;
mod dying;
mod entry;
mod hasher;
#[cfg(test)]
mod tests;
mod view;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
};

pub use credit::Credit;
pub use entry::{Entry, Opened};
use hasher::CookieMap;
use keepalive_api::{Owner, SocketRow, TcpState};
use keepalive_common::{SocketRecord, Tuple, flag};
pub use view::{Judge, row};

use crate::model::{addr, clock::Clock, keepalive};

/// What one chunk of an inventory taught.
#[derive(Debug, Default)]
pub struct Inventoried {
    pub credits: Vec<Credit>,
    pub survived: Vec<Survival>,
}

/// An established connection idle at one scan has received something by
/// the next: it survived an idle gap at least as long as the earlier
/// scan's idle (the last receive moved: `rcv_tstamp`/`lrcvtime`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Survival {
    pub remote: std::net::SocketAddr,
    pub service_port: u16,
    pub gap_s: f64,
}

/// The idle gap `rec` shows `e` survived (as of the previous scan), and
/// the last receive remembered for the next.
fn survived_gap(e: &mut Entry, was: TcpState, rec: &SocketRecord) -> Option<f64> {
    let last_rcv = rec.jiffies.saturating_sub(u64::from(rec.idle_jiffies));
    let before = e.last_rcv_jiffies.replace(last_rcv);
    let established = was == TcpState::Established && e.state == TcpState::Established;
    // One jiffy of slack: the two reads of the clock.
    let received = before.is_some_and(|b| last_rcv > b + 1);
    if !(established && received) {
        return None;
    }
    e.idle_s
}

/// Every this many inventories, sockets no `/proc` walk found an owner
/// for are looked for again (a minute at the default 10 s).
const UNFINDABLE_RETRY: u64 = 6;

/// How many closed sockets stay findable.
const RECENTLY_CLOSED: usize = 4096;

pub struct SocketTable {
    live: CookieMap<Entry>,
    /// One owner per process, shared by its sockets: a process with
    /// thousands of connections stores its comm and cgroup once.
    owners: HashMap<u32, Arc<Owner>>,
    closed: CookieMap<Entry>,
    closed_order: VecDeque<u64>,
    /// (namespace, port) of the listening sockets: an accepted socket that
    /// predates the agent is known by its local port being one.
    listening: HashSet<(u32, u16)>,
    capacity: usize,
    generation: u64,
    /// Inodes a `/proc` walk looked for and no process held (a kernel
    /// socket, a process in no pid namespace we see): not looked for again
    /// at every inventory, which would walk every descriptor of the node
    /// for one socket.
    unfindable: HashSet<u64>,
    /// Sockets not recorded because the table was full.
    pub refused: u64,
    /// The shortest silence from the peer that counts as an idle gap
    /// (`--idle-gap-seconds`): what an idle reset or blackhole follows.
    pub idle_gap_min_s: f64,
}

/// The default `--idle-gap-seconds`.
pub const IDLE_GAP_MIN_S: f64 = 1.0;

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        SocketTable {
            live: CookieMap::default(),
            owners: HashMap::new(),
            closed: CookieMap::default(),
            closed_order: VecDeque::new(),
            listening: HashSet::new(),
            unfindable: HashSet::new(),
            capacity,
            generation: 0,
            refused: 0,
            idle_gap_min_s: IDLE_GAP_MIN_S,
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
        // A closed socket seen again (its TIME-WAIT form keeps the cookie)
        // is the same socket: what the table knew of it, its credits
        // included, comes back with it.
        let revived = self
            .closed
            .remove(&cookie)
            .map(|e| Entry { generation, ..e });
        Some(self.live.entry(cookie).or_insert_with(|| {
            revived.unwrap_or(Entry {
                generation,
                ..Entry::default()
            })
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
    pub fn set_tuple(&mut self, cookie: u64, t: &Tuple) {
        let (local, remote) = addr::endpoints(t);
        if let Some(e) = self.entry(cookie) {
            e.local = Some(local);
            e.remote = Some(remote);
            e.netns = Some(t.netns);
            e.state = TcpState::from_kernel(t.state);
        }
    }

    /// Applies what an event says about a socket's keepalive and counters.
    pub fn update(&mut self, cookie: u64, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.live.get_mut(&cookie) {
            f(e);
        }
    }

    /// A live or recently closed socket, to change.
    fn entry_any_mut(&mut self, cookie: u64) -> Option<&mut Entry> {
        if self.live.contains_key(&cookie) {
            return self.live.get_mut(&cookie);
        }
        self.closed.get_mut(&cookie)
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
        if entry.state == TcpState::Listen
            && let (Some(netns), Some(local)) = (entry.netns, entry.local)
        {
            self.listening.remove(&(netns, local.port()));
        }
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

    /// Takes in inventory records (a chunk of a namespace's); returns what
    /// the sockets' kernel counts add to the labelled counters, and the
    /// idle gaps connections were seen to survive.
    pub fn apply_inventory(&mut self, records: &[SocketRecord], clock: &Clock) -> Inventoried {
        let mut credits = Vec::new();
        let mut survived = Vec::new();
        let generation = self.generation;
        for rec in records {
            if rec.cookie == 0 {
                continue;
            }
            if TcpState::from_kernel(rec.tuple.state) == TcpState::Listen {
                self.listening.insert((rec.tuple.netns, rec.tuple.sport));
            }
            let Some(e) = self.entry(rec.cookie) else {
                continue;
            };
            let (local, remote) = addr::endpoints(&rec.tuple);
            // A closing socket's local port reads 0: keep what we knew.
            if rec.tuple.sport != 0 || e.local.is_none() {
                e.local = Some(local);
                e.remote = Some(remote);
            }
            e.netns = Some(rec.tuple.netns);
            let was = e.state;
            e.state = TcpState::from_kernel(rec.tuple.state);

            e.inode = rec.inode;
            e.uid = rec.uid;
            e.generation = generation;
            if rec.flags & flag::FULL_SOCK != 0 {
                let on = rec.flags & flag::KEEPALIVE_ON != 0;
                e.keepalive = Some(keepalive::effective(&rec.settings, on, clock));
                e.probes_out = rec.probes_out;
                if let Some(gap_s) = survived_gap(e, was, rec) {
                    survived.push((rec.cookie, gap_s));
                }
                e.idle_s = Some(clock.seconds(rec.idle_jiffies));
                e.timer_in_s = (rec.timer_expires != 0)
                    .then(|| clock.seconds(rec.timer_expires.saturating_sub(rec.jiffies) as u32));
            }
            // Exact counters from the kernel's per-socket map.
            if rec.flags & flag::COUNTERS != 0 {
                e.probes = rec.probes;
                e.acks = rec.acks;
                if rec.last_rtt_ns != 0 {
                    e.last_rtt_us = Some(rec.last_rtt_ns as f64 / 1e3);
                }
                let credit = self.credit(rec.cookie, Some(rec.probes), Some(rec.acks));
                credits.extend(credit.filter(|c| c.probes + c.acks > 0));
            }
        }
        let survived = survived
            .into_iter()
            .filter_map(|(cookie, gap_s)| {
                let e = self.live.get(&cookie)?;
                Some(Survival {
                    remote: e.remote?,
                    service_port: self.service_port(e)?,
                    gap_s,
                })
            })
            .collect();
        Inventoried { credits, survived }
    }

    /// The port of the service a connection reaches: the remote one of a
    /// connection we opened, ours of one we accepted; for one that
    /// predates the agent, ours if a socket of its namespace listens on
    /// it, else the lower of the two (servers listen low).
    pub fn service_port(&self, e: &Entry) -> Option<u16> {
        let (local, remote) = (e.local?.port(), e.remote?.port());
        Some(match e.opened {
            Opened::Active => remote,
            Opened::Passive => local,
            Opened::Unknown
                if e.netns
                    .is_some_and(|n| self.listening.contains(&(n, local))) =>
            {
                local
            }
            Opened::Unknown => local.min(remote),
        })
    }

    /// A namespace's inventory is complete: its sockets the pass did not
    /// see are gone (their close event was lost). Returns how many.
    pub fn end_inventory_of(&mut self, netns: u32) -> usize {
        let generation = self.generation;
        let gone: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, e)| e.netns == Some(netns) && e.generation != generation)
            .map(|(c, _)| *c)
            .collect();
        for &cookie in &gone {
            self.close(cookie);
        }
        gone.len()
    }

    /// Inodes of live sockets without a known owner (for `/proc` lookup).
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

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Entry)> {
        self.live.iter()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Cookies of the live sockets, in order: what a streamed `/sockets`
    /// walks, a chunk at a time.
    pub fn live_cookies(&self) -> Vec<u64> {
        let mut cookies: Vec<u64> = self.live.keys().copied().collect();
        cookies.sort_unstable();
        cookies
    }

    /// The listeners' (namespace, port) pairs, for the advice.
    pub fn listening(&self) -> &HashSet<(u32, u16)> {
        &self.listening
    }

    /// The row of a live socket.
    pub fn row_of(&self, cookie: u64, judge: Judge<'_>) -> Option<SocketRow> {
        self.live
            .get(&cookie)
            .map(|e| row(cookie, e, self.service_port(e), judge))
    }

    /// A socket's risk, against `judge`.
    pub fn risk_of(&self, e: &Entry, judge: Judge<'_>) -> Option<keepalive_api::Risk> {
        view::risk_of(e, self.service_port(e), judge)
    }
}
