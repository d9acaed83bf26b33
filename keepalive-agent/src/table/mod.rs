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
//! `inventory` (a pass's records taken in, the sockets it no longer sees),
//! `owners` (who owns each socket), `view` (a row of `/sockets`, its
//! risk), `hasher` (cookie hashing).
//! Depends on `model` and `host` (a connecting process's cgroup).

pub mod apply;
mod closing;
mod credit;
mod dying;
mod entry;
mod hasher;
mod inventory;
mod owners;
mod share;
#[cfg(test)]
mod tests;
mod view;

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map},
    sync::Arc,
};

pub use credit::Credit;
pub use entry::{Entry, Opened};
use hasher::CookieMap;
pub use inventory::Survival;
use keepalive_api::{Owner, SocketRow, TcpState};
use keepalive_common::{OptionEvent, Tuple};
use share::{Admission, Holder, Shares};
pub use view::{Judge, row};

use crate::model::{addr, keepalive};

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
    /// The listener of each (namespace, port), by cookie: whose an
    /// accepted socket is.
    listeners: HashMap<(u32, u16), u64>,
    capacity: usize,
    generation: u64,
    /// Sockets a `/proc` walk found no owner for: not looked for again
    /// at every inventory, which would walk every descriptor of the node
    /// for one socket.
    unfindable: owners::Unfindable,
    /// Who holds the room: a full table is shared between users.
    shares: Shares,
    /// Sockets not recorded because the table was full and their user
    /// held as many as any other.
    pub refused: u64,
    /// Sockets dropped from a full table for another user's.
    pub evicted: u64,
    /// The shortest silence from the peer that counts as an idle gap
    /// (`--idle-gap-seconds`): what an idle reset or blackhole follows.
    pub idle_gap_min_s: f64,
}

/// The default `--idle-gap-seconds`.
pub const IDLE_GAP_MIN_S: f64 = 1.0;

/// A new live entry for `cookie`. A closed socket seen again (its
/// TIME-WAIT form keeps the cookie) is the same socket: what the table knew
/// of it, its credits included, comes back with it. `generation`: born in
/// this pass, an inventory that started before the socket existed must not
/// count it as gone.
fn revived(closed: &mut CookieMap<Entry>, cookie: u64, generation: u64, holder: Holder) -> Entry {
    let mut entry = closed.remove(&cookie).unwrap_or_default();
    entry.generation = generation;
    if let Some(uid) = holder {
        (entry.holder, entry.uid) = (holder, uid);
    }
    entry
}

impl SocketTable {
    pub fn new(capacity: usize) -> Self {
        SocketTable {
            live: CookieMap::default(),
            owners: HashMap::new(),
            closed: CookieMap::default(),
            closed_order: VecDeque::new(),
            listening: HashSet::new(),
            listeners: HashMap::new(),
            unfindable: owners::Unfindable::default(),
            capacity,
            generation: 0,
            shares: Shares::default(),
            refused: 0,
            evicted: 0,
            idle_gap_min_s: IDLE_GAP_MIN_S,
        }
    }

    /// The live entry of `cookie`, created if there is room (see
    /// [`share`]): `holder` is its owner's uid where the caller knows it.
    fn entry(&mut self, cookie: u64, holder: Holder) -> Option<&mut Entry> {
        // A full table makes room first (the lookup is paid only then).
        if self.live.len() >= self.capacity
            && !self.live.contains_key(&cookie)
            && !self.make_room_for(holder)
        {
            self.refused += 1;
            return None;
        }
        // One lookup for a socket the table knows: an inventory makes one
        // such call per socket of the node.
        match self.live.entry(cookie) {
            hash_map::Entry::Occupied(known) => {
                let e = known.into_mut();
                if holder.is_some() && e.holder != holder {
                    self.shares.moved(e.holder, holder, cookie);
                    e.holder = holder;
                    e.uid = holder.unwrap_or(e.uid);
                }
                Some(e)
            }
            hash_map::Entry::Vacant(vacant) => {
                let entry = revived(&mut self.closed, cookie, self.generation, holder);
                self.shares.add(entry.holder, cookie);
                Some(vacant.insert(entry))
            }
        }
    }

    /// Drops a socket of the largest holder for one of `holder`'s, if the
    /// shares allow it.
    fn make_room_for(&mut self, holder: Holder) -> bool {
        let live = &self.live;
        let Admission::Evict(victim) = self
            .shares
            .admit(holder, &|c| live.get(&c).map(share::held))
        else {
            return false;
        };
        // Kept with the recently closed: what it was credited stays known,
        // so its later events (or its return) are not counted twice.
        self.close(victim);
        self.evicted += 1;
        true
    }

    /// Removes a live entry, its listening port and its share.
    fn forget(&mut self, cookie: u64) -> Option<Entry> {
        let entry = self.live.remove(&cookie)?;
        if entry.state == TcpState::Listen
            && let (Some(netns), Some(local)) = (entry.netns, entry.local)
        {
            self.listening.remove(&(netns, local.port()));
            self.listeners.remove(&(netns, local.port()));
        }
        let live = &self.live;
        self.shares
            .remove(entry.holder, &|c| live.get(&c).map(share::held));
        Some(entry)
    }

    /// Records where a socket is, from an event that read a full tuple.
    pub fn set_tuple(&mut self, cookie: u64, t: &Tuple, holder: Holder) {
        let (local, remote) = addr::endpoints(t);
        if let Some(e) = self.entry(cookie, holder) {
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

    /// Socket `cookie` listens on `port` in namespace `netns`.
    pub fn listen(&mut self, cookie: u64, netns: u32, port: u16) {
        self.listening.insert((netns, port));
        self.listeners.insert((netns, port), cookie);
    }

    /// An accepted socket is owned by its listener's process: accept
    /// completes in softirq, where no event names one (a pre-forked
    /// server's worker that calls accept() is its listener's child).
    pub fn inherit_listener_owner(&mut self, cookie: u64, netns: u32, port: u16) {
        let owner = self
            .listeners
            .get(&(netns, port))
            .and_then(|l| self.live.get(l))
            .and_then(|l| l.owner.clone());
        if let (Some(owner), Some(e)) = (owner, self.live.get_mut(&cookie))
            && e.owner.is_none()
        {
            e.owner = Some(owner);
        }
    }

    /// A keepalive option set on a socket of the table, applied as the
    /// kernel applies it; false when the table has no settings of it yet
    /// (the next inventory reads them).
    pub fn set_option(&mut self, set: &OptionEvent) -> bool {
        let Some(e) = self.live.get_mut(&set.head.cookie) else {
            return false;
        };
        let Some(k) = &e.keepalive else { return false };
        if let Some(k) = keepalive::with_option(k, set) {
            e.keepalive = Some(k);
        }
        true
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
        let Some(entry) = self.forget(cookie) else {
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

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Entry)> {
        self.live.iter()
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
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
