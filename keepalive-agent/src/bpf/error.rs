//! Errors of programs the agent loads and attaches: aya's error is kept
//! (callers can match on it), and printed with the verifier log cut to its
//! reason instead of hundreds of lines of instructions.

use std::fmt;

use aya::programs::ProgramError;

/// A kernel program that could not be found, loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum ProgramFailure {
    #[error("program {0} missing from the eBPF object")]
    Missing(&'static str),
    #[error("{program}: {}", Trimmed(error))]
    Failed {
        program: &'static str,
        error: ProgramError,
    },
}

impl ProgramFailure {
    pub fn failed(program: &'static str) -> impl FnOnce(ProgramError) -> Self {
        move |error| ProgramFailure::Failed { program, error }
    }
}

/// A [`ProgramError`] in one line: a verifier log is cut to its last lines
/// (the rejection reason) and logged whole at debug level.
pub struct Trimmed<'a>(pub &'a ProgramError);

impl fmt::Display for Trimmed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProgramError::LoadError {
            io_error,
            verifier_log,
        } = self.0
        else {
            return self.0.fmt(f);
        };
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
            return write!(f, "BPF_PROG_LOAD: {io_error} (no verifier log)");
        }
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        write!(
            f,
            "BPF_PROG_LOAD: {io_error}; verifier: {}",
            tail.join(" / ")
        )
    }
}

fn is_verifier_statistics(line: &str) -> bool {
    ["processed ", "stack depth ", "verification time "]
        .iter()
        .any(|p| line.starts_with(p))
}
