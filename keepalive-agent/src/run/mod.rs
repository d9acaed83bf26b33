//! The `run` command, as named phases: [`prepare`] (privileges, kernel
//! offsets) on the only thread, then on the runtime [`attach`] (load and
//! attach every hook), [`build_state`] (the socket table, first inventory
//! and sysctls), [`serve`](serve::serve) (the HTTP API), [`follow`] (the ring buffer's
//! reader and the periodic work, until SIGINT/SIGTERM/SIGHUP) and [`shutdown`]
//! (drain, print the kernel's counters, detach). Dropping the loaded
//! object detaches every hook.

mod attach;
mod identity;
mod periodic;
mod recognize;
mod ring;
mod serve;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use attach::{Attached, Ring, attach};
use keepalive_api::{Line, Ready, Record, Stopped};
use keepalive_common::KernelConfig;
use log::{info, warn};
use ring::{Printing, Sink, read_ring};
use serve::{Listeners, serve};
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::broadcast,
};

use crate::{
    api::{
        metrics::{Metrics, MetricsConfig},
        naming::Naming,
        state::{AgentState, Shared},
    },
    bpf::counters::CounterReader,
    cli::args::RunArgs,
    host::{caps, outlet, process, sysctl::SysctlWatch},
    kernel::{btf::Btf, offsets},
    model::{clock::Clock, idle_close::CostLedger, paths::PathBook},
    table::SocketTable,
};

pub fn main(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before the kernel is touched: a busy or foreign address is a usage
    // error (exit 2), not a failure after every program was loaded.
    let listeners = Listeners::bind(&args)?;
    let nofile = process::raise_nofile_limit();
    let config = prepare()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(args, listeners, nofile, config, started))
}

/// Privileges and kernel offsets, while this is the only thread.
fn prepare() -> anyhow::Result<KernelConfig> {
    process::bound_allocator_retention();
    caps::check().context("the agent cannot run with these privileges")?;
    process::bump_memlock_rlimit();
    let config = {
        // Tens of MiB parsed: gone before the agent settles in.
        let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
        offsets::resolve(&btf).context("resolving kernel offsets")?
    };
    log::debug!("kernel offsets and addresses: {config:x?}");
    // capset changes the calling thread only: drop what start-up needed
    // (kallsyms, memlock) while this is the only thread, so every thread
    // started later inherits the smaller set.
    match caps::drop_start_only() {
        Ok(dropped) if !dropped.is_empty() => {
            info!(
                "dropped capabilities no longer needed: {}",
                dropped.join(", ")
            )
        }
        Ok(_) => {}
        Err(e) => warn!("{e}"),
    }
    Ok(config)
}

/// SIGTERM, SIGINT and SIGHUP, caught before anything is attached: a
/// signal during start-up (or right after `ready`) must still end in a
/// clean detach, not the default action that leaves netlink filters
/// behind. SIGHUP stops the agent as SIGTERM does: its configuration is
/// flags and environment, so there is nothing to reload.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn catch() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            _ = self.hup.recv() => info!("SIGHUP: stopping (nothing to reload: the configuration is flags and environment)"),
        }
    }
}

async fn run(
    args: RunArgs,
    listeners: Listeners,
    nofile: u64,
    config: KernelConfig,
    started: Instant,
) -> anyhow::Result<()> {
    let mut signals = Signals::catch()?;
    let (mut attached, ring) = tokio::task::block_in_place(|| attach(&args, &config, nofile))?;
    let clock = Clock::new(attached.hz);
    let (state, sysctl_watch) = build_state(&args, &mut attached, &clock)?;
    let (events, _) = broadcast::channel::<Arc<Record>>(4096);
    let served = serve(&args, listeners, nofile, &state, &events)?;
    let ready = Ready {
        hooks: attached.hooks.clone(),
        interfaces: attached.tc.interfaces(),
        listen: served.listen.to_string(),
        local_listen: served.local.map(|a| a.to_string()),
        scheme: served.scheme,
        sockets: lock(&state)?.table.len(),
        hz: attached.hz,
        startup_ms: started.elapsed().as_millis() as u64,
    };
    print_line(Line::ready_json(&ready)?);
    info!("ready in {} ms", started.elapsed().as_millis());
    // Loading parsed the kernel's BTF (tens of MiB, freed by now).
    process::release_freed_memory();
    let sink = Sink {
        state: state.clone(),
        clock,
        print: Printing {
            quiet: args.quiet,
            json: args.json,
            all_events: args.all_events,
            idle_gap_min_s: args.idle_gap_seconds,
        },
        events,
    };
    follow(&args, &mut attached, ring, sink, sysctl_watch, &mut signals).await?;
    shutdown(attached, &state)
}

