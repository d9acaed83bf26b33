//! The periodic inventory's side of the table: every socket a pass reads
//! (even those that predate the agent) taken in, its kernel counts made
//! credits, the idle gaps connections were seen to survive, and the
//! sockets a pass no longer sees closed (their close event was lost).

use std::sync::Arc;

use keepalive_api::TcpState;
use keepalive_common::{SocketRecord, flag};

use super::{Credit, Entry, SocketTable};
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

impl SocketTable {
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
                self.listen(rec.cookie, rec.tuple.netns, rec.tuple.sport);
            }
            // iter/tcp reads 0 as a TIME-WAIT socket's uid (it has no
            // owner left, bpf_iter_tcp_seq_show): not root's share.
            let holder = (rec.flags & flag::FULL_SOCK != 0).then_some(rec.uid);
            let Some(e) = self.entry(rec.cookie, holder) else {
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
}
