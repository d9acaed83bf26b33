//! The `run` command: resolve offsets, load and attach, take the first
//! inventory, serve the HTTP API, then follow the ring buffer until
//! SIGINT/SIGTERM, rescanning namespaces (TC classifiers) and sockets
//! (inventory, sysctls, owners) periodically. Dropping the loaded object
//! detaches every hook.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write as _},
    sync::{Arc, Mutex, atomic::AtomicUsize},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use keepalive_common::{FlowKey, ProbeInFlight};
use log::{info, warn};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind, sync::broadcast};

use crate::{
    btf::Btf,
    cli::RunArgs,
    counters::{CounterReader, KernelCounters},
    events::{self, Clock, Record},
    http, hz, loader,
    metrics::Metrics,
    netns, offsets, output, owners, serve, socket_iter,
    sockets::{Owner, SocketTable},
    state::{AgentState, Shared},
    sysctl,
    tc::{InterfaceFilter, TcAttacher},
};

/// The first line on stdout once every hook is attached.
#[derive(Serialize)]
struct Ready<'a> {
    event: &'static str,
    hooks: &'a [loader::HookStatus],
    interfaces: Vec<String>,
    listen: String,
    sockets: usize,
    hz: u32,
    startup_ms: u128,
}

/// The last line on stdout: the kernel's exact counters.
#[derive(Serialize)]
struct Stopped {
    event: &'static str,
    counters: KernelCounters,
    sockets_refused: u64,
}

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    bound_allocator_retention();
    crate::caps::check().context("the agent cannot run with these privileges")?;
    bump_memlock_rlimit();
    let config = {
        // Tens of MiB parsed: gone before the agent settles in.
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        offsets::resolve(&btf).context("resolving kernel offsets")?
    };
    log::debug!("kernel offsets and addresses: {config:x?}");
    // capset changes the calling thread only: drop what start-up needed
    // (kallsyms, memlock) while this is the only thread, so every thread
    // started later inherits the smaller set.
    match crate::caps::drop_start_only() {
        Ok(dropped) if !dropped.is_empty() => {
            info!(
                "dropped capabilities no longer needed: {}",
                dropped.join(", ")
            )
        }
        Ok(_) => {}
        Err(e) => warn!("{e}"),
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(args, config, started))
}

