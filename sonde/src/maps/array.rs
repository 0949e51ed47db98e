use std::marker::PhantomData;
use std::os::fd::AsFd;

use super::{bytes_of, from_bytes, possible_cpus, Map, MapError, Pod, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY};
use crate::sys::bpf;

/// A `BPF_MAP_TYPE_ARRAY` map (Linux 3.19) of `V`, indexed by `u32`.
pub struct Array<V> {
    map: Map,
    _v: PhantomData<V>,
}

impl<V: Pod> Array<V> {
    /// A typed view; fails if the map is not an array of `V`.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(&[BPF_MAP_TYPE_ARRAY], 4, size_of::<V>(), "an array of this value type")?;
        Ok(Array { map, _v: PhantomData })
    }

    /// Number of elements.
    pub fn len(&self) -> u32 {
        self.map.def().max_entries
    }

    /// Always false for a created array (`max_entries` is at least 1).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bounds(&self, index: u32) -> Result<(), MapError> {
        if index >= self.len() {
            return Err(MapError::OutOfBounds {
                name: self.map.name().to_string(),
                index,
                max: self.len(),
            });
        }
        Ok(())
    }

    /// Element `index`.
    pub fn get(&self, index: u32) -> Result<V, MapError> {
        self.bounds(index)?;
        let mut v = vec![0u8; size_of::<V>()];
        bpf::map_lookup_elem(self.map.as_fd(), &index.to_ne_bytes(), &mut v).map_err(|e| self.map.err(e))?;
        Ok(from_bytes(&v))
    }

    /// Sets element `index`.
    pub fn set(&self, index: u32, value: &V) -> Result<(), MapError> {
        self.bounds(index)?;
        bpf::map_update_elem(self.map.as_fd(), &index.to_ne_bytes(), bytes_of(value), 0).map_err(|e| self.map.err(e))
    }

    /// All elements in index order.
    pub fn to_vec(&self) -> Result<Vec<V>, MapError> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// A `BPF_MAP_TYPE_PERCPU_ARRAY` map (Linux 4.6): one `V` per possible CPU per index.
pub struct PerCpuArray<V> {
    map: Map,
    _v: PhantomData<V>,
}

impl<V: Pod> PerCpuArray<V> {
    /// A typed view; fails if the map is not a per-CPU array of `V`.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(
            &[BPF_MAP_TYPE_PERCPU_ARRAY],
            4,
            size_of::<V>(),
            "a per-CPU array of this value type",
        )?;
        Ok(PerCpuArray { map, _v: PhantomData })
    }

    /// Every CPU's value of element `index`.
    pub fn get(&self, index: u32) -> Result<Vec<V>, MapError> {
        let max = self.map.def().max_entries;
        if index >= max {
            return Err(MapError::OutOfBounds {
                name: self.map.name().to_string(),
                index,
                max,
            });
        }
        let stride = size_of::<V>().div_ceil(8) * 8;
        let mut buf = vec![0u8; stride * possible_cpus()];
        bpf::map_lookup_elem(self.map.as_fd(), &index.to_ne_bytes(), &mut buf).map_err(|e| self.map.err(e))?;
        Ok(buf.chunks(stride).map(from_bytes).collect())
    }
}
