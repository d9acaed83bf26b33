//! Which program owns each socket, recognised on a thread of its own: it
//! reads other processes' `/proc` files and executables, any of which can
//! hang (a binary on a stalled FUSE or NFS mount, a process whose memory
//! map is locked). The inventory only starts a round, never waits for
//! one; a round still running at the next inventory is left to finish,
//! and one that runs past [`DEADLINE`] is logged once and counted as a
//! failed scan (`keepalive_agent_scan_success{scan="programs"}` 0).

use std::{
    collections::HashSet,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use log::warn;

use crate::{
    api::{metrics::agent::Scan, state::Shared},
    host::program,
    model::clock::monotonic_ns,
};

/// How long a round may take before it is called stuck.
const DEADLINE: Duration = Duration::from_secs(5);

static RUNNING: AtomicBool = AtomicBool::new(false);
/// When the running round started (monotonic ns).
static STARTED_NS: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Starts a round for the table's owners unless one is running.
pub fn start(state: &Shared) {
    if RUNNING.swap(true, Ordering::AcqRel) {
        let running =
            Duration::from_nanos(monotonic_ns().saturating_sub(STARTED_NS.load(Ordering::Acquire)));
        if running > DEADLINE && !WARNED.swap(true, Ordering::AcqRel) {
            warn!(
                "programs: recognition has run for {} s: a process's /proc files or executable do not answer (a hung FUSE or NFS mount?); sockets keep the programs known so far",
                running.as_secs()
            );
            if let Ok(s) = state.lock() {
                s.metrics.agent.scanned(Scan::Programs, false, running);
            }
        }
        return;
    }
    STARTED_NS.store(monotonic_ns(), Ordering::Release);
    let state = state.clone();
    let spawned = std::thread::Builder::new()
        .name("recognize".into())
        .spawn(move || {
            let started = Instant::now();
            round(&state);
            if let Ok(s) = state.lock() {
                s.metrics
                    .agent
                    .scanned(Scan::Programs, true, started.elapsed());
            }
            WARNED.store(false, Ordering::Release);
            RUNNING.store(false, Ordering::Release);
        });
    if let Err(e) = spawned {
        warn!("programs: no thread to recognise them on: {e}");
        RUNNING.store(false, Ordering::Release);
    }
}

/// The programs of new owners (and of reused pids), recognised outside
/// the lock: reading a binary's headers takes longer than an ACK may wait.
fn round(state: &Shared) {
    let (owners, known) = match state.lock() {
        Ok(s) => (
            s.table.owners().map(|o| o.pid).collect::<HashSet<u32>>(),
            s.naming.programs.start_times(),
        ),
        Err(_) => return,
    };
    let found = program::recognize_changed(&owners, &known);
    if let Ok(mut s) = state.lock() {
        s.naming.programs.update(found, &owners);
    }
}