async fn run(
    args: RunArgs,
    config: keepalive_common::KernelConfig,
    started: Instant,
) -> anyhow::Result<()> {
    // Before anything is attached: a SIGTERM during start-up (or right
    // after `ready`) must still end in a clean detach, not the default
    // action that leaves netlink filters behind.
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let hz = hz::detect();
    let opts = loader::LoadOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_sockets: args.max_sockets,
        timer_mode: args.timer_mode,
    };
    let loader::Loaded {
        mut ebpf,
        mut hooks,
        iterator,
    } = loader::load(&config, &opts).context("loading the kernel programs")?;
    if let Some(h) = hooks.iter().find(|h| h.mode == loader::WIRE_MODE)
        && args.no_tc
    {
        anyhow::bail!(
            "no way left to count probes: {} and --no-tc disables the classifiers",
            h.note.as_deref().unwrap_or("the timer hooks are off")
        );
    }
    for h in &hooks {
        match (&h.note, h.live) {
            (Some(note), true) => info!("hook {} live via {} ({note})", h.hook, h.mode),
            (None, true) => info!("hook {} live via {}", h.hook, h.mode),
            (Some(note), false) => warn!("hook {} not attached: {note}", h.hook),
            (None, false) => warn!("hook {} not attached", h.hook),
        }
    }

    let filter = InterfaceFilter(args.interfaces.clone());
    let mut tc = TcAttacher::default();
    if args.no_tc {
        hooks.push(loader::HookStatus {
            hook: "tc",
            mode: "none".into(),
            live: false,
            note: Some("disabled by --no-tc".into()),
        });
    } else {
        let report = tc.sync(&mut ebpf, &filter);
        info!(
            "tc: classifiers on {} interfaces ({} failed)",
            report.total, report.failed
        );
        hooks.push(loader::HookStatus {
            hook: "tc",
            mode: crate::tc::mode().into(),
            live: report.total > 0,
            note: (report.failed > 0).then(|| format!("{} interfaces failed", report.failed)),
        });
    }
    let inventory_hook = match iterator {
        Ok(()) => loader::HookStatus {
            hook: "socket_inventory",
            mode: "iter".into(),
            live: true,
            note: None,
        },
        Err(e) => {
            warn!("socket inventory unavailable, sockets appear as events arrive: {e}");
            loader::HookStatus {
                hook: "socket_inventory",
                mode: "iter".into(),
                live: false,
                note: Some(e.to_string()),
            }
        }
    };
    let inventory_live = inventory_hook.live;
    hooks.push(inventory_hook);
    let hz = match hz {
        Ok(hz) => hz,
        // Containers often hide /proc/timer_list and /boot: measure with
        // the kernel's own jiffies through the socket iterator instead.
        Err(e) if inventory_live => {
            let hz =
                tokio::task::block_in_place(|| calibrate_hz(&mut ebpf)).with_context(|| {
                    format!("{e}; measuring through the socket iterator failed too")
                })?;
            info!("kernel HZ measured through the socket iterator: {hz}");
            hz
        }
        Err(e) => return Err(e.into()),
    };

    let mut in_flight: BpfHashMap<MapData, FlowKey, ProbeInFlight> = BpfHashMap::try_from(
        ebpf.take_map("IN_FLIGHT")
            .context("map IN_FLIGHT missing from the eBPF object")?,
    )?;
    let ring = ebpf
        .take_map("EVENTS")
        .context("map EVENTS missing from the eBPF object")?;
    let ring = RingBuf::try_from(ring)?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for
    // as long as the AsyncFd holds it.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;

    let clock = Clock::new(hz);
    let state: Shared = Arc::new(Mutex::new(AgentState {
        table: SocketTable::new(args.max_sockets as usize),
        sysctls: BTreeMap::new(),
        hooks: hooks.clone(),
        kernel: KernelCounters::default(),
        kernel_counters: CounterReader::new(&mut ebpf)?,
        rules: args.idle_timeouts.clone(),
        metrics: Metrics::new(args.max_port_labels as usize),
        tc_interfaces: tc.attached_count(),
    }));
    let mut sysctl_watch = sysctl::SysctlWatch::new();
    if inventory_live {
        tokio::task::block_in_place(|| inventory(&mut ebpf, &state, &clock));
    }
    refresh_sysctls(&mut sysctl_watch, &state, None);

    let (events_tx, _) = broadcast::channel::<Arc<Record>>(4096);
    let api = http::Api {
        state: state.clone(),
        events: events_tx.clone(),
        clients: Arc::new(AtomicUsize::new(0)),
        max_clients: args.max_event_clients as usize,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let listen = listener
        .local_addr()
        .context("reading the HTTP API's address")?;
    info!("HTTP API on http://{listen}");
    let stalls = state.clone();
    let on_stall = Arc::new(move || {
        if let Ok(s) = stalls.lock() {
            s.metrics.clients_dropped.inc();
        }
    });
    tokio::spawn(serve::serve(listener, http::router(api), on_stall));

    let ready = Ready {
        event: "ready",
        hooks: &hooks,
        interfaces: tc.interfaces(),
        listen: listen.to_string(),
        sockets: state.lock().map(|s| s.table.len()).unwrap_or(0),
        hz,
        startup_ms: started.elapsed().as_millis(),
    };
    print_line(&ready)?;
    info!("ready in {} ms", started.elapsed().as_millis());
    // Loading parsed the kernel's BTF (tens of MiB, freed by now).
    release_freed_memory();

    let mut rescan = tokio::time::interval(Duration::from_secs(args.rescan_seconds));
    rescan.tick().await;
    let mut inventory_tick = tokio::time::interval(Duration::from_secs(args.inventory_seconds));
    inventory_tick.tick().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let mut lost_reported = 0u64;
    let sink = Sink {
        state: state.clone(),
        clock,
        print: Printing {
            quiet: args.quiet,
            json: args.json,
            all_events: args.all_events,
        },
        events: events_tx.clone(),
    };
    // The ring buffer has a task of its own: the periodic work below
    // (inventories of 100k sockets, namespace rescans) blocks for tenths of
    // a second, which at tens of thousands of events per second would
    // overflow the ring if the same loop drained it.
    let (stop_reader, reader_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut reader = tokio::spawn(read_ring(ring, sink.clone(), reader_stopped));
    loop {
        tokio::select! {
            done = &mut reader => {
                // The reader only returns early on an error.
                done.context("the ring buffer reader panicked")??;
                anyhow::bail!("the ring buffer reader stopped");
            }
            _ = rescan.tick(), if !args.no_tc => {
                let report = tokio::task::block_in_place(|| tc.sync(&mut ebpf, &filter));
                if report.attached + report.detached > 0 {
                    info!("tc: +{} -{} interfaces, {} attached", report.attached, report.detached, report.total);
                }
                if let Ok(mut s) = state.lock() {
                    s.tc_interfaces = report.total;
                }
            }
            _ = inventory_tick.tick() => {
                if inventory_live {
                    tokio::task::block_in_place(|| inventory(&mut ebpf, &state, &clock));
                }
                expire_in_flight(&mut in_flight, &state);
                refresh_sysctls(&mut sysctl_watch, &state, Some(&sink));
            }
            _ = health.tick() => {
                let c = lock(&state)?.refresh_kernel().context("reading kernel counters")?;
                if c.events_lost > lost_reported {
                    warn!("ring buffer full: {} events lost so far (kernel counters stay exact)", c.events_lost);
                    lost_reported = c.events_lost;
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    // The reader drains what is left, then ends.
    let _ = stop_reader.send(());
    reader.await.context("the ring buffer reader panicked")??;
    let (counters, sockets_refused) = {
        let mut s = lock(&state)?;
        let counters = s.refresh_kernel().context("reading kernel counters")?;
        (counters, s.table.refused)
    };
    let stopped = Stopped {
        event: "stopped",
        counters,
        sockets_refused,
    };
    print_line(&stopped)?;
    tc.clear();
    info!("stopped; all hooks detached");
    Ok(())
}

fn lock(state: &Shared) -> anyhow::Result<std::sync::MutexGuard<'_, AgentState>> {
    state
        .lock()
        .map_err(|_| anyhow::anyhow!("agent state poisoned"))
}

/// One JSON line on stdout, flushed.
fn print_line(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush().context("writing to stdout")
}

/// Follows the ring buffer until `stop`, then drains what is left.
async fn read_ring(
    mut ring: AsyncFd<RingBuf<MapData>>,
    sink: Sink,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                sink.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = &mut stop => break,
        }
    }
    sink.drain(ring.get_mut())
}

/// What goes to stdout.
#[derive(Clone, Copy)]
struct Printing {
    quiet: bool,
    json: bool,
    all_events: bool,
}

/// Where records go: the table and metrics, `/events` subscribers, stdout.
#[derive(Clone)]
struct Sink {
    state: Shared,
    clock: Clock,
    print: Printing,
    events: broadcast::Sender<Arc<Record>>,
}

/// Records decoded per hold of the state lock: bounds the batch's memory
/// and how long an HTTP request waits for the lock during a burst.
const BATCH: usize = 1024;

impl Sink {
    fn drain(&self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let mut records = Vec::with_capacity(BATCH);
        loop {
            {
                let mut state = lock(&self.state)?;
                while records.len() < BATCH {
                    let Some(item) = ring.next() else { break };
                    let Some(ev) = events::decode(&item) else {
                        warn!("short ring buffer record ({} bytes)", item.len());
                        continue;
                    };
                    for ev in events::unfold(ev) {
                        if let Some(record) = events::to_record(&ev, &mut state.table, &self.clock)
                        {
                            state.count(&record);
                            records.push(record);
                        }
                    }
                }
            }
            let more = records.len() >= BATCH;
            for record in records.drain(..) {
                self.emit(record, &mut out)?;
            }
            if !more {
                break;
            }
        }
        out.flush().context("writing to stdout")?;
        Ok(())
    }

    fn emit(&self, record: Record, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        if !self.print.quiet && should_print(&record, self.print) {
            output::write(out, &record, self.print.json).context("writing to stdout")?;
        }
        // No subscriber is not an error.
        let _ = self.events.send(Arc::new(record));
        Ok(())
    }
}

/// State changes are the bulk of events on a busy node; by default only a
/// close of a socket that had keepalive activity is printed.
fn should_print(r: &Record, args: Printing) -> bool {
    match r.event {
        "state_change" => args.all_events,
        "socket_closed" => args.all_events || r.probes.unwrap_or(0) > 0,
        _ => true,
    }
}

/// Every namespace's sockets, their exact kernel counters, and owners for
/// sockets whose connect we did not see.
fn inventory(ebpf: &mut aya::Ebpf, state: &Shared, clock: &Clock) {
    let started = Instant::now();
    let Ok(mut s) = state.lock() else { return };
    s.table.begin_inventory();
    drop(s);
    let (mut total, mut namespaces) = (0, 0);
    for ns in netns::all() {
        // The lock is taken per chunk: the ring buffer's reader needs it too.
        let scanned = socket_iter::scan(ebpf, &ns, |records| {
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
    let Ok(s) = state.lock() else { return };
    let wanted = s.table.ownerless_inodes();
    drop(s);
    let found = owners::resolve(&wanted);
    let found: std::collections::HashMap<u64, Owner> = found
        .into_iter()
        .map(|(inode, o)| {
            (
                inode,
                Owner {
                    pid: o.pid,
                    comm: o.comm,
                    cgroup_id: 0,
                    cgroup: Some(o.cgroup).filter(|c| !c.is_empty()),
                    container_id: o.container_id,
                },
            )
        })
        .collect();
    let owners_found = found.len();
    if let Ok(mut s) = state.lock() {
        s.table.set_owners_by_inode(found);
    }
    // The scan's buffers were as large as the node's socket count.
    release_freed_memory();
    log::debug!(
        "inventory: {total} sockets in {namespaces} namespaces, {} owners found, {} ms",
        owners_found,
        started.elapsed().as_millis()
    );
}

/// Large buffers (a ring-buffer batch, an inventory, a `/sockets` reply)
/// come and go with the node's socket count. glibc raises its mmap
/// threshold after the first such buffer is freed and from then on serves
/// them from the heap, which it keeps: a fixed threshold hands every large
/// buffer back to the kernel when it is freed.
fn bound_allocator_retention() {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
}

/// Hands memory freed after a large, passing allocation back to the
/// kernel: glibc keeps it otherwise, and the agent's RSS would stay at its
/// start-up and inventory peaks.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Two inventories of our own namespace 250 ms apart: each record carries
/// `bpf_jiffies64()`. A listener of our own guarantees there is a record.
fn calibrate_hz(ebpf: &mut aya::Ebpf) -> anyhow::Result<u32> {
    let _socket =
        std::net::TcpListener::bind("127.0.0.1:0").context("opening a calibration socket")?;
    let own = netns::Netns {
        inode: 0,
        path: "/proc/self/ns/net".into(),
    };
    let mut sample = || -> anyhow::Result<(u64, u64)> {
        let mut jiffies = None;
        socket_iter::scan(ebpf, &own, |records| {
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
fn expire_in_flight(map: &mut BpfHashMap<MapData, FlowKey, ProbeInFlight>, state: &Shared) {
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
fn refresh_sysctls(watch: &mut sysctl::SysctlWatch, state: &Shared, sink: Option<&Sink>) {
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
        let record = Record {
            time: sink.clock.wall_seconds(monotonic_ns()),
            event: "sysctl_changed",
            netns: Some(c.netns as u32),
            sysctl: Some(c.name.to_string()),
            old_value: Some(c.old),
            new_value: Some(c.new),
            ..Default::default()
        };
        if let Err(e) = sink.emit(record, &mut out) {
            warn!("{e:#}");
        }
    }
    let _ = out.flush();
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn bump_memlock_rlimit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
