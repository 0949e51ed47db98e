use std::marker::PhantomData;
use std::os::fd::AsFd;

use super::{
    bytes_of, from_bytes, possible_cpus, Map, MapError, Pod, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH,
    BPF_MAP_TYPE_PERCPU_HASH,
};
use crate::sys::bpf;

/// A `BPF_MAP_TYPE_HASH` map (Linux 3.19), or `BPF_MAP_TYPE_LRU_HASH` (4.10),
/// seen as `K -> V`.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let object: sonde::Object = unimplemented!();
/// let counts = sonde::maps::HashMap::<u64, u64>::new(object.map("COUNTS")?)?;
/// for entry in counts.iter()? {
///     let (cookie, count) = entry?;
///     println!("{cookie}: {count}");
/// }
/// # Ok(()) }
/// ```
pub struct HashMap<K, V> {
    map: Map,
    _kv: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> HashMap<K, V> {
    /// A typed view; fails if the map is not a hash of `K` to `V`.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(
            &[BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH],
            size_of::<K>(),
            size_of::<V>(),
            "a hash map of these key and value types",
        )?;
        Ok(HashMap { map, _kv: PhantomData })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Result<Option<V>, MapError> {
        let mut v = vec![0u8; size_of::<V>()];
        let found = bpf::map_lookup_elem(self.map.as_fd(), bytes_of(key), &mut v).map_err(|e| self.map.err(e))?;
        Ok(found.then(|| from_bytes(&v)))
    }

    /// Inserts or replaces `key`.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), MapError> {
        bpf::map_update_elem(self.map.as_fd(), bytes_of(key), bytes_of(value), 0).map_err(|e| self.map.err(e))
    }

    /// Removes `key`; `false` if it was absent.
    pub fn remove(&self, key: &K) -> Result<bool, MapError> {
        bpf::map_delete_elem(self.map.as_fd(), bytes_of(key)).map_err(|e| self.map.err(e))
    }

    /// All keys (a snapshot walk; entries changing meanwhile may be missed or seen twice).
    pub fn keys(&self) -> Result<Vec<K>, MapError> {
        keys::<K>(&self.map)
    }

    /// All entries: a failed key walk is an error, not an empty map; a failed
    /// lookup is an item's error; entries that vanish during the walk are
    /// skipped.
    pub fn iter(&self) -> Result<impl Iterator<Item = Result<(K, V), MapError>> + '_, MapError> {
        let keys = self.keys()?;
        Ok(keys
            .into_iter()
            .filter_map(|k| self.get(&k).map(|v| v.map(|v| (k, v))).transpose()))
    }
}

pub(crate) fn keys<K: Pod>(map: &Map) -> Result<Vec<K>, MapError> {
    let mut out = Vec::new();
    let mut next = vec![0u8; size_of::<K>()];
    let mut prev: Option<Vec<u8>> = None;
    while bpf::map_get_next_key(map.as_fd(), prev.as_deref(), &mut next).map_err(|e| map.err(e))? {
        out.push(from_bytes(&next));
        prev = Some(next.clone());
    }
    Ok(out)
}

/// A `BPF_MAP_TYPE_PERCPU_HASH` map (Linux 4.6): one `V` per possible CPU per key.
pub struct PerCpuHashMap<K, V> {
    map: Map,
    _kv: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> PerCpuHashMap<K, V> {
    /// A typed view; fails if the map is not a per-CPU hash of `K` to `V`.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(
            &[BPF_MAP_TYPE_PERCPU_HASH],
            size_of::<K>(),
            size_of::<V>(),
            "a per-CPU hash map of these types",
        )?;
        Ok(PerCpuHashMap { map, _kv: PhantomData })
    }

    /// Every CPU's value of `key`, if present.
    pub fn get(&self, key: &K) -> Result<Option<Vec<V>>, MapError> {
        // The kernel copies each CPU's value rounded up to 8 bytes.
        let stride = size_of::<V>().div_ceil(8) * 8;
        let mut buf = vec![0u8; stride * possible_cpus()];
        let found = bpf::map_lookup_elem(self.map.as_fd(), bytes_of(key), &mut buf).map_err(|e| self.map.err(e))?;
        Ok(found.then(|| buf.chunks(stride).map(from_bytes).collect()))
    }

    /// All keys.
    pub fn keys(&self) -> Result<Vec<K>, MapError> {
        keys::<K>(&self.map)
    }
}
