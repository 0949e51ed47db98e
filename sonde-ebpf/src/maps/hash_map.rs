use core::marker::PhantomData;

use super::{lookup, DefCell, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST};
use crate::helpers;

macro_rules! hash_map {
    ($(#[$doc:meta])* $name:ident, $map_type:expr) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub struct $name<K, V> {
            def: DefCell,
            _kv: PhantomData<(K, V)>,
        }

        // SAFETY: all access goes through kernel helpers, which synchronise.
        unsafe impl<K: Sync, V: Sync> Sync for $name<K, V> {}

        impl<K, V> $name<K, V> {
            /// A map with room for `max_entries` keys.
            ///
            /// Kernel: as the map type (hash 3.19, per-CPU hash 4.6, LRU 4.10).
            pub const fn with_max_entries(max_entries: u32) -> Self {
                Self::with_flags(max_entries, 0)
            }

            /// A map with room for `max_entries` keys and `BPF_F_*` creation flags.
            ///
            /// Kernel: as the map type; each flag has its own (`BPF_F_NO_PREALLOC` 4.6).
            pub const fn with_flags(max_entries: u32, flags: u32) -> Self {
                Self {
                    def: DefCell::new(
                        $map_type,
                        core::mem::size_of::<K>(),
                        core::mem::size_of::<V>(),
                        max_entries,
                        flags,
                    ),
                    _kv: PhantomData,
                }
            }

            /// A pointer to the value of `key` (this CPU's copy for per-CPU maps).
            ///
            /// Kernel: Linux 3.19 (`bpf_map_lookup_elem`).
            #[inline(always)]
            pub fn get_ptr_mut(&self, key: &K) -> Option<*mut V> {
                lookup(&self.def, key)
            }

            /// A copy of the value of `key`.
            ///
            /// Kernel: Linux 3.19 (`bpf_map_lookup_elem`).
            #[inline(always)]
            pub fn get(&self, key: &K) -> Option<V>
            where
                V: Copy,
            {
                // SAFETY: the kernel returned a pointer to a live value of size V.
                self.get_ptr_mut(key).map(|p| unsafe { *p })
            }

            /// Inserts or replaces the value of `key`; `flags` is `BPF_ANY`,
            /// `BPF_NOEXIST` or `BPF_EXIST`. Errors are the helper's negative errno.
            ///
            /// Kernel: Linux 3.19 (`bpf_map_update_elem`).
            #[inline(always)]
            pub fn insert(&self, key: &K, value: &V, flags: u64) -> Result<(), i64> {
                // SAFETY: key and value point to values of the map's sizes.
                let ret = unsafe {
                    helpers::map_update_elem(
                        self.def.ptr(),
                        (key as *const K).cast(),
                        (value as *const V).cast(),
                        flags,
                    )
                };
                if ret == 0 { Ok(()) } else { Err(ret) }
            }

            /// Removes `key`. Errors are the helper's negative errno.
            ///
            /// Kernel: Linux 3.19 (`bpf_map_delete_elem`).
            #[inline(always)]
            pub fn remove(&self, key: &K) -> Result<(), i64> {
                // SAFETY: key points to a value of the map's key size.
                let ret = unsafe { helpers::map_delete_elem(self.def.ptr(), (key as *const K).cast()) };
                if ret == 0 { Ok(()) } else { Err(ret) }
            }
        }

        impl<K> $name<K, u64> {
            /// Adds one to the counter of `key`, creating it at 1. Atomic.
            ///
            /// Kernel: Linux 3.19 (lookup, update and atomic add).
            #[inline(always)]
            pub fn increment(&self, key: &K) {
                self.add(key, 1)
            }

            /// Adds `n` to the counter of `key`, creating it at `n`. Atomic.
            ///
            /// Kernel: Linux 3.19 (lookup, update and atomic add).
            #[inline(always)]
            pub fn add(&self, key: &K, n: u64) {
                if let Some(p) = self.get_ptr_mut(key) {
                    // SAFETY: `p` came from this map\'s lookup.
                    unsafe { super::atomic_add(p, n) };
                } else if self.insert(key, &n, BPF_NOEXIST).is_err() {
                    // Another CPU created it between lookup and insert.
                    if let Some(p) = self.get_ptr_mut(key) {
                        // SAFETY: `p` came from this map\'s lookup.
                        unsafe { super::atomic_add(p, n) };
                    }
                }
            }
        }
    };
}

hash_map!(
    /// `BPF_MAP_TYPE_HASH` (Linux 3.19): key to value, shared by all CPUs.
    HashMap,
    BPF_MAP_TYPE_HASH
);
hash_map!(
    /// `BPF_MAP_TYPE_PERCPU_HASH` (Linux 4.6): one value per CPU per key; user space
    /// reads all CPUs' values.
    PerCpuHashMap,
    BPF_MAP_TYPE_PERCPU_HASH
);
hash_map!(
    /// `BPF_MAP_TYPE_LRU_HASH` (Linux 4.10): a hash map that evicts the least
    /// recently used key when full, instead of refusing inserts (for keys without
    /// bound: pids, addresses, strings).
    LruHashMap,
    BPF_MAP_TYPE_LRU_HASH
);
