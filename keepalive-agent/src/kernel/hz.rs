//! The kernel's tick rate (CONFIG_HZ): keepalive times and idle ages are
//! held in jiffies. Read from the kernel config when it is exposed, else
//! measured by watching `jiffies` advance in `/proc/timer_list`.

use std::{fs, io::Read as _, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum HzError {
    #[error(
        "cannot tell the kernel's HZ: no CONFIG_HZ in /proc/config.gz or /boot/config-*, and /proc/timer_list cannot be read ({0})"
    )]
    TimerList(#[source] std::io::Error),
    #[error(
        "cannot tell the kernel's HZ: no CONFIG_HZ in /proc/config.gz or /boot/config-*, and /proc/timer_list has no jiffies/now lines"
    )]
    NoJiffies,
    #[error("cannot tell the kernel's HZ: jiffies did not advance between samples")]
    NotAdvancing,
}

const KNOWN: [u32; 5] = [100, 250, 300, 1000, 1024];

pub fn detect() -> Result<u32, HzError> {
    if let Some(hz) = from_config() {
        return Ok(hz);
    }
    measure()
}

fn from_config() -> Option<u32> {
    let mut text = String::new();
    if let Ok(file) = fs::File::open("/proc/config.gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .ok()?;
    } else {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        text = fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    }
    parse_config_hz(&text)
}

fn parse_config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ=")?.trim().parse().ok())
}

/// (jiffies, now in ns) from one read of /proc/timer_list.
fn sample() -> Result<(u64, u64), HzError> {
    let text = fs::read_to_string("/proc/timer_list").map_err(HzError::TimerList)?;
    let now = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .parse()
            .ok()
    });
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies: ")?.parse().ok());
    match (jiffies, now) {
        (Some(j), Some(n)) => Ok((j, n)),
        _ => Err(HzError::NoJiffies),
    }
}

fn measure() -> Result<u32, HzError> {
    let (j0, t0) = sample()?;
    std::thread::sleep(Duration::from_millis(200));
    let (j1, t1) = sample()?;
    from_samples((j0, t0), (j1, t1))
}

/// HZ from two (jiffies, monotonic ns) samples taken by any other means
/// (the agent uses its socket iterator, which reads `bpf_jiffies64`).
pub fn from_samples((j0, t0): (u64, u64), (j1, t1): (u64, u64)) -> Result<u32, HzError> {
    let elapsed = t1.saturating_sub(t0) as f64 / 1e9;
    if elapsed <= 0.0 || j1 <= j0 {
        return Err(HzError::NotAdvancing);
    }
    Ok(nearest_known((j1 - j0) as f64 / elapsed))
}

fn nearest_known(rate: f64) -> u32 {
    KNOWN
        .into_iter()
        .min_by(|a, b| {
            ((*a as f64) - rate)
                .abs()
                .total_cmp(&((*b as f64) - rate).abs())
        })
        .unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config() {
        assert_eq!(
            parse_config_hz("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(parse_config_hz("CONFIG_HZ_250=y\n"), None);
    }

    #[test]
    fn rounds_measurement() {
        assert_eq!(nearest_known(247.0), 250);
        assert_eq!(nearest_known(990.0), 1000);
        assert_eq!(nearest_known(104.0), 100);
    }

    #[test]
    fn from_two_samples() {
        assert_eq!(from_samples((1000, 0), (1050, 200_000_000)).unwrap(), 250);
        assert!(from_samples((1000, 0), (1000, 200_000_000)).is_err());
    }

    #[test]
    fn detects_on_this_machine() {
        let hz = detect().unwrap();
        assert!(KNOWN.contains(&hz));
    }
}
