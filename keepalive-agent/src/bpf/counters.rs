//! The kernel programs' exact global counters: the per-CPU `COUNTERS`
//! array, one slot per [`KernelCounters`] field, summed over CPUs.

use aya::maps::{MapData, MapError, PerCpuArray};
use keepalive_common::{COUNTER_SLOTS, KernelCounters};

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

    pub fn read(&self) -> Result<KernelCounters, MapError> {
        let mut slots = [0u64; COUNTER_SLOTS as usize];
        for (i, slot) in (0..COUNTER_SLOTS).zip(slots.iter_mut()) {
            *slot = self.map.get(&i, 0)?.iter().sum();
        }
        Ok(KernelCounters::from_slots(slots))
    }
}
