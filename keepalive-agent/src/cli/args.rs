//! Command line: every flag a DaemonSet would set also reads an environment
//! variable (`KEEPALIVE_*`). Bad values are one-line errors, exit code 2.

use std::net::SocketAddr;

use clap::{ArgAction, Args, Parser, Subcommand, builder::BoolishValueParser};

use super::values::{
    parse_gap_seconds, parse_interface_pattern, parse_log_level, parse_loopback, parse_ring_size,
};
use crate::{bpf::hooks::TimerMode, model::risk::Rule};

#[derive(Debug, Parser)]
#[command(
    name = "keepalive-agent",
    version,
    about = "TCP keepalive, per socket, from the kernel"
)]
pub struct Cli {
    /// Log filter for stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, env = "KEEPALIVE_LOG", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load the kernel programs, serve /metrics, /sockets and
    /// /events, print events until SIGINT/SIGTERM.
    Run(RunArgs),
    /// List the node's TCP sockets with their keepalive settings (like `ss -tnoe`).
    Sockets(SocketsArgs),
    /// Recommend net.ipv4.tcp_keepalive_* for each path idle timeout, given
    /// or learned by the agent; list the sockets still at risk; and for
    /// each workload the setting to change in its own program's terms
    /// (redis.conf, nginx's listen, libpq, Go's net.Dialer, …).
    Advise(AdviseArgs),
    /// Follow the agent's event stream.
    Events(EventsArgs),
    /// Each destination's idle timeout as learned from its connections:
    /// the longest idle gap survived, the shortest that ended in a reset
    /// or a blackhole, and the known profiles they fit.
    Paths(PathsArgs),
    /// Ask the running agent whether it is healthy (/healthz: every hook
    /// attached) or, with --live, whether it answers (/livez): exit 0 or 1.
    /// For exec probes where the kubelet cannot reach the API.
    Health(HealthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Read a password on stdin and print its bcrypt hash, for
    /// basic_auth_users in --web.config.file.
    HashPassword {
        /// bcrypt cost (each step doubles the time to check it).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=16))]
        cost: u32,
    },
    /// Print the man page (roff), made from these definitions; with
    /// --dir, write one page per command there.
    Man {
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// Path idle timeouts: `PROFILE|SECONDS[@DESTINATION]`.
const IDLE_TIMEOUT_HELP: &str = "Path idle timeout to judge sockets against: a profile (aws-alb, aws-nlb, aws-nat-gateway, aws-ec2-conntrack, aws-network-firewall, azure-lb, gcp-cloud-nat, gcp-lb) or seconds, optionally @CIDR, @CIDR:PORT, @[IPv6/LEN]:PORT or @:PORT; repeat or comma-separate";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print events as JSON lines on stdout instead of readable lines.
    #[arg(long, env = "KEEPALIVE_JSON", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub json: bool,
    /// Also print socket state changes other than closes of keepalive sockets.
    #[arg(long, env = "KEEPALIVE_ALL_EVENTS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub all_events: bool,
    /// Do not print events on stdout (serve them over HTTP only).
    #[arg(long, env = "KEEPALIVE_QUIET", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub quiet: bool,
    /// Address of the HTTP API. Loopback by default: expose it deliberately.
    #[arg(long, env = "KEEPALIVE_LISTEN", default_value = "127.0.0.1:9977")]
    pub listen: SocketAddr,
    /// A second, loopback-only listener (plain HTTP, no auth) for the
    /// per-socket endpoints (/sockets, /events, /paths): given, --listen
    /// serves only /metrics, /healthz and /livez.
    #[arg(long, env = "KEEPALIVE_LOCAL_LISTEN", value_parser = parse_loopback)]
    pub local_listen: Option<SocketAddr>,
    /// TLS and basic auth for --listen, in the Prometheus exporter-toolkit's
    /// format (node_exporter's --web.config.file); re-read when it or a
    /// file it names changes. See deploy/web-config.md.
    #[arg(long = "web.config.file", env = "KEEPALIVE_WEB_CONFIG_FILE")]
    pub web_config_file: Option<std::path::PathBuf>,
    /// Concurrent /metrics requests; more get 503.
    #[arg(long, env = "KEEPALIVE_MAX_METRICS_REQUESTS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub max_metrics_requests: u64,
    #[arg(long = "idle-timeout", env = "KEEPALIVE_IDLE_TIMEOUT", value_delimiter = ',', help = IDLE_TIMEOUT_HELP)]
    pub idle_timeouts: Vec<Rule>,
    /// Ring buffer size in bytes (a power of two, at least 4096).
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
        default_value = "*",
        value_parser = parse_interface_pattern
    )]
    pub interfaces: Vec<String>,
    /// Do not attach TC classifiers (no wire view, no ACKs or RTTs).
    #[arg(long, env = "KEEPALIVE_NO_TC", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub no_tc: bool,
    /// Attach do-nothing classifiers instead of ours: the baseline `cargo
    /// xtask bench` measures our per-packet cost against (no wire view).
    #[arg(long, hide = true)]
    pub tc_baseline: bool,
    /// Seconds between scans for new namespaces and interfaces.
    #[arg(long, env = "KEEPALIVE_RESCAN_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub rescan_seconds: u64,
    /// Seconds between sysctl reads, and between socket inventories while
    /// no setsockopt hook follows option changes (then it is
    /// --reconcile-seconds unless this is given).
    #[arg(long, env = "KEEPALIVE_INVENTORY_SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub inventory_seconds: Option<u64>,
    /// Seconds between socket inventories while the setsockopt hook follows
    /// option changes: the inventory then only reconciles (events lost,
    /// the idle and timer columns, idle gaps survived).
    #[arg(long, env = "KEEPALIVE_RECONCILE_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub reconcile_seconds: u64,
    /// Distinct port label values in metrics before the rest read "other".
    #[arg(long, env = "KEEPALIVE_MAX_PORT_LABELS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_port_labels: u64,
    /// HTTP connections open at once (also capped to what the descriptor
    /// limit leaves beyond the agent's own needs); more get 503.
    #[arg(long, env = "KEEPALIVE_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_connections: u64,
    /// Shortest silence from the peer, in seconds, that counts as an idle
    /// gap: an RST answering our first packet after one is an idle reset,
    /// a stall after one an idle blackhole.
    #[arg(long, env = "KEEPALIVE_IDLE_GAP_SECONDS", default_value_t = 1.0, value_parser = parse_gap_seconds)]
    pub idle_gap_seconds: f64,
    /// Distinct workloads (namespace, pod, container, service) labelled in
    /// metrics before the rest read "other" (counted).
    #[arg(long, env = "KEEPALIVE_MAX_WORKLOADS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_workloads: u64,
    /// Also label the keepalive series by network namespace inode, for
    /// hosts whose namespaces are not containers (`ip netns`).
    #[arg(long, env = "KEEPALIVE_NETNS_LABEL", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub netns_label: bool,
    /// The node's name (the DaemonSet sets NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The container runtime's socket; default: each of
    /// /run/containerd/containerd.sock, /run/crio/crio.sock and
    /// /run/docker.sock that exists, asked in turn.
    #[arg(long, env = "KEEPALIVE_RUNTIME_SOCKET")]
    pub runtime_socket: Option<std::path::PathBuf>,
    /// Which runtime the socket is (default: from its name).
    #[arg(long, env = "KEEPALIVE_RUNTIME")]
    pub runtime: Option<crate::host::runtime::RuntimeKind>,
    /// Ask no container runtime: identities from cgroup paths only.
    #[arg(long, env = "KEEPALIVE_NO_RUNTIME", conflicts_with = "runtime_socket", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    pub no_runtime: bool,
    /// The containerd namespace of the kubelet's containers.
    #[arg(long, env = "KEEPALIVE_CONTAINERD_NAMESPACE", default_value = "k8s.io")]
    pub containerd_namespace: String,
    /// Destination groups whose idle timeout is learned (`/paths`); more
    /// fold into "other".
    #[arg(long, env = "KEEPALIVE_MAX_PATHS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_paths: u64,
    /// Seconds a learned path bound is kept after it was last seen (the
    /// path may change: a new load balancer, a new timeout).
    #[arg(long, env = "KEEPALIVE_PATH_MEMORY_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    pub path_memory_seconds: u64,
    /// Concurrent /events clients.
    #[arg(long, env = "KEEPALIVE_MAX_EVENT_CLIENTS", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_event_clients: u64,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The running agent's HTTP address.
    #[arg(long, env = "KEEPALIVE_AGENT", default_value = "http://127.0.0.1:9977")]
    pub agent: String,
}

