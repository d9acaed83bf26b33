//! Attaching the tracing hooks, choosing per hook the best mode the kernel
//! permits: fentry/fexit on the timer callbacks where allowed, else the
//! `timer_expire_entry/exit` BTF tracepoints filtered on the callback
//! address, else (`auto`) no timer hook at all, the TC classifiers counting
//! probes alone. What is live, and why a mode was skipped, is returned so
//! the agent can log it and export it.

use aya::{
    Btf as AyaBtf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, ProgramError},
};
use keepalive_api::{Hook, HookMode, HookStatus};
use serde::Serialize;

use super::{
    error::ProgramFailure,
    loader::{HookRefusal, LoadError},
};

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

pub fn attach_timers(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    mode: TimerMode,
) -> Result<HookStatus, LoadError> {
    let status = |mode, live, note| HookStatus {
        hook: Hook::KeepaliveTimer,
        mode,
        live,
        note,
    };
    if mode == TimerMode::Wire {
        return Ok(status(
            HookMode::Wire,
            false,
            Some("--timer-mode wire: probes counted by the TC classifiers alone".into()),
        ));
    }
    let mut note = None;
    if mode != TimerMode::Tracepoint {
        match attach_fentry_pairs(ebpf, btf) {
            Ok(()) => return Ok(status(HookMode::Fentry, true, note)),
            Err(e) if mode == TimerMode::Fentry => {
                return Err(LoadError::Hook {
                    hook: Hook::KeepaliveTimer,
                    reason: HookRefusal::FentryRequired(e),
                });
            }
            Err(e) => note = Some(format!("fentry refused, using tracepoints: {e}")),
        }
    }
    let attached = ["timer_expire_entry", "timer_expire_exit"]
        .into_iter()
        .try_for_each(|prog| attach_tp_btf(ebpf, btf, prog));
    match attached {
        Ok(()) => Ok(status(HookMode::TpBtf, true, note)),
        Err(e) if mode == TimerMode::Auto => Ok(status(
            HookMode::Wire,
            false,
            Some(format!(
                "fentry and timer tracepoints refused ({e}): probes counted by the TC classifiers alone"
            )),
        )),
        Err(e) => Err(LoadError::Hook {
            hook: Hook::KeepaliveTimer,
            reason: e.into(),
        }),
    }
}

/// fentry+fexit on both timer callbacks, all or nothing.
fn attach_fentry_pairs(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<(), ProgramFailure> {
    const PAIRS: [(&str, &str, &str); 2] = [
        (
            "keepalive_timer_entry",
            "keepalive_timer_exit",
            "tcp_keepalive_timer",
        ),
        ("write_timer_entry", "write_timer_exit", "tcp_write_timer"),
    ];
    let result = PAIRS.iter().try_for_each(|&(entry, exit, function)| {
        let p: &mut FEntry = program(ebpf, entry)?;
        p.load(function, btf)
            .map_err(ProgramFailure::failed(entry))?;
        p.attach().map_err(ProgramFailure::failed(entry))?;
        let p: &mut FExit = program(ebpf, exit)?;
        p.load(function, btf)
            .map_err(ProgramFailure::failed(exit))?;
        p.attach().map_err(ProgramFailure::failed(exit))?;
        Ok(())
    });
    if result.is_err() {
        // Leave nothing half attached: the tracepoints take over.
        for (entry, exit, _) in PAIRS {
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

/// Loads and attaches the BTF tracepoint program named after its tracepoint.
pub fn attach_tp_btf(
    ebpf: &mut Ebpf,
    btf: &AyaBtf,
    prog: &'static str,
) -> Result<(), ProgramFailure> {
    let p: &mut BtfTracePoint = program(ebpf, prog)?;
    p.load(prog, btf).map_err(ProgramFailure::failed(prog))?;
    p.attach().map_err(ProgramFailure::failed(prog))?;
    Ok(())
}

/// The program `name` of the object, as its type.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProgramFailure>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProgramFailure::Missing(name))?
        .try_into()
        .map_err(ProgramFailure::failed(name))
}
