//! What the table knows of one socket.

use std::{net::SocketAddr, sync::Arc};

use keepalive_api::{Keepalive, Owner, TcpState};

/// Which end opened the connection: it says which port is the service's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Opened {
    /// Seen neither connect nor accept (it predates the agent).
    #[default]
    Unknown,
    /// We connected (SYN-SENT): the remote port is the service.
    Active,
    /// We accepted (SYN-RECV to ESTABLISHED): our port is the service.
    Passive,
}

/// One end's close of an established connection (its FIN): when, and
/// how long the connection had idled before it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Closing {
    /// The state change's `ts_ns` (CLOSE-WAIT for the peer's, FIN-WAIT-1
    /// for ours).
    pub at_ns: u64,
    /// Seconds of silence before it: from the last data received (the
    /// peer's close), or from the last data either way (ours).
    pub idle_s: f64,
}

/// What the table knows of one socket.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Shared by every socket of the process (see [`SocketTable::intern`]).
    pub owner: Option<Arc<Owner>>,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub netns: Option<u32>,
    pub state: TcpState,
    pub opened: Opened,
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
    /// When it last received anything (`bpf_jiffies64` base), at the last
    /// scan: a later scan that finds it moved saw an idle gap survived.
    pub last_rcv_jiffies: Option<u64>,
    /// Seconds idle when the latest keepalive probe went out: the gap its
    /// ACK proves survived.
    pub probe_idle_s: Option<f64>,
    /// `retrans_stamp` of the stall already reported (one per stall).
    pub stall_stamp: Option<u32>,
    /// The peer's FIN (ESTABLISHED to CLOSE-WAIT): what a later RST of
    /// our write answers (stale reuse).
    pub peer_closed: Option<Closing>,
    /// Our application's close (ESTABLISHED to FIN-WAIT-1): what an RST
    /// the kernel sends for late data follows.
    pub closed_here: Option<Closing>,
    /// Probes and ACKs given to the labelled counters so far (see
    /// [`super::credit`]).
    pub credited_probes: u64,
    pub credited_acks: u64,
    /// Whose share of the table it takes: its owner's uid, once known.
    pub(super) holder: super::share::Holder,
    /// Inventory generation that last saw the socket.
    pub(super) generation: u64,
}

impl Entry {
    /// An established connection known by its owner and addresses alone
    /// (one the table no longer holds), to make a row of.
    pub fn established(
        owner: Option<Arc<Owner>>,
        netns: Option<u32>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Entry {
        Entry {
            owner,
            netns,
            local: Some(local),
            remote: Some(remote),
            state: TcpState::Established,
            ..Entry::default()
        }
    }
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            owner: None,
            local: None,
            remote: None,
            netns: None,
            state: TcpState::Unknown,
            opened: Opened::Unknown,
            inode: 0,
            uid: 0,
            keepalive: None,
            probes_out: 0,
            probes: 0,
            acks: 0,
            last_rtt_us: None,
            first_unanswered_probe_ns: None,
            idle_s: None,
            timer_in_s: None,
            last_rcv_jiffies: None,
            probe_idle_s: None,
            stall_stamp: None,
            peer_closed: None,
            closed_here: None,
            credited_probes: 0,
            credited_acks: 0,
            holder: None,
            generation: 0,
        }
    }
}