/// Filters `sockets` and `events` share.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only sockets with this local or remote port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only sockets owned by this process.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Network namespace inode.
    #[arg(long)]
    pub netns: Option<u32>,
    /// Kubernetes namespace (as kubectl's -n; "" for what is in no pod).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Kubernetes pod name.
    #[arg(long)]
    pub pod: Option<String>,
    /// Container name within the pod.
    #[arg(long)]
    pub container: Option<String>,
}

impl FilterArgs {
    /// As query parameters of the HTTP API.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(p) = self.port {
            q.push(("port", p.to_string()));
        }
        if let Some(p) = self.pid {
            q.push(("pid", p.to_string()));
        }
        if let Some(n) = self.netns {
            q.push(("netns", n.to_string()));
        }
        let names = [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
        ];
        for (key, value) in names {
            if let Some(v) = value {
                q.push((key, v.clone()));
            }
        }
        q
    }
}

#[derive(Debug, Args)]
pub struct SocketsArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TCP state as ss names it (ESTAB, LISTEN, …).
    #[arg(long)]
    pub state: Option<String>,
    /// Only sockets at risk against the agent's --idle-timeout.
    #[arg(long)]
    pub at_risk: bool,
}

#[derive(Debug, Args)]
pub struct AdviseArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Without it, the paths whose idle timeout the agent learned.
    #[arg(long = "idle-timeout", value_delimiter = ',', help = IDLE_TIMEOUT_HELP)]
    pub idle_timeouts: Vec<Rule>,
    /// Readable text, JSON, or Markdown to paste into a ticket.
    #[arg(long, value_enum, default_value_t = AdviceFormat::Text)]
    pub format: AdviceFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
}

