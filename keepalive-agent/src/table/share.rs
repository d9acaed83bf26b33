//! Who holds the table's room, so that one user cannot blind the agent to
//! the others. A socket is held by its owner's uid (`sk_uid`, the `uid:`
//! of `ss -e`: read at connect, at accept and by every inventory), or by
//! nobody known yet (a socket first seen in TIME-WAIT has no owner left).
//! When the table is full, a socket of a user holding fewer sockets than
//! the largest holder takes the place of one of that holder's, a
//! keepalive-off or TIME-WAIT one first, else the oldest; a socket of the
//! largest holder itself is refused. Users end with equal shares of a full
//! table, whoever came first.

use std::collections::{HashMap, VecDeque, hash_map};

/// A socket's holder: its owner's uid, `None` until one is known.
pub type Holder = Option<u32>;

/// How many of the largest holder's oldest sockets are looked at for a
/// keepalive-off one before the oldest is taken.
const LOOK_FOR_KEEPALIVE_OFF: usize = 16;

/// What the shares need of a table entry: its holder, and whether it is
/// worth keeping (keepalive on, and not in TIME-WAIT).
pub fn held(e: &super::Entry) -> (Holder, bool) {
    let keepalive_on = e.keepalive.as_ref().is_some_and(|k| k.enabled);
    (
        e.holder,
        keepalive_on && e.state != keepalive_api::TcpState::TimeWait,
    )
}

/// What the shares need to know of a cookie while it is in the table: its
/// holder and whether it is worth keeping (see [`held`]).
pub type Lookup<'a> = &'a dyn Fn(u64) -> Option<(Holder, bool)>;

#[derive(Debug, Default)]
pub struct Shares {
    held: HashMap<Holder, Holding>,
}

/// One holder's sockets: how many, and their cookies oldest first. A
/// cookie that left (or moved to another holder) stays in `order` until
/// met, or until such cookies outnumber the live ones.
#[derive(Debug, Default)]
struct Holding {
    count: usize,
    order: VecDeque<u64>,
}

/// What a full table does for a newcomer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Makes room by dropping this socket of the largest holder.
    Evict(u64),
    /// Its holder holds as many sockets as any other: refused.
    Refuse,
}

impl Shares {
    pub fn add(&mut self, holder: Holder, cookie: u64) {
        let h = self.held.entry(holder).or_default();
        h.count += 1;
        h.order.push_back(cookie);
    }

    /// One of `holder`'s sockets left the table; its cookie in `order` is
    /// dropped once such cookies outnumber the live ones, so churn cannot
    /// grow it.
    pub fn remove(&mut self, holder: Holder, lookup: Lookup<'_>) {
        if let Some(h) = self.release(holder)
            && h.order.len() > 2 * h.count + 64
        {
            h.order
                .retain(|c| lookup(*c).is_some_and(|(held_by, _)| held_by == holder));
        }
    }

    /// One socket fewer for `holder`: its holding, while it holds any.
    fn release(&mut self, holder: Holder) -> Option<&mut Holding> {
        let hash_map::Entry::Occupied(mut o) = self.held.entry(holder) else {
            return None;
        };
        o.get_mut().count = o.get().count.saturating_sub(1);
        if o.get().count == 0 {
            o.remove();
            return None;
        }
        Some(o.into_mut())
    }

    /// A socket's holder became known (or changed): counted under its
    /// new one; its cookie under the old one is dropped when met.
    pub fn moved(&mut self, from: Holder, to: Holder, cookie: u64) {
        self.release(from);
        self.add(to, cookie);
    }

    /// How many sockets `holder` holds.
    pub fn of(&self, holder: Holder) -> usize {
        self.held.get(&holder).map_or(0, |h| h.count)
    }

