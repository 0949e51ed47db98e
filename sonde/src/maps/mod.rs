//! Maps: created from the object's definitions, read and written from user space.
//!
//! [`Map`] is the untyped handle an object (`sonde::Object`) hands out; the typed views
//! ([`HashMap`], [`Array`], [`PerCpuArray`], [`PerCpuHashMap`], [`RingBuf`]) check the
//! kernel map's type and sizes against their Rust types when made.

mod array;
#[cfg(feature = "tokio")]
mod async_io;
mod created;
mod hash_map;
mod perf_event_array;
mod ring_buf;
mod stack_trace;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

pub use array::{Array, PerCpuArray};
#[cfg(feature = "tokio")]
pub use async_io::{AsyncPerfBuffer, AsyncRingBuf};
pub(crate) use created::ObjectMaps;
pub use hash_map::{HashMap, PerCpuHashMap};
pub use perf_event_array::{PerfBuffer, PerfEventArray, PerfRecord};
pub use ring_buf::{RingBuf, RingBufItem};
pub use stack_trace::{BuildIdFrame, StackTraceMap};

use crate::object_file::MapDef;
use crate::sys::SyscallError;

pub use sonde_abi::MapType;

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = MapType::Hash as u32;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = MapType::Array as u32;
/// `BPF_MAP_TYPE_PERCPU_HASH`.
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = MapType::PerCpuHash as u32;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = MapType::PerCpuArray as u32;
/// `BPF_MAP_TYPE_RINGBUF`.
pub const BPF_MAP_TYPE_RINGBUF: u32 = MapType::RingBuf as u32;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const BPF_MAP_TYPE_LRU_HASH: u32 = MapType::LruHash as u32;
/// `BPF_MAP_TYPE_STACK_TRACE`.
pub const BPF_MAP_TYPE_STACK_TRACE: u32 = MapType::StackTrace as u32;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = MapType::PerfEventArray as u32;

/// Errors of map access.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The object has no map of that name.
    #[error("no map named `{0}` in the object")]
    NotFound(String),
    /// The kernel map does not match the Rust view asked for.
    #[error("map `{name}` is {actual}, not {wanted}")]
    Mismatch {
        /// Map name.
        name: String,
        /// What the definition says.
        actual: String,
        /// What the view needs.
        wanted: String,
    },
    /// Index past `max_entries`.
    #[error("index {index} out of bounds for map `{name}` ({max} entries)")]
    OutOfBounds {
        /// Map name.
        name: String,
        /// The index.
        index: u32,
        /// The capacity.
        max: u32,
    },
    /// A record shorter than the type it is read as.
    #[error(
        "map `{name}`: a record of {len} bytes cannot be read as {wanted} ({size} bytes): the eBPF object \
         was built from another version of the type; rebuild it (sonde-build watches every file the eBPF \
         crate includes by `#[path]` or `include!`: share the type that way, or name it with \
         `EbpfCrate::watch`)"
    )]
    RecordSize {
        /// Map name.
        name: String,
        /// The record's length.
        len: usize,
        /// The type asked for.
        wanted: &'static str,
        /// Its size.
        size: usize,
    },
    /// The kernel refused.
    #[error("map `{name}`: {source}")]
    Syscall {
        /// Map name.
        name: String,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
}

pub use sonde_abi::Pod;
/// `#[derive(Pod)]` for `#[repr(C)]` structs without padding (checked at compile time).
///
/// ```
/// use sonde::Pod;
/// #[derive(Clone, Copy, Pod)]
/// #[repr(C)]
/// struct Event { pid: u32, cookie: u32, ts_ns: u64, comm: [u8; 16] }
/// ```
///
/// Padding is refused (here 7 bytes after `flag`):
///
/// ```compile_fail
/// use sonde::Pod;
/// #[derive(Clone, Copy, Pod)]
/// #[repr(C)]
/// struct Padded { flag: u8, ts_ns: u64 }
/// ```
///
/// and so is a layout Rust may reorder:
///
/// ```compile_fail
/// use sonde::Pod;
/// #[derive(Clone, Copy, Pod)]
/// struct NotReprC { a: u64 }
/// ```
pub use sonde_macros::Pod;

