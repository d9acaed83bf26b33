//! keepalive-agent: loads the kernel programs, follows their events and
//! reports TCP keepalive per socket.

mod btf;
mod caps;
mod cli;
mod client;
mod counters;
mod events;
mod filters;
mod http;
mod hz;
mod kallsyms;
mod loader;
mod metrics;
mod netns;
mod offsets;
mod output;
mod owners;
mod risk;
mod run;
mod serve;
mod socket_iter;
mod sockets;
mod state;
mod sysctl;
mod tc;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version on stdout with exit 0, errors with 2.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        cli::Command::Run(args) => run::main(args),
        cli::Command::Sockets(args) => client::sockets(args),
        cli::Command::Advise(args) => client::advise(args),
        cli::Command::Events(args) => client::events(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepalive-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