    /// The holders and their counts.
    pub fn holders(&self) -> impl Iterator<Item = (Holder, usize)> + '_ {
        self.held.iter().map(|(holder, h)| (*holder, h.count))
    }

    /// What a full table does for a socket of `newcomer`.
    pub fn admit(&mut self, newcomer: Holder, lookup: Lookup<'_>) -> Admission {
        let Some((largest, most)) = self.holders().max_by_key(|(_, count)| *count) else {
            return Admission::Refuse;
        };
        // The largest must stay at least as large as the newcomer's holder
        // after giving one up: no two holders trade places forever.
        if largest == newcomer || self.of(newcomer) + 1 >= most {
            return Admission::Refuse;
        }
        let Some(h) = self.held.get_mut(&largest) else {
            return Admission::Refuse;
        };
        let held_here = |c: &u64| lookup(*c).filter(|(held_by, _)| *held_by == largest);
        while h.order.front().is_some_and(|c| held_here(c).is_none()) {
            h.order.pop_front();
        }
        let keepalive_off = h
            .order
            .iter()
            .take(LOOK_FOR_KEEPALIVE_OFF)
            .position(|c| held_here(c).is_some_and(|(_, keepalive_on)| !keepalive_on));
        match h.order.remove(keepalive_off.unwrap_or(0)) {
            Some(cookie) => Admission::Evict(cookie),
            None => Admission::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A table of cookie -> (holder, keepalive on).
    struct Fake {
        shares: Shares,
        live: HashMap<u64, (Holder, bool)>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                shares: Shares::default(),
                live: HashMap::new(),
            }
        }

        fn add(&mut self, cookie: u64, holder: Holder, keepalive_on: bool) {
            self.live.insert(cookie, (holder, keepalive_on));
            self.shares.add(holder, cookie);
        }

        fn close(&mut self, cookie: u64) {
            let (holder, _) = self.live.remove(&cookie).unwrap();
            let live = &self.live;
            self.shares.remove(holder, &|c| live.get(&c).copied());
        }

        fn admit(&mut self, holder: Holder) -> Admission {
            let live = &self.live;
            self.shares.admit(holder, &|c| live.get(&c).copied())
        }
    }

    #[test]
    fn the_largest_holder_gives_up_a_keepalive_off_socket_first() {
        let mut f = Fake::new();
        f.add(1, Some(65534), true);
        f.add(2, Some(65534), false);
        f.add(3, Some(65534), true);
        f.add(4, Some(0), true);
        assert_eq!(f.admit(Some(0)), Admission::Evict(2));
        // The largest holder itself is refused.
        assert_eq!(f.admit(Some(65534)), Admission::Refuse);
    }

    #[test]
    fn the_oldest_goes_when_all_keep_alive_and_shares_end_equal() {
        let mut f = Fake::new();
        for c in 1..=4 {
            f.add(c, Some(65534), true);
        }
        let mut next = 100;
        while let Admission::Evict(victim) = f.admit(Some(0)) {
            f.close(victim);
            f.add(next, Some(0), true);
            next += 1;
        }
        assert_eq!((f.shares.of(Some(0)), f.shares.of(Some(65534))), (2, 2));
        assert!(!f.live.contains_key(&1) && !f.live.contains_key(&2));
    }

    #[test]
    fn cookies_that_left_or_moved_are_skipped() {
        let mut f = Fake::new();
        for c in 1..=3 {
            f.add(c, Some(7), true);
        }
        // 1 closed; 2 found to be uid 8's.
        f.close(1);
        f.close(2);
        f.add(2, Some(8), true);
        f.add(4, Some(7), true);
        f.add(5, Some(7), true);
        assert_eq!(f.admit(None), Admission::Evict(3));
    }

    #[test]
    fn order_stays_bounded_under_churn() {
        let mut f = Fake::new();
        f.add(0, Some(1), true);
        for c in 1..10_000 {
            f.add(c, Some(1), true);
            f.close(c);
        }
        assert_eq!(f.shares.of(Some(1)), 1);
        assert!(f.shares.held[&Some(1)].order.len() <= 2 + 64 + 1);
    }
}
