//! The kernel programs' exact global counters (a per-CPU array), summed.

use aya::maps::{MapData, PerCpuArray};
use keepalive_common::counter;
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    pub timer_fires: u64,
    pub probes: u64,
    pub wire_probes: u64,
    pub wire_zero_window_probes: u64,
    pub acks: u64,
    pub keepalive_timeouts: u64,
    pub events_lost: u64,
    pub socket_map_full: u64,
    pub read_errors: u64,
    pub in_flight_full: u64,
    pub no_cookie: u64,
    pub closed_in_timer: u64,
    /// Of `probes`: seen by TC alone (the timer hook missed that run).
    pub probes_wire_only: u64,
}

pub struct CounterReader {
    map: PerCpuArray<MapData, u64>,
}

impl CounterReader {
    pub fn new(ebpf: &mut aya::Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map("COUNTERS")
            .ok_or_else(|| anyhow::anyhow!("map COUNTERS missing from the eBPF object"))?;
        Ok(CounterReader {
            map: PerCpuArray::try_from(map)?,
        })
    }

    pub fn read(&self) -> Result<KernelCounters, aya::maps::MapError> {
        let get =
            |i: u32| -> Result<u64, aya::maps::MapError> { Ok(self.map.get(&i, 0)?.iter().sum()) };
        Ok(KernelCounters {
            timer_fires: get(counter::TIMER_FIRES)?,
            probes: get(counter::PROBES)?,
            wire_probes: get(counter::WIRE_PROBES)?,
            wire_zero_window_probes: get(counter::WIRE_ZERO_WINDOW_PROBES)?,
            acks: get(counter::ACKS)?,
            keepalive_timeouts: get(counter::TIMEOUTS)?,
            events_lost: get(counter::EVENTS_LOST)?,
            socket_map_full: get(counter::SOCKET_MAP_FULL)?,
            read_errors: get(counter::READ_ERRORS)?,
            in_flight_full: get(counter::IN_FLIGHT_FULL)?,
            no_cookie: get(counter::NO_COOKIE)?,
            closed_in_timer: get(counter::CLOSED_IN_TIMER)?,
            probes_wire_only: get(counter::PROBES_WIRE_ONLY)?,
        })
    }
}
