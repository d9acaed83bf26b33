//! Loads the kernel object with this kernel's offsets and sizes, then
//! attaches the tracing hooks ([`super::hooks`]) and loads the socket
//! iterator while the kernel's BTF is parsed (it is not kept: ~9 MiB).

use aya::{Btf as AyaBtf, Ebpf, EbpfLoader};
use keepalive_api::{Hook, HookMode, HookStatus};
use keepalive_common::KernelConfig;

use super::{
    error::ProgramFailure,
    hooks::{self, TimerMode},
    iter::{self, IterError},
};

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
    Hook { hook: Hook, reason: HookRefusal },
    #[error(
        "this binary was built without its kernel programs (KEEPALIVE_WITHOUT_KERNEL_PROGRAMS, for the fuzz targets): build it with `cargo xtask build`"
    )]
    NoKernelPrograms,
}

/// Why a hook could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum HookRefusal {
    #[error(transparent)]
    Program(#[from] ProgramFailure),
    #[error(
        "--timer-mode fentry: this kernel refused fentry/fexit on tcp_keepalive_timer ({0}); use --timer-mode auto or tracepoint"
    )]
    FentryRequired(ProgramFailure),
}

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub max_sockets: u32,
    pub timer_mode: TimerMode,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    pub iterator: Result<(), IterError>,
}

/// The most of the kernel's socket map one user's sockets may hold: three
/// quarters, so that one user filling it leaves the others a quarter (the
/// agent's own table shares its room the same way, by the same `sk_uid`).
pub fn socket_share(max_sockets: u32) -> u32 {
    (max_sockets - max_sockets / 4).max(1)
}

pub fn load(config: &KernelConfig, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoKernelPrograms);
    }
    let btf = AyaBtf::from_sys_fs()?;
    let config = KernelConfig {
        socket_share: socket_share(opts.max_sockets),
        ..*config
    };
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("SOCKETS", opts.max_sockets)
        // A user per socket entry at most.
        .map_max_entries("HELD", opts.max_sockets)
        .load(EBPF_OBJECT)?;
    let mut hooks = vec![hooks::attach_timers(&mut ebpf, &btf, opts.timer_mode)?];
    for (hook, prog) in [
        (Hook::InetSockSetState, "inet_sock_set_state"),
        (Hook::InetSkErrorReport, "inet_sk_error_report"),
        (Hook::TcpReceiveReset, "tcp_receive_reset"),
        (Hook::TcpSendReset, "tcp_send_reset"),
    ] {
        hooks::attach_tp_btf(&mut ebpf, &btf, prog).map_err(|e| LoadError::Hook {
            hook,
            reason: e.into(),
        })?;
        hooks.push(HookStatus {
            hook,
            mode: HookMode::TpBtf,
            live: true,
            note: None,
        });
    }
    let iterator = iter::load(&mut ebpf, &btf);
    Ok(Loaded {
        ebpf,
        hooks,
        iterator,
    })
}
