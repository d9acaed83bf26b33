//! The agent's periodic work between events: socket inventories (every
//! socket, its exact counters, owners found through `/proc`), namespace
//! sysctls and their changes, and the expiry of probes whose ACK never
//! came; plus the HZ calibration start-up falls back to.

use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData};
use keepalive_api::{Record, RecordKind};
use keepalive_common::{FlowKey, ProbeInFlight};
use log::{info, warn};

use super::ring::Sink;
use crate::{
    api::state::Shared,
    bpf::iter,
    host::{netns, owners, process, sysctl},
    kernel::hz,
    model::clock::{Clock, monotonic_ns},
};

/// Every namespace's sockets, their exact kernel counters, and owners for
/// sockets whose connect we did not see.
pub fn inventory(ebpf: &mut aya::Ebpf, state: &Shared, clock: &Clock) {
    let started = std::time::Instant::now();
    let Ok(mut s) = state.lock() else { return };
    s.table.begin_inventory();
    drop(s);
    let (mut total, mut namespaces) = (0, 0);
    for ns in netns::all() {
        // The lock is taken per chunk: the ring buffer's reader needs it too.
        let scanned = iter::scan(ebpf, &ns, |records| {
            if let Ok(mut s) = state.lock() {
                s.table.apply_inventory(records, clock);
            }
        });
        match scanned {
            Ok(n) => {
                total += n;
                namespaces += 1;
                if let Ok(mut s) = state.lock() {
                    s.table.end_inventory_of(ns.inode as u32);
                }
            }
            Err(e) => log::debug!("{e}"),
        }
    }
    let wanted: HashSet<u64> = match state.lock() {
        Ok(s) => s.table.ownerless_inodes(),
        Err(_) => return,
    };
    let found = owners::resolve(&wanted);
    let owners_found = found.len();
    if let Ok(mut s) = state.lock() {
        s.table.set_owners_by_inode(found);
    }
    // The scan's buffers were as large as the node's socket count.
    process::release_freed_memory();
    log::debug!(
        "inventory: {total} sockets in {namespaces} namespaces, {owners_found} owners found, {} ms",
        started.elapsed().as_millis()
    );
}

/// Two inventories of our own namespace 250 ms apart: each record carries
/// `bpf_jiffies64()`. A listener of our own guarantees there is a record.
pub fn calibrate_hz(ebpf: &mut aya::Ebpf) -> anyhow::Result<u32> {
    let _socket =
        std::net::TcpListener::bind("127.0.0.1:0").context("opening a calibration socket")?;
    let own = netns::Netns {
        inode: 0,
        path: "/proc/self/ns/net".into(),
    };
    let mut sample = || -> anyhow::Result<(u64, u64)> {
        let mut jiffies = None;
        iter::scan(ebpf, &own, |records| {
            jiffies = records.iter().map(|r| r.jiffies).chain(jiffies).max();
        })?;
        let jiffies = jiffies.context("no socket in our namespace")?;
        Ok((jiffies, monotonic_ns()))
    };
    let first = sample()?;
    std::thread::sleep(Duration::from_millis(250));
    let second = sample()?;
    Ok(hz::from_samples(first, second)?)
}

/// Probes in flight whose socket is gone and whose ACK never came: the
/// kernel removes a flow's entry at close, but a socket that closes through
/// TIME-WAIT has already released its port, so its key no longer matches.
/// Older than a minute and not a live socket: dropped here, so the map
/// cannot fill up with the dead over days.
pub fn expire_in_flight(map: &mut BpfHashMap<MapData, FlowKey, ProbeInFlight>, state: &Shared) {
    const MAX_AGE_NS: u64 = 60_000_000_000;
    let now = monotonic_ns();
    let stale: Vec<FlowKey> = {
        let Ok(s) = state.lock() else { return };
        map.iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                now.saturating_sub(v.sent_ns) > MAX_AGE_NS && !s.table.is_live(v.cookie)
            })
            .map(|(k, _)| k)
            .collect()
    };
    for key in &stale {
        let _ = map.remove(key);
    }
    if !stale.is_empty() {
        log::debug!(
            "expired {} unanswered probes of closed sockets",
            stale.len()
        );
    }
}

/// Reads every namespace's keepalive sysctls; changes become events.
pub fn refresh_sysctls(watch: &mut sysctl::SysctlWatch, state: &Shared, sink: Option<&Sink>) {
    let changes = tokio::task::block_in_place(|| watch.poll());
    let current = watch.current().clone();
    if let Ok(mut s) = state.lock() {
        s.sysctls = current.into_iter().collect();
    }
    let Some(sink) = sink else { return };
    let mut out = std::io::stdout().lock();
    for c in changes {
        info!(
            "netns {}: net.ipv4.{} changed {} -> {}",
            c.netns, c.name, c.old, c.new
        );
        let mut record = Record::new(RecordKind::SysctlChanged, sink.clock.now(), 0);
        record.netns = Some(c.netns as u32);
        record.sysctl = Some(c.name.to_string());
        record.old_value = Some(c.old);
        record.new_value = Some(c.new);
        if let Err(e) = sink.emit(record, &mut out) {
            warn!("{e:#}");
        }
    }
    let _ = std::io::Write::flush(&mut out);
}