/// How `advise` writes its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AdviceFormat {
    Text,
    Json,
    Markdown,
}

impl AdviseArgs {
    pub fn output(&self) -> AdviceFormat {
        if self.json {
            AdviceFormat::Json
        } else {
            self.format
        }
    }
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Only whether the agent answers (/livez).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub struct PathsArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// JSON lines instead of readable lines.
    #[arg(long)]
    pub json: bool,
    /// Only this event kind (probe_sent, keepalive_timeout, …).
    #[arg(long)]
    pub event: Option<String>,
}

/// A command line the agent cannot run with (exit 2, as clap's errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The default when option changes can only be found by looking.
const INVENTORY_SECONDS: u64 = 10;

impl RunArgs {
    /// Between sysctl reads (and probe-in-flight expiry).
    pub fn sysctl_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.inventory_seconds.unwrap_or(INVENTORY_SECONDS))
    }

    /// Between socket inventories: a slow reconciliation when the setsockopt
    /// hook follows option changes, unless `--inventory-seconds` says.
    pub fn inventory_period(&self, options_followed: bool) -> std::time::Duration {
        let seconds = match self.inventory_seconds {
            Some(s) => s,
            None if options_followed => self.reconcile_seconds,
            None => INVENTORY_SECONDS,
        };
        std::time::Duration::from_secs(seconds)
    }
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
        assert!(parse_ring_size("268435456").is_ok());
        assert!(parse_ring_size("536870912").is_err());
        assert!(parse_ring_size("2147483648").is_err());
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(Cli::try_parse_from(["k", "run", "--timer-mode", "kprobe"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--max-sockets", "0"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--idle-timeout", "aws-nbl"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--listen", "nowhere"]).is_err());
        // Without --idle-timeout, advise asks the agent for learned paths.
        assert!(Cli::try_parse_from(["k", "advise"]).is_ok());
        assert!(Cli::try_parse_from(["k", "run", "--idle-gap-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--max-paths", "0"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--interfaces", ""]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--interfaces", "eth0,"]).is_err());
        assert!(Cli::try_parse_from(["k", "run", "--interfaces", "veth*,lo"]).is_ok());
        assert!(Cli::try_parse_from(["k", "run", "--idle-timeout", "60@:0"]).is_err());
        assert!(Cli::try_parse_from(["k", "--log-level", "verbose", "run"]).is_err());
        assert!(Cli::try_parse_from(["k", "--log-level", "warn=loud", "run"]).is_err());
        assert!(
            Cli::try_parse_from(["k", "--log-level", "info,keepalive_agent::tc=debug", "run"])
                .is_ok()
        );
        let ok = Cli::try_parse_from(["k", "run", "--json", "--idle-timeout", "aws-nlb,60@:443"])
            .unwrap();
        let Command::Run(args) = ok.command else {
            panic!()
        };
        assert_eq!(args.idle_timeouts.len(), 2);
    }
}
