//! Map definitions: what a `#[map]` static holds and the loader reads.

/// `struct bpf_map_def` of the legacy `maps` section: five little-endian `u32`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDef {
    /// `enum bpf_map_type` (see [`MapType`]).
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity (ring buffer: size in bytes, a power of two and page multiple).
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub map_flags: u32,
}

impl MapDef {
    /// Its size in the `maps` section.
    pub const SIZE: usize = 20;

    /// A definition of `map_type` (flags 0).
    pub const fn new(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            map_type: map_type as u32,
            key_size,
            value_size,
            max_entries,
            map_flags: 0,
        }
    }

    /// Reads a definition from the first [`MapDef::SIZE`] bytes of `bytes`
    /// (`None` if shorter).
    pub fn parse(bytes: &[u8]) -> Option<MapDef> {
        let word = |i: usize| -> Option<u32> {
            let b = bytes.get(i * 4..i * 4 + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        Some(MapDef {
            map_type: word(0)?,
            key_size: word(1)?,
            value_size: word(2)?,
            max_entries: word(3)?,
            map_flags: word(4)?,
        })
    }
}

/// The map types sonde uses (`enum bpf_map_type`), with the kernel that added each.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH` (3.19).
    Hash = 1,
    /// `BPF_MAP_TYPE_ARRAY` (3.19).
    Array = 2,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (4.3).
    PerfEventArray = 4,
    /// `BPF_MAP_TYPE_PERCPU_HASH` (4.6).
    PerCpuHash = 5,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (4.6).
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_STACK_TRACE` (4.6).
    StackTrace = 7,
    /// `BPF_MAP_TYPE_LRU_HASH` (4.10).
    LruHash = 9,
    /// `BPF_MAP_TYPE_RINGBUF` (5.8).
    RingBuf = 27,
}

impl MapType {
    /// The type of a raw `map_type`, if sonde knows it.
    pub fn from_raw(raw: u32) -> Option<MapType> {
        use MapType::*;
        [
            Hash,
            Array,
            PerfEventArray,
            PerCpuHash,
            PerCpuArray,
            StackTrace,
            LruHash,
            RingBuf,
        ]
        .into_iter()
        .find(|t| *t as u32 == raw)
    }

    /// Whether values are per CPU (user space reads one per possible CPU).
    pub fn per_cpu(self) -> bool {
        matches!(self, MapType::PerCpuHash | MapType::PerCpuArray)
    }
}

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;
/// `BPF_F_RDONLY_PROG`: programs may only read the map (`.rodata`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_refuses_short_input() {
        let d = MapDef::new(MapType::PerCpuArray, 4, 8, 100);
        let mut bytes = [0u8; 20];
        for (i, w) in [d.map_type, d.key_size, d.value_size, d.max_entries, d.map_flags]
            .iter()
            .enumerate()
        {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(MapDef::parse(&bytes), Some(d));
        assert_eq!(MapDef::parse(&bytes[..19]), None);
        assert_eq!(MapType::from_raw(6), Some(MapType::PerCpuArray));
        assert_eq!(MapType::from_raw(99), None);
    }
}
