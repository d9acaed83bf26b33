//! The socket table: bounds, closes, inventories, shared owners.

use std::sync::Arc;

use keepalive_api::{Keepalive, Owner, Source};
use keepalive_common::{SocketRecord, Tuple, flag};

use super::{
    owners::{UNFINDABLE_RETRY, UNFINDABLE_RETRY_MAX},
    *,
};
use crate::model::{clock::Clock, paths::PathBook};

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
    let tuple = Tuple {
        netns: 7,
        sport: 1,
        ..Tuple::default()
    };
    t.set_tuple(1, &tuple, None);
    t.begin_inventory();
    t.set_tuple(2, &tuple, None);
    t.apply_inventory(&[], &Clock::new(250));
    t.end_inventory_of(7);
    assert!(!t.is_live(1), "unseen by the pass: gone");
    assert!(t.is_live(2), "born during the pass: kept");
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

/// One user filling the table cannot keep another's sockets out: the
/// newcomer takes the place of the filler's socket, a keepalive-off one
/// first; the filler's own newcomers are refused; an inventory that learns
/// a socket's uid counts it under that user.
#[test]
fn a_full_table_is_shared_between_users() {
    let clock = Clock::new(250);
    let mut t = SocketTable::new(4);
    let record = |cookie: u64, uid: u32, keepalive: bool| SocketRecord {
        cookie,
        uid,
        tuple: Tuple {
            netns: 7,
            sport: cookie as u16,
            state: 1,
            ..Tuple::default()
        },
        flags: flag::FULL_SOCK | if keepalive { flag::KEEPALIVE_ON } else { 0 },
        ..SocketRecord::default()
    };
    let filler: Vec<_> = (1..=4).map(|c| record(c, 65534, c != 3)).collect();
    t.apply_inventory(&filler, &clock);
    t.set_tuple(5, &Tuple::default(), Some(65534));
    assert_eq!(
        (t.len(), t.refused, t.evicted),
        (4, 1, 0),
        "the filler's own: refused"
    );
    t.credit(3, Some(5), Some(5));
    // root connects: the filler's keepalive-off socket (3) makes room.
    t.set_tuple(6, &Tuple::default(), Some(0));
    assert!(t.is_live(6) && !t.is_live(3));
    assert_eq!(t.evicted, 1);
    // A socket of unknown owner is a holder of its own, then moves to
    // root's share once an inventory reads its uid.
    t.set_tuple(7, &Tuple::default(), None);
    assert!(
        t.is_live(7) && !t.is_live(1),
        "the filler's oldest goes next"
    );
    t.apply_inventory(&[record(7, 0, true)], &clock);
    assert_eq!(
        (
            t.get(7).unwrap().uid,
            t.shares.of(Some(0)),
            t.shares.of(None)
        ),
        (0, 2, 0)
    );
    // Two each: the next of either is refused, whoever came first.
    t.set_tuple(8, &Tuple::default(), Some(0));
    t.set_tuple(9, &Tuple::default(), Some(65534));
    assert_eq!((t.len(), t.refused, t.evicted), (4, 3, 2));
    // An evicted socket is kept with the recently closed: its credits
    // stay known, and come back if it is taken in again.
    assert!(!t.is_live(3) && t.get(3).is_some_and(|e| e.credited_probes == 5));
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
            idle_source: Source::Sysctl,
            interval_s: 10.0,
            interval_source: Source::Sysctl,
            count: 5,
            count_source: Source::Sysctl,
            detection_s: 110.0,
        }),
        timer_in_s: Some(4.0),
        probes_out: 2,
        ..Default::default()
    };
    let (paths, conntrack) = (PathBook::new(1, 60), Default::default());
    let judge = Judge {
        rules: &[],
        paths: &paths,
        conntrack: &conntrack,
    };
    assert_eq!(row(1, &e, None, judge).dead_after_s, Some(34.0));
    e.timer_in_s = None;
    assert_eq!(row(1, &e, None, judge).dead_after_s, None);
}

/// A scan that finds an established socket's last receive moved saw it
/// survive the idle gap the previous scan measured.
#[test]
fn a_scan_sees_an_idle_gap_survived() {
    let clock = Clock::new(100);
    let mut t = SocketTable::new(4);
    let mut rec = SocketRecord {
        cookie: 5,
        flags: flag::FULL_SOCK,
        ..SocketRecord::default()
    };
    rec.tuple.family = 2;
    rec.tuple.state = 1;
    rec.tuple.sport = 40000;
    rec.tuple.dport = 5432;
    rec.tuple.saddr[..4].copy_from_slice(&[192, 0, 2, 1]);
    rec.tuple.daddr[..4].copy_from_slice(&[198, 51, 100, 2]);
    let scan = |t: &mut SocketTable, jiffies: u64, idle: u32| {
        let mut r = rec;
        r.jiffies = jiffies;
        r.idle_jiffies = idle;
        t.begin_inventory();
        t.apply_inventory(&[r], &clock).survived
    };
    assert!(
        scan(&mut t, 1000, 100).is_empty(),
        "a first look proves nothing"
    );
    // Still idle: the last receive has not moved.
    assert!(scan(&mut t, 1250, 350).is_empty());
    // Received 0.5 s ago: it survived at least the 3.5 s seen idle before.
    let seen = scan(&mut t, 1500, 50);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].gap_s, 3.5);
    // Neither connect nor accept seen, nothing listens on 40000: the lower port.
    assert_eq!(seen[0].service_port, 5432);
    assert_eq!(seen[0].remote.to_string(), "198.51.100.2:5432");
}

