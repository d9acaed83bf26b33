//! The agent's periodic work between events: socket inventories (every
//! socket, its exact counters, owners found through `/proc`), namespace
//! sysctls and their changes, and the expiry of probes whose ACK never
//! came; plus the HZ calibration start-up falls back to.

use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData};
use keepalive_api::Hook;
use keepalive_api::{Record, RecordKind};
use keepalive_common::{ClosedCounts, FlowKey, ProbeInFlight};
use log::{info, warn};

use super::{attach::Attached, ring::Sink};
use crate::{
    api::{metrics::Scan, state::Shared},
    bpf::iter,
    host::{
        netns::{self, NetnsError},
        owners, process, sysctl,
    },
    kernel::hz,
    model::clock::{Clock, monotonic_ns},
    table::Credit,
};

/// The TC classifiers follow the node's namespaces and interfaces; the tc
/// hook's status (for `/healthz` and `hook_up`) follows what is attached
/// now. A scan that cannot list the namespaces changes nothing.
pub fn tc(attached: &mut Attached, state: &Shared) {
    let started = std::time::Instant::now();
    let synced = attached.tc.sync(&mut attached.ebpf, &attached.filter);
    let Ok(mut s) = state.lock() else { return };
    s.metrics
        .agent
        .scanned(Scan::Tc, synced.is_ok(), started.elapsed());
    let report = match synced {
        Ok(report) => report,
        Err(e) => {
            warn!("tc: namespaces not scanned, classifiers kept as they are: {e}");
            return;
        }
    };
    if report.attached + report.detached > 0 {
        info!(
            "tc: +{} -{} interfaces, {} attached{}",
            report.attached,
            report.detached,
            report.total,
            report.left().map(|l| format!("; {l}")).unwrap_or_default()
        );
    }
    s.metrics
        .agent
        .refused("tc_interface", report.newly_refused as u64);
    s.tc_interfaces = report.total;
    if let Some(hook) = s.hooks.iter_mut().find(|h| h.hook == Hook::Tc) {
        hook.live = report.total > 0;
        hook.note = report.left();
    }
}

/// An inventory, its outcome counted and logged; and the final counts of
/// sockets whose close event was lost, credited.
pub fn inventory(attached: &mut Attached, state: &Shared, clock: &Clock) {
    credit_lost_closes(&mut attached.closed, state);
    if !attached.inventory_live {
        return;
    }
    let started = std::time::Instant::now();
    let scanned = scan_sockets(&mut attached.ebpf, state, clock);
    if let Err(e) = &scanned {
        warn!("socket inventory skipped, the table kept as it is: {e}");
    }
    if let Ok(s) = state.lock() {
        s.metrics
            .agent
            .scanned(Scan::Inventory, scanned.is_ok(), started.elapsed());
    }
}

