//! Command line: every flag a DaemonSet would set also reads an environment
//! variable (`KEEPALIVE_*`).

use clap::{Args, Parser, Subcommand};

use crate::loader::TimerMode;

#[derive(Debug, Parser)]
#[command(
    name = "keepalive-agent",
    version,
    about = "TCP keepalive, per socket, from the kernel"
)]
pub struct Cli {
    /// Log filter for stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "KEEPALIVE_LOG", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel programs and report keepalive events until SIGINT/SIGTERM.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print events as JSON lines on stdout instead of readable lines.
    #[arg(long, env = "KEEPALIVE_JSON")]
    pub json: bool,
    /// Also print socket state changes other than closes of keepalive sockets.
    #[arg(long, env = "KEEPALIVE_ALL_EVENTS")]
    pub all_events: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    #[arg(long, env = "KEEPALIVE_RING_BUFFER_BYTES", default_value_t = 4 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,
    /// Sockets tracked at once, in the kernel and in the agent.
    #[arg(long, env = "KEEPALIVE_MAX_SOCKETS", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_sockets: u32,
    /// How to watch the keepalive timer.
    #[arg(long, env = "KEEPALIVE_TIMER_MODE", value_enum, default_value_t = TimerMode::Auto)]
    pub timer_mode: TimerMode,
    /// Interfaces (in every network namespace) that get the TC classifiers;
    /// a trailing `*` matches any suffix.
    #[arg(
        long,
        env = "KEEPALIVE_INTERFACES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub interfaces: Vec<String>,
    /// Do not attach TC classifiers (no wire view, no ACKs or RTTs).
    #[arg(long, env = "KEEPALIVE_NO_TC")]
    pub no_tc: bool,
    /// Seconds between scans for new namespaces and interfaces.
    #[arg(long, env = "KEEPALIVE_RESCAN_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub rescan_seconds: u64,
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_rules() {
        assert!(parse_ring_size("4096").is_ok());
        assert!(parse_ring_size("5000").is_err());
        assert!(parse_ring_size("1024").is_err());
        assert!(parse_ring_size("x").is_err());
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(Cli::try_parse_from(["k", "run", "--timer-mode", "kprobe"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--max-sockets", "0"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--json"]).is_ok());
    }
}
