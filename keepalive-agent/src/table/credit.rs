//! What the labelled counters (`keepalive_probes_total`,
//! `keepalive_probe_acks_total`) have been given for each socket. They are
//! derived from the kernel's exact per-socket counts, which every probe,
//! ACK, close and error event carries and every inventory reads: a socket
//! is credited the difference between the kernel's count and what it was
//! credited before, once. Events lost to a full ring buffer (or an agent
//! that was stopped) are made up at the next event or scan of the socket,
//! so the labelled counters end equal to the kernel's.

use std::{net::SocketAddr, sync::Arc};

use keepalive_api::Owner;

use super::SocketTable;

/// Probes and ACKs to add to one socket's series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    pub netns: Option<u32>,
    /// Whose series: the socket's owner, where known.
    pub owner: Option<Arc<Owner>>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub probes: u64,
    pub acks: u64,
}

impl SocketTable {
    /// Credits `cookie` up to the kernel's totals (None: not carried).
    /// None when the table has no entry for the socket (it was full):
    /// the caller then counts the event itself.
    pub fn credit(
        &mut self,
        cookie: u64,
        probes_total: Option<u64>,
        acks_total: Option<u64>,
    ) -> Option<Credit> {
        let e = self.entry_any_mut(cookie)?;
        let take = |total: Option<u64>, counted: &mut u64| match total {
            Some(t) if t > *counted => {
                let d = t - *counted;
                *counted = t;
                d
            }
            _ => 0,
        };
        let probes = take(probes_total, &mut e.credited_probes);
        let acks = take(acks_total, &mut e.credited_acks);
        Some(Credit {
            netns: e.netns,
            owner: e.owner.clone(),
            local: e.local,
            remote: e.remote,
            probes,
            acks,
        })
    }
}

#[cfg(test)]
mod tests {
    use keepalive_common::Tuple;

    use super::*;

    #[test]
    fn each_probe_is_credited_once_whatever_reports_it() {
        let mut t = SocketTable::new(4);
        t.set_tuple(
            1,
            &Tuple {
                netns: 9,
                sport: 40000,
                dport: 22,
                ..Tuple::default()
            },
            None,
        );
        // Events for probes 1 and 2, then lost ones; a scan reads 5.
        assert_eq!(t.credit(1, Some(1), None).unwrap().probes, 1);
        assert_eq!(t.credit(1, Some(2), None).unwrap().probes, 1);
        let c = t.credit(1, Some(5), Some(4)).unwrap();
        assert_eq!((c.probes, c.acks, c.netns), (3, 4, Some(9)));
        // Late events of probes already credited add nothing.
        assert_eq!(t.credit(1, Some(4), Some(3)).unwrap().probes, 0);
        // After close, the close event's totals still count.
        t.close(1);
        assert_eq!(t.credit(1, Some(6), Some(6)).unwrap().probes, 1);
        // Seen again (TIME-WAIT keeps the cookie): its credits come along,
        // and a late event of an old total adds nothing.
        t.set_tuple(1, &Tuple::default(), None);
        assert_eq!(t.credit(1, Some(6), Some(6)).unwrap().probes, 0);
        assert!(t.credit(2, Some(1), None).is_none(), "unknown socket");
    }
}
