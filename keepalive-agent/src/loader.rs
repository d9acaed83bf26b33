//! Loads the kernel programs with this kernel's offsets and attaches the
//! tracing hooks, choosing per hook the best mode the kernel permits:
//! fentry/fexit on the timer callbacks where allowed, else the
//! `timer_expire_entry/exit` BTF tracepoints filtered on the callback
//! address. What is live, and why a mode was skipped, is returned so the
//! agent can log it and export it.

use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, FExit, ProgramError},
};
use keepalive_common::KernelConfig;
use serde::Serialize;

/// The kernel object, built by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keepalive-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading kernel BTF for program loading: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("hook {hook} could not be attached in any mode: {reason}")]
    Hook { hook: &'static str, reason: String },
}

/// How the keepalive timer is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerMode {
    /// fentry where the kernel permits it, else the tracepoints, else the
    /// wire alone.
    Auto,
    Fentry,
    Tracepoint,
    /// No timer hook: the TC egress classifier alone counts probes (it
    /// misses probes that never reach TC, as to a peer whose neighbour entry
    /// failed, and cannot tell which timer killed a connection).
    Wire,
}

/// One hook's state, for logs, `/metrics` and the `ready` event.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub hook: &'static str,
    /// "fentry", "tp_btf", "tcx", "netlink" … or "none".
    pub mode: String,
    pub live: bool,
    /// Why a better mode was not used, or why the hook is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The timer hook's mode when no timer hook is attached and the TC
/// classifiers count probes alone.
pub const WIRE_MODE: &str = "wire";

impl HookStatus {
    /// Down for `/healthz`: not attached, and neither off by choice (`none`)
    /// nor replaced by the TC view ([`WIRE_MODE`]). A restart cannot bring
    /// back a hook the kernel refuses, so a replaced hook must not fail
    /// readiness; `keepalive_agent_hook_up` still reads 0 for it.
    pub fn is_down(&self) -> bool {
        !self.live && self.mode != "none" && self.mode != WIRE_MODE
    }
}

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub max_sockets: u32,
    pub timer_mode: TimerMode,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    /// The socket iterator, loaded here while the kernel's BTF is parsed
    /// (it is not kept: ~9 MiB).
    pub iterator: Result<(), crate::socket_iter::IterError>,
}

pub fn load(config: &KernelConfig, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let btf = AyaBtf::from_sys_fs()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("CONFIG", config, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("SOCKETS", opts.max_sockets)
        .load(EBPF_OBJECT)?;
    let mut hooks = Vec::new();
    hooks.push(attach_timers(&mut ebpf, &btf, opts.timer_mode)?);
    for (prog, tracepoint) in [
        ("inet_sock_set_state", "inet_sock_set_state"),
        ("inet_sk_error_report", "inet_sk_error_report"),
    ] {
        attach_tp_btf(&mut ebpf, &btf, prog, tracepoint)
            .map_err(|reason| LoadError::Hook { hook: prog, reason })?;
        hooks.push(HookStatus {
            hook: prog,
            mode: "tp_btf".into(),
            live: true,
            note: None,
        });
    }
    let iterator = crate::socket_iter::load(&mut ebpf, &btf);
    Ok(Loaded {
        ebpf,
        hooks,
        iterator,
    })
}

fn attach_timers(ebpf: &mut Ebpf, btf: &AyaBtf, mode: TimerMode) -> Result<HookStatus, LoadError> {
    const HOOK: &str = "keepalive_timer";
    let wire_only = |note: String| HookStatus {
        hook: HOOK,
        mode: WIRE_MODE.into(),
        live: false,
        note: Some(note),
    };
    if mode == TimerMode::Wire {
        return Ok(wire_only(
            "--timer-mode wire: probes counted by the TC classifiers alone".into(),
        ));
    }
    let mut note = None;
    if mode != TimerMode::Tracepoint {
        match attach_fentry_pairs(ebpf, btf) {
            Ok(()) => {
                return Ok(HookStatus {
                    hook: HOOK,
                    mode: "fentry".into(),
                    live: true,
                    note,
                });
            }
            Err(reason) if mode == TimerMode::Fentry => {
                return Err(LoadError::Hook {
                    hook: HOOK,
                    reason: format!(
                        "--timer-mode fentry: this kernel refused fentry/fexit on tcp_keepalive_timer ({reason}); use --timer-mode auto or tracepoint"
                    ),
                });
            }
            Err(reason) => note = Some(format!("fentry refused, using tracepoints: {reason}")),
        }
    }
    let attached = ["timer_expire_entry", "timer_expire_exit"]
        .into_iter()
        .try_for_each(|prog| attach_tp_btf(ebpf, btf, prog, prog));
    match attached {
        Ok(()) => Ok(HookStatus {
            hook: HOOK,
            mode: "tp_btf".into(),
            live: true,
            note,
        }),
        Err(reason) if mode == TimerMode::Auto => Ok(wire_only(format!(
            "fentry and timer tracepoints refused ({reason}): probes counted by the TC classifiers alone"
        ))),
        Err(reason) => Err(LoadError::Hook { hook: HOOK, reason }),
    }
}

/// fentry+fexit on both timer callbacks, all or nothing.
fn attach_fentry_pairs(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<(), String> {
    let pairs = [
        (
            "keepalive_timer_entry",
            "keepalive_timer_exit",
            "tcp_keepalive_timer",
        ),
        ("write_timer_entry", "write_timer_exit", "tcp_write_timer"),
    ];
    let result = (|| {
        for (entry, exit, function) in pairs {
            let p: &mut FEntry = program(ebpf, entry)?;
            p.load(function, btf).map_err(short)?;
            p.attach().map_err(short)?;
            let p: &mut FExit = program(ebpf, exit)?;
            p.load(function, btf).map_err(short)?;
            p.attach().map_err(short)?;
        }
        Ok(())
    })();
    if result.is_err() {
        // Leave nothing half attached: the tracepoints take over.
        for (entry, exit, _) in pairs {
            if let Ok(p) = program::<FEntry>(ebpf, entry) {
                let _ = p.unload();
            }
            if let Ok(p) = program::<FExit>(ebpf, exit) {
                let _ = p.unload();
            }
        }
    }
    result
}

fn attach_tp_btf(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    prog: &str,
    tracepoint: &str,
) -> Result<(), String> {
    let p: &mut BtfTracePoint = program(ebpf, prog)?;
    p.load(tracepoint, btf).map_err(short)?;
    p.attach().map_err(short)?;
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    p.try_into().map_err(short)
}

/// One line for a program error: the verifier log, when there is one, is
/// cut to its last lines (the rejection reason) instead of dumped whole.
pub fn short(err: ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            // The log ends with statistics; the reason is just before them.
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| !l.trim().is_empty() && !is_verifier_statistics(l))
                .take(2)
                .collect();
            if tail.is_empty() {
                format!("BPF_PROG_LOAD: {io_error} (no verifier log)")
            } else {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("BPF_PROG_LOAD: {io_error}; verifier: {}", tail.join(" / "))
            }
        }
        other => other.to_string(),
    }
}

fn is_verifier_statistics(line: &str) -> bool {
    ["processed ", "stack depth ", "verification time "]
        .iter()
        .any(|p| line.starts_with(p))
}