pub(crate) fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod, so all its bytes may be read.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), std::mem::size_of::<T>()) }
}

pub(crate) fn from_bytes<T: Pod>(b: &[u8]) -> T {
    assert!(b.len() >= std::mem::size_of::<T>());
    // SAFETY: T is Pod and `b` has at least size_of::<T>() bytes.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
}

pub(crate) struct MapInner {
    pub(crate) fd: OwnedFd,
    pub(crate) name: String,
    pub(crate) def: MapDef,
}

/// A map the kernel holds, shared by the object and the views made from it.
#[derive(Clone)]
pub struct Map {
    pub(crate) inner: Arc<MapInner>,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("name", &self.inner.name)
            .field("def", &self.inner.def)
            .finish()
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

impl Map {
    pub(crate) fn new(fd: OwnedFd, name: String, def: MapDef) -> Self {
        Map {
            inner: Arc::new(MapInner { fd, name, def }),
        }
    }

    /// The map's name in the object.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The definition it was created from.
    pub fn def(&self) -> MapDef {
        self.inner.def
    }

    /// Clears the slot of `cookie` in a map keyed by cookie: zeroes an array
    /// element (every CPU's, for a per-CPU array), deletes a hash key (4- or
    /// 8-byte keys).
    pub fn clear_slot(&self, cookie: u64) -> Result<(), MapError> {
        let d = self.inner.def;
        let fd = self.inner.fd.as_fd();
        match MapType::from_raw(d.map_type) {
            Some(t @ (MapType::Array | MapType::PerCpuArray)) => {
                let index = u32::try_from(cookie).map_err(|_| MapError::OutOfBounds {
                    name: self.inner.name.clone(),
                    index: u32::MAX,
                    max: d.max_entries,
                })?;
                let cpus = if t.per_cpu() { possible_cpus() } else { 1 };
                // Per-CPU values are 8-byte aligned per CPU.
                let stride = (d.value_size as usize).next_multiple_of(if t.per_cpu() { 8 } else { 1 });
                let zeros = vec![0u8; stride * cpus];
                crate::sys::bpf::map_update_elem(fd, &index.to_ne_bytes(), &zeros, 0).map_err(|e| self.err(e))
            }
            Some(MapType::Hash | MapType::PerCpuHash | MapType::LruHash) => {
                let key = cookie.to_ne_bytes();
                let key = &key[..(d.key_size as usize).min(8)];
                crate::sys::bpf::map_delete_elem(fd, key)
                    .map(drop)
                    .map_err(|e| self.err(e))
            }
            _ => Err(MapError::Mismatch {
                name: self.inner.name.clone(),
                actual: format!("type {}", d.map_type),
                wanted: "an array or hash keyed by cookie".into(),
            }),
        }
    }

    pub(crate) fn check(&self, map_types: &[u32], key: usize, value: usize, wanted: &str) -> Result<(), MapError> {
        let d = self.inner.def;
        if !map_types.contains(&d.map_type) || d.key_size as usize != key || d.value_size as usize != value {
            return Err(MapError::Mismatch {
                name: self.inner.name.clone(),
                actual: format!(
                    "type {} with {}-byte keys and {}-byte values",
                    d.map_type, d.key_size, d.value_size
                ),
                wanted: wanted.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn err(&self, source: SyscallError) -> MapError {
        MapError::Syscall {
            name: self.inner.name.clone(),
            source,
        }
    }
}

/// The number of possible CPUs (per-CPU maps hold one value per possible CPU).
pub fn possible_cpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/possible")
            .ok()
            .and_then(|s| parse_cpu_list(s.trim()))
            .unwrap_or(1)
    })
}

fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut max = 0usize;
    for part in s.split(',') {
        let last = part.split('-').next_back()?.parse::<usize>().ok()?;
        max = max.max(last);
    }
    Some(max + 1)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
