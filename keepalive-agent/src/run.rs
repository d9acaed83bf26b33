//! The `run` command: resolve offsets, load and attach, then follow the ring
//! buffer until SIGINT/SIGTERM, rescanning namespaces for the TC
//! classifiers. Dropping the loaded object detaches every hook.

use std::{
    io::{BufWriter, Write as _},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::RingBuf;
use log::{info, warn};
use serde::Serialize;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    btf::Btf,
    cli::RunArgs,
    counters::{CounterReader, KernelCounters},
    events::{self, Clock, Record},
    hz, loader, offsets, output,
    sockets::SocketTable,
    tc::{InterfaceFilter, TcAttacher},
};

/// The first line on stdout once every hook is attached.
#[derive(Serialize)]
struct Ready<'a> {
    event: &'static str,
    hooks: &'a [loader::HookStatus],
    interfaces: Vec<String>,
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
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    bump_memlock_rlimit();
    let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
    let config = offsets::resolve(&btf).context("resolving kernel offsets")?;
    let hz = hz::detect()?;
    let opts = loader::LoadOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_sockets: args.max_sockets,
        timer_mode: args.timer_mode,
    };
    let loader::Loaded { mut ebpf, mut hooks } =
        loader::load(&config, &opts).context("loading the kernel programs (are you root, or do you hold CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN?)")?;
    for h in &hooks {
        match &h.note {
            Some(note) => info!("hook {} live via {} ({note})", h.hook, h.mode),
            None => info!("hook {} live via {}", h.hook, h.mode),
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
            mode: if aya::util::KernelVersion::current()
                .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
                .unwrap_or(false)
            {
                "tcx".into()
            } else {
                "netlink".into()
            },
            live: report.total > 0,
            note: (report.failed > 0).then(|| format!("{} interfaces failed", report.failed)),
        });
    }

    let counters = CounterReader::new(&mut ebpf)?;
    let ring = ebpf
        .take_map("EVENTS")
        .context("map EVENTS missing from the eBPF object")?;
    let ring = RingBuf::try_from(ring)?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for
    // as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;

    let clock = Clock::new(hz);
    let mut table = SocketTable::new(args.max_sockets as usize);
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let ready = Ready {
        event: "ready",
        hooks: &hooks,
        interfaces: tc.interfaces(),
        hz,
        startup_ms: started.elapsed().as_millis(),
    };
    serde_json::to_writer(&mut stdout, &ready)?;
    writeln!(stdout)?;
    stdout.flush()?;
    info!("ready in {} ms", started.elapsed().as_millis());

    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut rescan = tokio::time::interval(Duration::from_secs(args.rescan_seconds));
    rescan.tick().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    let mut lost_reported = 0u64;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                drain(guard.get_inner_mut(), &mut table, &clock, &args, &mut stdout)?;
                guard.clear_ready();
            }
            _ = rescan.tick(), if !args.no_tc => {
                let report = tc.sync(&mut ebpf, &filter);
                if report.attached + report.detached > 0 {
                    info!("tc: +{} -{} interfaces, {} attached", report.attached, report.detached, report.total);
                }
            }
            _ = health.tick() => {
                let c = counters.read().context("reading kernel counters")?;
                if c.events_lost > lost_reported {
                    warn!("ring buffer full: {} events lost so far (kernel counters stay exact)", c.events_lost);
                    lost_reported = c.events_lost;
                }
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    drain(ring.get_mut(), &mut table, &clock, &args, &mut stdout)?;
    let stopped = Stopped {
        event: "stopped",
        counters: counters.read().context("reading kernel counters")?,
        sockets_refused: table.refused,
    };
    serde_json::to_writer(&mut stdout, &stopped)?;
    writeln!(stdout)?;
    stdout.flush()?;
    tc.clear();
    info!("stopped; all hooks detached");
    Ok(())
}

fn drain(
    ring: &mut RingBuf<aya::maps::MapData>,
    table: &mut SocketTable,
    clock: &Clock,
    args: &RunArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        let Some(ev) = events::decode(&item) else {
            warn!("short ring buffer record ({} bytes)", item.len());
            continue;
        };
        let Some(record) = events::to_record(&ev, table, clock) else {
            continue;
        };
        if should_print(&record, args) {
            output::write(out, &record, args.json).context("writing to stdout")?;
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// State changes are the bulk of events on a busy node; by default only a
/// close of a socket that had keepalive activity is printed.
fn should_print(r: &Record, args: &RunArgs) -> bool {
    match r.event {
        "state_change" => args.all_events,
        "socket_closed" => args.all_events || r.probes.unwrap_or(0) > 0,
        _ => true,
    }
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
