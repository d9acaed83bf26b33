//! Shell completions (clap_complete) and the man pages (clap_mangen), made
//! from the clap definitions so they cannot drift from the flags; the
//! systemd install path writes them where bash, zsh, fish and man look.
//! And the bcrypt hash of a password, for the web configuration.

use std::io::Write as _;

use clap::CommandFactory as _;

use super::args::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "keepalive-agent", &mut out);
    write_stdout(&out)
}

/// The man pages: `keepalive-agent.1` on stdout, or with `dir` one page
/// per command written there (`keepalive-agent-run.1`, …, as git's).
pub fn man_pages(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir)
            .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", dir.display())),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            write_stdout(&out)
        }
    }
}

/// One line of stdin (a trailing newline is not part of the password) →
/// its bcrypt hash, as `htpasswd -nBC 10` makes.
pub fn hash_password(cost: u32) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    let hash = bcrypt::hash(password, cost)?;
    write_stdout(format!("{hash}\n").as_bytes())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}