/// The socket table with its first inventory, and the namespaces' sysctls
/// (the watch that read them notices their changes from then on).
fn build_state(
    args: &RunArgs,
    attached: &mut Attached,
    clock: &Clock,
) -> anyhow::Result<(Shared, SysctlWatch)> {
    let (directory, resolver) = identity::start(args);
    let mut table = SocketTable::new(args.max_sockets as usize);
    table.idle_gap_min_s = args.idle_gap_seconds;
    let state: Shared = Arc::new(Mutex::new(AgentState {
        table,
        sysctls: BTreeMap::new(),
        hooks: attached.hooks.clone(),
        kernel: Default::default(),
        kernel_counters: CounterReader::new(&mut attached.ebpf)?,
        rules: args.idle_timeouts.clone(),
        metrics: Metrics::new(MetricsConfig {
            max_port_labels: args.max_port_labels as usize,
            max_workloads: args.max_workloads as usize,
            netns_label: args.netns_label,
            node: args.node_name.clone().unwrap_or_default(),
        }),
        tc_interfaces: attached.tc.attached_count(),
        paths: PathBook::new(args.max_paths as usize, args.path_memory_seconds),
        costs: CostLedger::new(args.path_memory_seconds),
        conntrack: Default::default(),
        naming: Naming::new(directory),
    }));
    if let Some(resolver) = resolver {
        tokio::spawn(resolver.run(state.clone()));
    }
    tokio::task::block_in_place(|| periodic::inventory(attached, &state, clock));
    let mut watch = SysctlWatch::new();
    periodic::sysctls(&mut watch, &state, None);
    Ok((state, watch))
}

/// Follows the ring buffer and does the periodic work until a signal.
/// The ring buffer has a task of its own: the periodic work (inventories
/// of 100k sockets, namespace rescans) blocks for tenths of a second,
/// which at tens of thousands of events per second would overflow the
/// ring if the same loop drained it.
async fn follow(
    args: &RunArgs,
    attached: &mut Attached,
    ring: Ring,
    sink: Sink,
    mut sysctl_watch: SysctlWatch,
    signals: &mut Signals,
) -> anyhow::Result<()> {
    let state = sink.state.clone();
    let clock = sink.clock;
    let mut rescan = tokio::time::interval(Duration::from_secs(args.rescan_seconds));
    rescan.tick().await;
    let inventory_every = args.inventory_period(attached.options_followed);
    info!(
        "socket inventory every {} s{}",
        inventory_every.as_secs(),
        if attached.options_followed {
            " (reconciliation: option changes come from the setsockopt hook)"
        } else {
            ""
        }
    );
    let mut inventory_tick = tokio::time::interval(inventory_every);
    inventory_tick.tick().await;
    let mut sysctl_tick = tokio::time::interval(args.sysctl_period());
    sysctl_tick.tick().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let mut lost_reported = 0u64;
    // Lost events not yet made good by an inventory, and when the last
    // such inventory ran.
    let mut lost_unreconciled = false;
    let mut reconciled: Option<Instant> = None;
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
                tokio::task::block_in_place(|| periodic::tc(attached, &state));
            }
            _ = inventory_tick.tick() => {
                tokio::task::block_in_place(|| periodic::inventory(attached, &state, &clock));
            }
            _ = sysctl_tick.tick() => {
                periodic::expire_in_flight(&mut attached.in_flight, &state);
                periodic::sysctls(&mut sysctl_watch, &state, Some(&sink));
                tokio::task::block_in_place(|| periodic::names(&state));
            }
            _ = health.tick() => {
                let c = lock(&state)?.refresh_kernel().context("reading kernel counters")?;
                if c.events_lost > lost_reported {
                    warn!("ring buffer full: {} events lost so far (kernel counters stay exact)", c.events_lost);
                    lost_reported = c.events_lost;
                    lost_unreconciled = true;
                }
                // Opens, closes or option changes may be among the lost:
                // an inventory sets the table right, at once, and at most
                // as often as without the setsockopt hook.
                if lost_unreconciled && reconciled.is_none_or(|t| t.elapsed() >= args.sysctl_period()) {
                    inventory_tick.reset_immediately();
                    reconciled = Some(Instant::now());
                    lost_unreconciled = false;
                }
            }
            _ = signals.stop() => break,
        }
    }
    // The reader drains what is left, then ends.
    let _ = stop_reader.send(());
    reader.await.context("the ring buffer reader panicked")?
}

/// The kernel's exact counters on stdout, then every hook detached.
fn shutdown(mut attached: Attached, state: &Shared) -> anyhow::Result<()> {
    let stopped = {
        let mut s = lock(state)?;
        Stopped {
            counters: s.refresh_kernel().context("reading kernel counters")?,
            sockets_refused: s.table.refused,
        }
    };
    print_line(Line::stopped_json(&stopped)?);
    // The last line, if stdout takes it soon: a stdout nobody reads must
    // not hold the shutdown.
    if !outlet::stdout().flush(Duration::from_secs(1)) {
        warn!("stdout is not being read: the `stopped` line may be lost");
    }
    attached.tc.clear();
    info!("stopped; all hooks detached");
    Ok(())
}

fn lock(state: &Shared) -> anyhow::Result<std::sync::MutexGuard<'_, AgentState>> {
    state
        .lock()
        .map_err(|_| anyhow::anyhow!("agent state poisoned"))
}

/// One line on stdout, queued.
fn print_line(mut line: String) {
    line.push('\n');
    outlet::stdout().send(line.into_bytes());
}
