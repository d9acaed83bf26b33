//! Phase one of `run`: load the kernel programs with this kernel's
//! offsets, attach every hook in the best mode the kernel permits, and
//! find the kernel's HZ. What is live, and why not, becomes the hooks'
//! status (logged here, exported by the API).

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use keepalive_api::{Hook, HookMode, HookStatus};
use keepalive_common::{ClosedCounts, FlowKey, KernelConfig, ProbeInFlight};
use log::{info, warn};
use tokio::io::unix::AsyncFd;

use super::periodic::calibrate_hz;
use crate::{
    bpf::{
        loader::{self, LoadOptions, Loaded},
        sockopt,
        tc::{self, InterfaceFilter, TcAttacher},
    },
    cli::args::RunArgs,
    host::process,
    kernel::hz,
};

/// Everything attached, and the maps the agent reads.
pub struct Attached {
    pub ebpf: aya::Ebpf,
    pub hooks: Vec<HookStatus>,
    pub tc: TcAttacher,
    pub filter: InterfaceFilter,
    pub inventory_live: bool,
    /// The setsockopt hook is live: inventories only reconcile.
    pub options_followed: bool,
    pub hz: u32,
    pub in_flight: BpfHashMap<MapData, FlowKey, ProbeInFlight>,
    /// Final counts of sockets whose close event was lost.
    pub closed: BpfHashMap<MapData, u64, ClosedCounts>,
}

/// The ring buffer, polled by its reader task.
pub type Ring = AsyncFd<RingBuf<MapData>>;

/// `nofile`: the soft limit on open files in force.
pub fn attach(
    args: &RunArgs,
    config: &KernelConfig,
    nofile: u64,
) -> anyhow::Result<(Attached, Ring)> {
    let hz = hz::detect();
    let opts = LoadOptions {
        ring_buffer_bytes: args.ring_buffer_bytes,
        max_sockets: args.max_sockets,
        timer_mode: args.timer_mode,
    };
    let Loaded {
        mut ebpf,
        mut hooks,
        iterator,
    } = loader::load(config, &opts).context("loading the kernel programs")?;
    if let Some(h) = hooks.iter().find(|h| h.mode == HookMode::Wire)
        && args.no_tc
    {
        anyhow::bail!(
            "no way left to count probes: {} and --no-tc disables the classifiers",
            h.note.as_deref().unwrap_or("the timer hooks are off")
        );
    }
    let options = sockopt::attach(&mut ebpf, config);
    let options_followed = options.live;
    hooks.push(options);
    log_hooks(&hooks);
    let filter = InterfaceFilter(args.interfaces.clone());
    let mut tc = TcAttacher::default();
    tc.descriptor_ceiling = Some(process::attachment_ceiling(args.max_connections, nofile));
    if args.tc_baseline {
        tc.classifiers = tc::Classifiers::Baseline;
    }
    hooks.push(attach_tc(&mut tc, &mut ebpf, &filter, args.no_tc));
    let inventory = HookStatus {
        hook: Hook::SocketInventory,
        mode: HookMode::Iter,
        live: iterator.is_ok(),
        note: iterator.as_ref().err().map(|e| e.to_string()),
    };
    if let Err(e) = &iterator {
        warn!("socket inventory unavailable, sockets appear as events arrive: {e}");
    }
    let inventory_live = inventory.live;
    log_map_memory(args.max_sockets);
    hooks.push(inventory);
    let hz = match hz {
        Ok(hz) => hz,
        // Containers often hide /proc/timer_list and /boot: measure with
        // the kernel's own jiffies through the socket iterator instead.
        Err(e) if inventory_live => {
            let hz = calibrate_hz(&mut ebpf).with_context(|| {
                format!("{e}; measuring through the socket iterator failed too")
            })?;
            info!("kernel HZ measured through the socket iterator: {hz}");
            hz
        }
        Err(e) => return Err(e.into()),
    };
    let in_flight = BpfHashMap::try_from(
        ebpf.take_map("IN_FLIGHT")
            .context("map IN_FLIGHT missing from the eBPF object")?,
    )?;
    let closed = BpfHashMap::try_from(
        ebpf.take_map("CLOSED")
            .context("map CLOSED missing from the eBPF object")?,
    )?;
    let ring = RingBuf::try_from(
        ebpf.take_map("EVENTS")
            .context("map EVENTS missing from the eBPF object")?,
    )?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for
    // as long as the AsyncFd holds it.
    let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let attached = Attached {
        ebpf,
        hooks,
        tc,
        filter,
        inventory_live,
        options_followed,
        hz,
        in_flight,
        closed,
    };
    Ok((attached, ring))
}

/// What the kernel maps take, said once at start: the ring buffer and the
/// socket map grow with `--ring-buffer-bytes` and `--max-sockets`.
fn log_map_memory(max_sockets: u32) {
    let maps = process::bpf_maps();
    let total: u64 = maps.iter().map(|m| m.bytes).sum();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    // The socket map is the hash of 8-byte cookies sized by --max-sockets.
    let ring: u64 = maps
        .iter()
        .filter(|m| m.map_type == process::MAP_TYPE_RINGBUF)
        .map(|m| m.bytes)
        .sum();
    let sockets: u64 = maps
        .iter()
        .filter(|m| m.key_size == 8 && m.max_entries == max_sockets)
        .map(|m| m.bytes)
        .sum();
    info!(
        "kernel memory for the maps: {:.1} MiB (ring buffer {:.1} MiB, socket map of {max_sockets} entries {:.1} MiB)",
        mib(total),
        mib(ring),
        mib(sockets)
    );
}

fn log_hooks(hooks: &[HookStatus]) {
    for h in hooks {
        match (&h.note, h.live) {
            (Some(note), true) => info!("hook {} live via {} ({note})", h.hook, h.mode),
            (None, true) => info!("hook {} live via {}", h.hook, h.mode),
            (Some(note), false) => warn!("hook {} not attached: {note}", h.hook),
            (None, false) => warn!("hook {} not attached", h.hook),
        }
    }
}

/// The classifiers on every matching interface now (later rescans follow
/// new namespaces and interfaces).
fn attach_tc(
    tc: &mut TcAttacher,
    ebpf: &mut aya::Ebpf,
    filter: &InterfaceFilter,
    no_tc: bool,
) -> HookStatus {
    if no_tc {
        return HookStatus {
            hook: Hook::Tc,
            mode: HookMode::None,
            live: false,
            note: Some("disabled by --no-tc".into()),
        };
    }
    let report = match tc.sync(ebpf, filter) {
        Ok(report) => report,
        Err(e) => {
            warn!("tc: namespaces not scanned yet: {e}");
            return HookStatus {
                hook: Hook::Tc,
                mode: tc::mode(),
                live: false,
                note: Some(e.to_string()),
            };
        }
    };
    info!(
        "tc: classifiers on {} interfaces ({} failed){}",
        report.total,
        report.failed,
        report.left().map(|l| format!("; {l}")).unwrap_or_default()
    );
    HookStatus {
        hook: Hook::Tc,
        mode: tc::mode(),
        live: report.total > 0,
        note: report.left(),
    }
}