/// Every namespace's sockets, their exact kernel counters, and owners for
/// sockets whose connect we did not see.
fn scan_sockets(ebpf: &mut aya::Ebpf, state: &Shared, clock: &Clock) -> Result<(), NetnsError> {
    let started = std::time::Instant::now();
    // Unlistable namespaces end the pass before it starts: no socket is
    // taken for gone.
    let all = netns::all()?;
    let Ok(mut s) = state.lock() else {
        return Ok(());
    };
    s.table.begin_inventory();
    drop(s);
    let (mut total, mut namespaces, mut errors) = (0, 0, Vec::new());
    for ns in all {
        // The lock is taken per chunk: the ring buffer's reader needs it too.
        let scanned = iter::scan(ebpf, &ns, |records| {
            if let Ok(mut s) = state.lock() {
                let learned = s.table.apply_inventory(records, clock);
                for credit in learned.credits {
                    s.credit(credit);
                }
                s.survived(&learned.survived);
            }
        });
        match scanned {
            Ok(n) => {
                total += n;
                namespaces += 1;
                if let Ok(mut s) = state.lock() {
                    let unseen = s.table.end_inventory_of(ns.inode as u32);
                    s.metrics.agent.gone_unseen.inc_by(unseen as u64);
                }
            }
            Err(e) => {
                log::debug!("{e}");
                errors.push(e);
            }
        }
    }
    if let Ok(s) = state.lock() {
        let errors = errors
            .iter()
            .map(|e| e as &(dyn std::error::Error + 'static));
        s.metrics
            .agent
            .namespaces_read(Scan::Inventory, namespaces, errors);
    }
    let wanted: HashSet<u64> = match state.lock() {
        Ok(s) => s.table.ownerless_inodes(),
        Err(_) => return Ok(()),
    };
    let found = owners::resolve(&wanted);
    let owners_found = found.len();
    let mut unfindable = (0, 0);
    if let Ok(mut s) = state.lock() {
        s.table.set_owners_by_inode(found, &wanted);
        unfindable = s.table.unfindable_owners();
    }
    names(state);
    // The scan's buffers were as large as the node's socket count.
    process::release_freed_memory();
    log::debug!(
        "inventory: {total} sockets in {namespaces} namespaces, owners of {owners_found} of {} \
         found ({} none holds, looked for again after {} inventories), {} ms",
        wanted.len(),
        unfindable.0,
        unfindable.1,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Who each namespace and container is: the namespaces' owners (a pod's
/// sandbox), containers asked about (new ones) or forgotten (gone), the
/// programs recognized. At every inventory and every sysctl read (a new
/// pod is named within `--inventory-seconds`, however rare inventories).
pub fn names(state: &Shared) {
    let Ok(all) = netns::all() else { return };
    let netns_owners = owners::netns_owners(&all);
    if let Ok(mut s) = state.lock() {
        let s = &mut *s;
        s.naming.netns_owners = netns_owners;
        // Containers no socket or namespace refers to are gone; new ones
        // are asked about.
        s.naming.refresh(s.table.owners());
        s.names_changed();
    }
    super::recognize::start(state);
}

/// Two inventories of our own namespace 250 ms apart: each record carries
/// `bpf_jiffies64()`. A listener of our own guarantees there is a record.
pub fn calibrate_hz(ebpf: &mut aya::Ebpf) -> anyhow::Result<u32> {
    let _socket =
        std::net::TcpListener::bind("127.0.0.1:0").context("opening a calibration socket")?;
    let own = netns::Netns {
        inode: 0,
        path: "/proc/self/ns/net".into(),
        first_pid: None,
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

/// Sockets that closed while the ring buffer was full: the kernel kept
/// their final counts (`CLOSED`); they are credited once, then removed.
/// Empty unless events were lost: one lookup.
fn credit_lost_closes(map: &mut BpfHashMap<MapData, u64, ClosedCounts>, state: &Shared) {
    let closed: Vec<(u64, ClosedCounts)> = map.iter().filter_map(Result::ok).collect();
    if closed.is_empty() {
        return;
    }
    let Ok(mut s) = state.lock() else { return };
    for (cookie, c) in &closed {
        let credit = s
            .table
            .credit(*cookie, Some(c.probes), Some(c.acks))
            .unwrap_or_else(|| {
                // The table never knew it: the whole count, by the tuple
                // the kernel read at close.
                let (local, remote) = crate::model::addr::endpoints(&c.tuple);
                Credit {
                    netns: Some(c.tuple.netns),
                    owner: None,
                    local: Some(local),
                    remote: Some(remote),
                    probes: c.probes,
                    acks: c.acks,
                }
            });
        s.credit(credit);
        s.table.close(*cookie);
    }
    drop(s);
    for (cookie, _) in &closed {
        let _ = map.remove(cookie);
    }
    log::debug!(
        "credited {} sockets whose close event was lost",
        closed.len()
    );
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

/// The sysctls read, their outcome counted and logged.
pub fn sysctls(watch: &mut sysctl::SysctlWatch, state: &Shared, sink: Option<&Sink>) {
    let started = std::time::Instant::now();
    let read = refresh_sysctls(watch, state, sink);
    if let Err(e) = &read {
        warn!("keepalive sysctls not read, the last readings kept: {e}");
    }
    if let Ok(s) = state.lock() {
        s.metrics
            .agent
            .scanned(Scan::Sysctl, read.is_ok(), started.elapsed());
    }
}

/// Reads every namespace's keepalive sysctls; changes become events.
/// Unlistable namespaces keep the last readings.
fn refresh_sysctls(
    watch: &mut sysctl::SysctlWatch,
    state: &Shared,
    sink: Option<&Sink>,
) -> Result<(), NetnsError> {
    let polled = tokio::task::block_in_place(|| watch.poll())?;
    let current = watch.current().clone();
    if let Ok(mut s) = state.lock() {
        s.set_sysctls(current.into_iter().collect());
        // Bounds too old to trust are forgotten at the same pace.
        s.paths.expire(monotonic_ns());
        for netns in &polled.gone {
            s.metrics.forget_netns(*netns as u32);
        }
        let errors = polled
            .errors
            .iter()
            .map(|e| e as &(dyn std::error::Error + 'static));
        s.metrics
            .agent
            .namespaces_read(Scan::Sysctl, polled.read, errors);
    }
    let changes = polled.changes;
    let Some(sink) = sink else { return Ok(()) };
    for c in changes {
        info!(
            "netns {}: {} changed {} -> {}",
            c.netns, c.name, c.old, c.new
        );
        let mut record = Record::new(RecordKind::SysctlChanged, sink.clock.now(), 0);
        record.netns = Some(c.netns as u32);
        record.sysctl = Some(c.name.to_string());
        record.old_value = Some(c.old);
        record.new_value = Some(c.new);
        sink.emit(record);
    }
    Ok(())
}
