//! Map types shared with user space. Declare each as a `#[map]` static.
//!
//! The static holds a [`MapDef`] the user-space loader reads from the `maps` section
//! to create the map; every access through it becomes a relocated map reference.

mod array;
mod hash_map;
pub mod perf_event_array;
mod ring_buf;
pub mod stack_trace;

pub use array::{Array, PerCpuArray};
pub use hash_map::{HashMap, LruHashMap, PerCpuHashMap};
pub use perf_event_array::PerfEventArray;
pub use ring_buf::{RingBuf, RingBufEntry};
pub use stack_trace::StackTrace;

use core::cell::UnsafeCell;
use core::ffi::c_void;

pub use sonde_abi::map::{MapDef, BPF_ANY, BPF_EXIST, BPF_NOEXIST};
use sonde_abi::MapType;

/// `BPF_MAP_TYPE_HASH` (Linux 3.19).
pub const BPF_MAP_TYPE_HASH: u32 = MapType::Hash as u32;
/// `BPF_MAP_TYPE_ARRAY` (Linux 3.19).
pub const BPF_MAP_TYPE_ARRAY: u32 = MapType::Array as u32;
/// `BPF_MAP_TYPE_PERCPU_HASH` (Linux 4.6).
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = MapType::PerCpuHash as u32;
/// `BPF_MAP_TYPE_PERCPU_ARRAY` (Linux 4.6).
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = MapType::PerCpuArray as u32;
/// `BPF_MAP_TYPE_LRU_HASH` (Linux 4.10).
pub const BPF_MAP_TYPE_LRU_HASH: u32 = MapType::LruHash as u32;
/// `BPF_MAP_TYPE_STACK_TRACE` (Linux 4.6).
pub const BPF_MAP_TYPE_STACK_TRACE: u32 = MapType::StackTrace as u32;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (Linux 4.4).
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = MapType::PerfEventArray as u32;
/// `BPF_MAP_TYPE_RINGBUF` (Linux 5.8).
pub const BPF_MAP_TYPE_RINGBUF: u32 = MapType::RingBuf as u32;

/// The definition cell every map type wraps: the helpers take its address.
#[repr(transparent)]
pub(crate) struct DefCell(UnsafeCell<MapDef>);

// SAFETY: the cell is never written by the program; the kernel replaces its address
// with the map's at load time.
unsafe impl Sync for DefCell {}

impl DefCell {
    pub(crate) const fn new(
        map_type: u32,
        key_size: usize,
        value_size: usize,
        max_entries: u32,
        map_flags: u32,
    ) -> Self {
        DefCell(UnsafeCell::new(MapDef {
            map_type,
            key_size: key_size as u32,
            value_size: value_size as u32,
            max_entries,
            map_flags,
        }))
    }

    #[inline(always)]
    pub(crate) fn ptr(&self) -> *mut c_void {
        self.0.get().cast()
    }
}

/// Shared lookup used by hash maps and arrays.
#[inline(always)]
pub(crate) fn lookup<K, V>(def: &DefCell, key: &K) -> Option<*mut V> {
    // SAFETY: `def` is a map reference and `key` points to a key of the map's size.
    let p = unsafe { crate::helpers::map_lookup_elem(def.ptr(), (key as *const K).cast()) };
    if p.is_null() {
        None
    } else {
        Some(p.cast())
    }
}

/// Atomically adds `n` to the u64 at `p`, a value in map memory from a lookup
/// (BPF `lock xadd`).
///
/// Kernel: any (`BPF_XADD` is as old as eBPF maps, 3.19).
///
/// # Safety
/// `p` must be a live, 8-aligned `u64` in map memory: a pointer a map lookup
/// (`get_ptr_mut`) returned.
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, n: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: `p` is a live, aligned u64 in map memory (checked by the verifier).
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {n}", p = in(reg) p, n = in(reg) n)
    };
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above; host builds exist for documentation and checks only.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p).fetch_add(n, core::sync::atomic::Ordering::Relaxed);
    }
}
