//! The event pipeline: the ring buffer's reader task decodes each record,
//! applies it to the socket table, counts it into the metrics, prints it
//! and hands it to `/events` subscribers.

use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use keepalive_api::{Record, RecordKind, ResetClass};
use log::warn;
use tokio::{io::unix::AsyncFd, sync::broadcast};

use super::lock;
use crate::{
    api::state::Shared, bpf::ring, cli::text, host::outlet, model::clock::Clock, table::apply,
};

/// What goes to stdout.
#[derive(Clone, Copy)]
pub struct Printing {
    pub quiet: bool,
    pub json: bool,
    pub all_events: bool,
    /// `--idle-gap-seconds`: a peer's close after this much silence is
    /// printed by default.
    pub idle_gap_min_s: f64,
}

impl Printing {
    /// State changes are the bulk of events on a busy node; by default
    /// only a close of a socket that had keepalive activity is printed.
    fn wants(self, r: &Record) -> bool {
        if self.quiet {
            return false;
        }
        match r.event {
            RecordKind::StateChange => self.all_events,
            RecordKind::SocketClosed => self.all_events || r.probes.unwrap_or(0) > 0,
            // Every keep-alive server closes idle connections: only a
            // close after an idle gap is worth a line by default.
            RecordKind::PeerClose => {
                self.all_events || r.idle_before_s.is_some_and(|g| g >= self.idle_gap_min_s)
            }
            RecordKind::ResetSent => self.all_events || r.class != Some(ResetClass::Other),
            RecordKind::KeepaliveTimer
            | RecordKind::ProbeSent
            | RecordKind::WireProbe
            | RecordKind::ProbeAck
            | RecordKind::KeepaliveTimeout
            | RecordKind::ConnectionTimeout
            | RecordKind::SocketError
            | RecordKind::ConnectionReset
            | RecordKind::IdleBlackhole
            | RecordKind::SysctlChanged => true,
        }
    }
}

/// Where records go: the table and metrics, `/events` subscribers, stdout.
#[derive(Clone)]
pub struct Sink {
    pub state: Shared,
    pub clock: Clock,
    pub print: Printing,
    pub events: broadcast::Sender<Arc<Record>>,
}

/// Records decoded per hold of the state lock: bounds the batch's memory
/// and how long an HTTP request waits for the lock during a burst.
const BATCH: usize = 1024;

impl Sink {
    /// `records` is the caller's, kept from drain to drain: a batch is
    /// hundreds of KiB, which malloc would map and unmap (and the kernel
    /// fault in page by page) on every wake-up otherwise.
    fn drain(&self, ring: &mut RingBuf<MapData>, records: &mut Vec<Record>) -> anyhow::Result<()> {
        loop {
            {
                let mut state = lock(&self.state)?;
                while records.len() < BATCH {
                    let Some(item) = ring.next() else { break };
                    if let Some(set) = ring::decode_option(&item) {
                        state.table.set_option(&set);
                        continue;
                    }
                    let Some(ev) = ring::decode(&item) else {
                        warn!("short ring buffer record ({} bytes)", item.len());
                        continue;
                    };
                    let uid = ring::owner_uid(&item);
                    for ev in ring::unfold(ev) {
                        let Some(mut record) =
                            apply::to_record(&ev, uid, &mut state.table, &self.clock)
                        else {
                            continue;
                        };
                        state.count(&mut record);
                        // Counted: the rest is for records that go out.
                        if self.goes_out(&record) {
                            apply::add_owner(&mut record, &state.table);
                            state.naming.name_record(&mut record);
                            records.push(record);
                        }
                    }
                }
            }
            let more = records.len() >= BATCH;
            for record in records.drain(..) {
                self.emit(record);
            }
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// Whether `emit` would print the record or hand it to anyone.
    fn goes_out(&self, r: &Record) -> bool {
        self.print.wants(r) || self.events.receiver_count() > 0
    }

    /// Prints the record (queued: a stdout nobody reads drops lines,
    /// counted, and blocks nothing) and hands it to `/events`.
    pub fn emit(&self, record: Record) {
        if self.print.wants(&record) {
            let mut line = Vec::with_capacity(256);
            // Writing into a Vec cannot fail.
            let _ = text::write(&mut line, &record, self.print.json);
            outlet::stdout().send(line);
        }
        // Nobody listening: no copy to share (most of the time on a node).
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(record));
        }
    }
}

/// Follows the ring buffer until `stop`, then drains what is left.
pub async fn read_ring(
    mut ring: AsyncFd<RingBuf<MapData>>,
    sink: Sink,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let mut records = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                sink.drain(guard.get_inner_mut(), &mut records)?;
                guard.clear_ready();
            }
            _ = &mut stop => break,
        }
    }
    sink.drain(ring.get_mut(), &mut records)
}
