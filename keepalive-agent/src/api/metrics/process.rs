//! The `process_*` metrics every Prometheus client library exports (the
//! Go and Python clients' names), read from `/proc/self` at each scrape
//! through the `procfs` crate: CPU seconds, resident and virtual memory,
//! open and maximum descriptors, threads, start time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of /proc/self.
struct Reading {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    threads: f64,
    start_time_seconds: Option<f64>,
}

fn read() -> procfs::ProcResult<Reading> {
    let me = procfs::process::Process::myself()?;
    let stat = me.stat()?;
    let ticks = procfs::ticks_per_second() as f64;
    let max_fds = match me.limits()?.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(v) => Some(v as f64),
        procfs::process::LimitValue::Unlimited => None,
    };
    let start_time_seconds = procfs::boot_time_secs()
        .ok()
        .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
    Ok(Reading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: (stat.rss * procfs::page_size()) as f64,
        virtual_bytes: stat.vsize as f64,
        open_fds: me.fd_count()? as f64,
        max_fds,
        threads: stat.num_threads as f64,
        start_time_seconds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // /proc/self unreadable: no process_* series this scrape, rather
        // than zeros that look like readings.
        let Ok(r) = read() else { return Ok(()) };
        ConstCounter::new(r.cpu_seconds).encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                Some(r.resident_bytes),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                Some(r.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                Some(r.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit)",
                None,
                r.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                Some(r.threads),
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                r.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
