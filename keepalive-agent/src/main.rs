//! The `keepalive-agent` command: parses the command line and runs one
//! command of the library's.

use clap::Parser as _;
use keepalive_agent::{cli, host, run};

fn main() -> std::process::ExitCode {
    let cli = match cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout with exit 0, errors with 2.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // The log goes through a queue of its own: a stderr nobody reads
    // costs log lines, never the agent.
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_timestamp_millis()
        .target(env_logger::Target::Pipe(Box::new(host::outlet::LogPipe)))
        .init();
    let result = match cli.command {
        cli::args::Command::Run(args) => run::main(args),
        cli::args::Command::Sockets(args) => cli::client::sockets(args),
        cli::args::Command::Advise(args) => cli::advise::advise(args),
        cli::args::Command::Events(args) => cli::client::events(args),
        cli::args::Command::Paths(args) => cli::client::paths(args),
        cli::args::Command::Health(args) => cli::client::health(args),
        cli::args::Command::Completions { shell } => cli::docs::completions(shell),
        cli::args::Command::HashPassword { cost } => cli::docs::hash_password(cost),
        cli::args::Command::Man { dir } => cli::docs::man_pages(dir.as_deref()),
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // After the queued log lines, if stderr takes them soon.
            host::outlet::stderr().flush(std::time::Duration::from_millis(500));
            eprintln!("keepalive-agent: {e:#}");
            // A command line it cannot run with exits 2, as clap's errors.
            let usage = e.downcast_ref::<cli::args::UsageError>().is_some();
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    };
    // Queued log lines, if stderr takes them soon.
    host::outlet::stderr().flush(std::time::Duration::from_millis(500));
    code
}
