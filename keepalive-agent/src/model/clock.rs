//! Kernel clocks to seconds: `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to Unix
//! time, jiffies to seconds with the kernel's HZ.

/// Converts kernel clocks to wall-clock seconds and jiffies to seconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - monotonic, in ns, sampled at start.
    pub offset_ns: i128,
    pub hz: u32,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Unix time now, in seconds (CLOCK_REALTIME).
pub fn unix_now_s() -> f64 {
    now_ns(libc::CLOCK_REALTIME) as f64 / 1e9
}

impl Clock {
    pub fn new(hz: u32) -> Self {
        Clock {
            offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC),
            hz,
        }
    }

    pub fn wall_seconds(&self, mono_ns: u64) -> f64 {
        (mono_ns as i128 + self.offset_ns) as f64 / 1e9
    }

    pub fn seconds(&self, jiffies: u32) -> f64 {
        jiffies as f64 / self.hz as f64
    }

    /// Unix time now.
    pub fn now(&self) -> f64 {
        self.wall_seconds(monotonic_ns())
    }
}

/// Seconds to the millisecond, as the kernel's clocks give them.
pub fn ms(s: f64) -> f64 {
    (s * 1e3).round() / 1e3
}
