use core::marker::PhantomData;

use super::{lookup, DefCell, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY};

macro_rules! array {
    ($(#[$doc:meta])* $name:ident, $map_type:expr) => {
        $(#[$doc])*
        #[repr(transparent)]
        pub struct $name<V> {
            def: DefCell,
            _v: PhantomData<V>,
        }

        // SAFETY: all access goes through kernel helpers.
        unsafe impl<V: Sync> Sync for $name<V> {}

        impl<V> $name<V> {
            /// An array of `max_entries` zeroed values, indexed by `u32`.
            ///
            /// Kernel: as the map type (arrays 3.19, per-CPU arrays 4.6).
            pub const fn with_max_entries(max_entries: u32) -> Self {
                Self {
                    def: DefCell::new($map_type, 4, core::mem::size_of::<V>(), max_entries, 0),
                    _v: PhantomData,
                }
            }

            /// A pointer to element `index` (this CPU's copy for per-CPU arrays);
            /// `None` out of bounds.
            ///
            /// Kernel: Linux 3.19 (`bpf_map_lookup_elem`).
            #[inline(always)]
            pub fn get_ptr_mut(&self, index: u32) -> Option<*mut V> {
                lookup(&self.def, &index)
            }

            /// A copy of element `index`.
            ///
            /// Kernel: Linux 3.19 (`bpf_map_lookup_elem`).
            #[inline(always)]
            pub fn get(&self, index: u32) -> Option<V>
            where
                V: Copy,
            {
                // SAFETY: the kernel returned a pointer to a live value of size V.
                self.get_ptr_mut(index).map(|p| unsafe { *p })
            }
        }

        impl $name<u64> {
            /// Adds `n` to counter `index` (atomic; per-CPU arrays need no atomics
            /// but the cost is the same on one CPU's cache line).
            ///
            /// Kernel: Linux 3.19 (lookup and atomic add).
            #[inline(always)]
            pub fn add(&self, index: u32, n: u64) {
                if let Some(p) = self.get_ptr_mut(index) {
                    // SAFETY: `p` came from this map\'s lookup.
                    unsafe { super::atomic_add(p, n) };
                }
            }
        }
    };
}

array!(
    /// `BPF_MAP_TYPE_ARRAY` (Linux 3.19): fixed-size array shared by all CPUs.
    Array,
    BPF_MAP_TYPE_ARRAY
);
array!(
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (Linux 4.6): one array per CPU.
    PerCpuArray,
    BPF_MAP_TYPE_PERCPU_ARRAY
);
