use core::mem::size_of;

use super::{DefCell, BPF_MAP_TYPE_RINGBUF};
use crate::helpers;

/// `BPF_MAP_TYPE_RINGBUF` (Linux 5.8): variable-size records to user space, in
/// order across CPUs.
#[repr(transparent)]
pub struct RingBuf {
    def: DefCell,
}

// SAFETY: all access goes through kernel helpers.
unsafe impl Sync for RingBuf {}

impl RingBuf {
    /// A ring buffer of `byte_size` bytes (a power of two, multiple of the page size).
    ///
    /// Kernel: Linux 5.8 (ring buffers).
    pub const fn with_byte_size(byte_size: u32) -> Self {
        Self {
            def: DefCell::new(BPF_MAP_TYPE_RINGBUF, 0, 0, byte_size, 0),
        }
    }

    /// Copies `value` into the buffer. Errors (buffer full) are the helper's
    /// negative errno: user space counts them as lost events.
    ///
    /// Kernel: Linux 5.8 (`bpf_ringbuf_output`).
    #[inline(always)]
    pub fn output<T>(&self, value: &T, flags: u64) -> Result<(), i64> {
        // SAFETY: `value` is size_of::<T>() readable bytes.
        let ret = unsafe {
            helpers::ringbuf_output(self.def.ptr(), (value as *const T).cast(), size_of::<T>() as u64, flags)
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret)
        }
    }

    /// Copies `data` into the ring buffer as one record of its length (5.8):
    /// records whose size is known only at run time (built in a per-CPU
    /// scratch buffer), where [`RingBuf::reserve`] needs a constant.
    #[inline(always)]
    pub fn output_bytes(&self, data: &[u8], flags: u64) -> Result<(), i64> {
        // SAFETY: `data` is `data.len()` readable bytes.
        let ret = unsafe { helpers::ringbuf_output(self.def.ptr(), data.as_ptr().cast(), data.len() as u64, flags) };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret)
        }
    }

    /// Reserves room for one `T`, to fill in place and then submit or discard.
    /// `None` when the buffer is full.
    ///
    /// Kernel: Linux 5.8 (`bpf_ringbuf_reserve`).
    #[inline(always)]
    pub fn reserve<T>(&self, flags: u64) -> Option<RingBufEntry<T>> {
        // SAFETY: the size is a constant, as the verifier requires.
        let p = unsafe { helpers::ringbuf_reserve(self.def.ptr(), size_of::<T>() as u64, flags) };
        if p.is_null() {
            None
        } else {
            Some(RingBufEntry { ptr: p.cast() })
        }
    }
}

/// A reserved ring-buffer record. The verifier requires that it is submitted or
/// discarded on every path.
///
/// Kernel: Linux 5.8.
pub struct RingBufEntry<T> {
    ptr: *mut T,
}

impl<T> RingBufEntry<T> {
    /// Writes the record's value.
    ///
    /// Kernel: Linux 5.8 (a store into reserved memory).
    #[inline(always)]
    pub fn write(&mut self, value: T) {
        // SAFETY: the kernel reserved size_of::<T>() bytes at `ptr`.
        unsafe { self.ptr.write(value) }
    }

    /// The record's memory, to fill field by field.
    ///
    /// Kernel: Linux 5.8.
    #[inline(always)]
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.ptr
    }

    /// Publishes the record to user space.
    ///
    /// Kernel: Linux 5.8 (`bpf_ringbuf_submit`).
    #[inline(always)]
    pub fn submit(self, flags: u64) {
        // SAFETY: `ptr` came from ringbuf_reserve and is consumed once.
        unsafe { helpers::ringbuf_submit(self.ptr.cast(), flags) }
    }

    /// Drops the record.
    ///
    /// Kernel: Linux 5.8 (`bpf_ringbuf_discard`).
    #[inline(always)]
    pub fn discard(self, flags: u64) {
        // SAFETY: `ptr` came from ringbuf_reserve and is consumed once.
        unsafe { helpers::ringbuf_discard(self.ptr.cast(), flags) }
    }
}
