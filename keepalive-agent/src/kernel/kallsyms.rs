//! Addresses of kernel functions from `/proc/kallsyms` (the timer callbacks
//! the kernel programs filter on). Needs root (or kptr_restrict=0): otherwise
//! every address reads as 0, which we report instead of using.

use std::{fs, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} not found in /proc/kallsyms")]
    NotFound(String),
    #[error(
        "/proc/kallsyms shows {0} at address 0: addresses are hidden (kernel.kptr_restrict, or not root)"
    )]
    Hidden(String),
}

/// Finds each of `names` (exact symbol names; `.cold`/`.isra` variants are
/// not the function itself and do not match).
pub fn lookup(names: &[&str]) -> Result<Vec<u64>, KallsymsError> {
    let path = PathBuf::from("/proc/kallsyms");
    let text = fs::read_to_string(&path).map_err(|source| KallsymsError::Io {
        path: path.clone(),
        source,
    })?;
    names.iter().map(|name| find(&text, name)).collect()
}

fn find(text: &str, name: &str) -> Result<u64, KallsymsError> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(sym)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if sym != name {
            continue;
        }
        let addr =
            u64::from_str_radix(addr, 16).map_err(|_| KallsymsError::NotFound(name.into()))?;
        if addr == 0 {
            return Err(KallsymsError::Hidden(name.into()));
        }
        return Ok(addr);
    }
    Err(KallsymsError::NotFound(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ffffffff81243c71 t tcp_keepalive_timer.cold\n\
        ffffffff8202bde0 t __pfx_tcp_keepalive_timer\n\
        ffffffff8202bdf0 t tcp_keepalive_timer\n\
        0000000000000000 t hidden_fn\n";

    #[test]
    fn exact_name_only() {
        assert_eq!(
            find(SAMPLE, "tcp_keepalive_timer").unwrap(),
            0xffffffff8202bdf0
        );
    }

    #[test]
    fn missing_and_hidden() {
        assert!(matches!(
            find(SAMPLE, "nope"),
            Err(KallsymsError::NotFound(_))
        ));
        assert!(matches!(
            find(SAMPLE, "hidden_fn"),
            Err(KallsymsError::Hidden(_))
        ));
    }
}