/// A table holding one socket (inode 77) that a first `/proc` walk found
/// no owner for, and the generation of that walk.
fn table_with_unfindable_socket() -> (SocketTable, u64) {
    let clock = Clock::new(100);
    let mut t = SocketTable::new(4);
    let mut rec = SocketRecord {
        cookie: 9,
        flags: flag::FULL_SOCK,
        inode: 77,
        ..SocketRecord::default()
    };
    rec.tuple.family = 2;
    rec.tuple.state = 10;
    t.begin_inventory();
    t.apply_inventory(&[rec], &clock);
    let wanted = t.ownerless_inodes();
    assert_eq!(wanted, HashSet::from([77]));
    t.set_owners_by_inode(HashMap::new(), &wanted);
    let first = t.generation;
    (t, first)
}

/// The inventories (after the first) at which a socket no process holds
/// is looked for again, over `inventories` inventories.
fn retries_of_unfindable(t: &mut SocketTable, inventories: u64) -> Vec<u64> {
    let mut asked = Vec::new();
    for _ in 0..inventories {
        t.begin_inventory();
        let wanted = t.ownerless_inodes();
        if !wanted.is_empty() {
            asked.push(t.generation);
        }
        t.set_owners_by_inode(HashMap::new(), &wanted);
    }
    asked
}

/// A socket no process holds is looked for once, then after
/// UNFINDABLE_RETRY inventories, until it is found.
#[test]
fn unfindable_owners_are_not_looked_for_at_every_inventory() {
    let (mut t, first) = table_with_unfindable_socket();
    let asked = retries_of_unfindable(&mut t, UNFINDABLE_RETRY);
    assert_eq!(asked, [first + UNFINDABLE_RETRY], "asked again once");
    t.set_owners_by_inode(HashMap::from([(77, owner(3))]), &HashSet::from([77]));
    assert_eq!(t.get(9).unwrap().owner.as_ref().unwrap().pid, 3);
    assert!(t.unfindable.inodes.is_empty());
}

/// Retries that find nothing wait twice as long each time, up to
/// UNFINDABLE_RETRY_MAX inventories; one that finds an owner starts over.
#[test]
fn retries_for_unfindable_owners_back_off() {
    let (mut t, first) = table_with_unfindable_socket();
    let asked = retries_of_unfindable(&mut t, 5 * UNFINDABLE_RETRY_MAX);
    // Waits of 6, 12, 24, 48, 96, 192, then 360 inventories.
    let expected: Vec<u64> = [6, 18, 42, 90, 186, 378, 738, 1098, 1458]
        .iter()
        .map(|after| first + after)
        .collect();
    assert_eq!(asked, expected);
    assert_eq!(t.unfindable_owners(), (1, UNFINDABLE_RETRY_MAX));

    // Another process takes the socket over: found at the next retry,
    // and the wait is back to the shortest for sockets unfindable later.
    while t.ownerless_inodes().is_empty() {
        t.begin_inventory();
    }
    t.set_owners_by_inode(HashMap::from([(77, owner(3))]), &HashSet::from([77]));
    assert_eq!(t.unfindable_owners(), (0, UNFINDABLE_RETRY));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Opens (by a uid of four, or of unknown owner) and closes.
    #[derive(Clone, Debug)]
    enum Op {
        Open(Option<u32>),
        Close(u64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => prop::option::weighted(0.9, 0u32..4).prop_map(Op::Open),
                1 => (0u64..400).prop_map(Op::Close),
            ],
            1..400,
        )
    }

    proptest! {
        /// Whatever the order of arrivals, the table stays within its
        /// capacity, its shares add up to what it holds, and a socket is
        /// refused only when its user holds as many as any other but one.
        #[test]
        fn a_full_table_refuses_only_the_largest_holders(capacity in 1usize..32, ops in ops()) {
            let mut t = SocketTable::new(capacity);
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Open(holder) => {
                        let refused = t.refused;
                        next += 1;
                        t.set_tuple(next, &Tuple::default(), holder);
                        if t.refused > refused {
                            let mine = t.shares.of(holder);
                            let most = t.shares.holders().map(|(_, n)| n).max().unwrap_or(0);
                            prop_assert!(mine + 1 >= most, "{holder:?} holds {mine}, refused below {most}");
                        } else {
                            prop_assert!(t.is_live(next));
                        }
                    }
                    Op::Close(cookie) => t.close(cookie),
                }
                prop_assert!(t.len() <= capacity);
                prop_assert_eq!(t.shares.holders().map(|(_, n)| n).sum::<usize>(), t.len());
            }
        }
    }
}
