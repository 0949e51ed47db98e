use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::{Map, MapError, Pod, BPF_MAP_TYPE_PERF_EVENT_ARRAY};
use crate::sys::ring::{self, Mapping};
use crate::sys::{bpf, perf};

/// A `BPF_MAP_TYPE_PERF_EVENT_ARRAY` map (Linux 4.4): the program writes
/// records with `bpf_perf_event_output` into the buffer of the CPU it runs on
/// (`sonde_ebpf::maps::PerfEventArray`); user space opens one [`PerfBuffer`]
/// per CPU. A ring buffer ([`super::RingBuf`], 5.8) is simpler and keeps order
/// across CPUs: this is for kernels or tools that want per-CPU buffers.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let object: sonde::Object = unimplemented!();
/// let events = sonde::maps::PerfEventArray::new(object.map("EVENTS")?)?;
/// let mut buffers = events.open_all(8)?; // 8 pages per CPU
/// for b in &mut buffers {
///     while let Some(record) = b.next() {
///         match record {
///             sonde::maps::PerfRecord::Sample(bytes) => println!("{} bytes", bytes.len()),
///             sonde::maps::PerfRecord::Lost(n) => println!("{n} lost"),
///         }
///     }
/// }
/// # Ok(()) }
/// ```
pub struct PerfEventArray {
    map: Map,
}

/// One record of a [`PerfBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerfRecord {
    /// What the program output (its raw bytes; the kernel pads to 8 bytes).
    Sample(Vec<u8>),
    /// Records the kernel dropped because the buffer was full.
    Lost(u64),
}

impl PerfRecord {
    /// A sample read as a `T` (the type the program output); `None` for a
    /// lost-records notice or a sample shorter than `T`.
    pub fn sample_as<T: Pod>(&self) -> Option<T> {
        match self {
            PerfRecord::Sample(bytes) if bytes.len() >= std::mem::size_of::<T>() => Some(super::from_bytes(bytes)),
            _ => None,
        }
    }
}

/// One CPU's buffer of a [`PerfEventArray`]: read while the event stays open.
pub struct PerfBuffer {
    _fd: OwnedFd,
    mapping: Mapping,
    page: usize,
    size: usize,
    cpu: u32,
}

// SAFETY: the mapping is only read (and its tail written) through &mut self.
unsafe impl Send for PerfBuffer {}

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// `struct perf_event_mmap_page`: `data_head` and `data_tail` offsets.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;

impl PerfEventArray {
    /// A view of a perf event array.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(&[BPF_MAP_TYPE_PERF_EVENT_ARRAY], 4, 4, "a perf event array")?;
        Ok(PerfEventArray { map })
    }

    /// Opens the buffer of `cpu` with `pages` data pages (a power of two) and
    /// points the map's slot for that CPU at it.
    pub fn open(&self, cpu: u32, pages: usize) -> Result<PerfBuffer, MapError> {
        if !pages.is_power_of_two() {
            return Err(MapError::Mismatch {
                name: self.map.name().to_string(),
                actual: format!("{pages} pages"),
                wanted: "a power of two".into(),
            });
        }
        let fd = perf::open_bpf_output(cpu).map_err(|e| self.map.err(e))?;
        let page = ring::page_size();
        let size = pages * page;
        let mapping = Mapping::shared(fd.as_fd(), page + size, 0, true).map_err(|e| self.map.err(e))?;
        let raw = fd.as_raw_fd() as u32;
        bpf::map_update_elem(self.map.as_fd(), &cpu.to_ne_bytes(), &raw.to_ne_bytes(), 0)
            .map_err(|e| self.map.err(e))?;
        perf::enable(fd.as_fd()).map_err(|e| self.map.err(e))?;
        Ok(PerfBuffer {
            _fd: fd,
            mapping,
            page,
            size,
            cpu,
        })
    }

    /// Opens a buffer for every CPU the map has a slot for (CPUs that are not
    /// online are skipped).
    pub fn open_all(&self, pages: usize) -> Result<Vec<PerfBuffer>, MapError> {
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
        let mut out = Vec::new();
        for cpu in 0..self.map.def().max_entries {
            if !online.is_empty() && !cpu_listed(&online, cpu) {
                continue;
            }
            out.push(self.open(cpu, pages)?);
        }
        Ok(out)
    }
}

/// Whether `cpu` is in a kernel CPU list (`0-3,6`).
fn cpu_listed(list: &str, cpu: u32) -> bool {
    list.trim().split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => a.parse().is_ok_and(|a: u32| a <= cpu) && b.parse().is_ok_and(|b: u32| cpu <= b),
        None => part.parse() == Ok(cpu),
    })
}

impl PerfBuffer {
    /// The CPU this buffer belongs to.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }

    /// A descriptor that polls readable when records arrive.
    pub fn as_poll_fd(&self) -> BorrowedFd<'_> {
        self._fd.as_fd()
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the metadata page is mapped for the buffer's life; 8-aligned.
        unsafe { &*(self.mapping.ptr().add(offset) as *const AtomicU64) }
    }

    /// `len` bytes of the data area from position `pos`, across its end.
    fn copy(&self, pos: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            let at = (pos as usize + i) % self.size;
            // SAFETY: `at` is inside the data area, mapped after the metadata page.
            out.push(unsafe { *self.mapping.ptr().add(self.page + at) });
        }
        out
    }

    /// The next record, or `None` when the buffer is empty now.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<PerfRecord> {
        loop {
            let head = self.word(DATA_HEAD).load(Ordering::Acquire);
            let tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
            if tail >= head {
                return None;
            }
            fence(Ordering::Acquire);
            let header = self.copy(tail, 8);
            let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
            let size = usize::from(u16::from_ne_bytes([header[6], header[7]]));
            if size < 8 {
                // A corrupt header: drop what is there rather than loop.
                self.word(DATA_TAIL).store(head, Ordering::Release);
                return None;
            }
            let body = self.copy(tail + 8, size - 8);
            self.word(DATA_TAIL).store(tail + size as u64, Ordering::Release);
            match kind {
                PERF_RECORD_SAMPLE if body.len() >= 4 => {
                    let n = u32::from_ne_bytes([body[0], body[1], body[2], body[3]]) as usize;
                    return Some(PerfRecord::Sample(body[4..(4 + n).min(body.len())].to_vec()));
                }
                PERF_RECORD_LOST if body.len() >= 16 => {
                    let mut lost = [0u8; 8];
                    lost.copy_from_slice(&body[8..16]);
                    return Some(PerfRecord::Lost(u64::from_ne_bytes(lost)));
                }
                _ => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_listed;

    #[test]
    fn cpu_lists() {
        assert!(cpu_listed("0-3,6\n", 2));
        assert!(cpu_listed("0-3,6", 6));
        assert!(!cpu_listed("0-3,6", 5));
        assert!(cpu_listed("0", 0));
    }
}
