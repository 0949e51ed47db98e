//! The perf event array ([`PerfEventArray`]): per-CPU output buffers.

use core::marker::PhantomData;
use core::mem::size_of;

use super::{DefCell, BPF_MAP_TYPE_PERF_EVENT_ARRAY};
use crate::{helpers, EbpfContext};

/// `BPF_F_CURRENT_CPU`: output into the buffer of the CPU the program runs on.
///
/// Kernel: Linux 4.4.
pub const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;

/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (Linux 4.4): records of type `T` into
/// per-CPU perf buffers, read by `sonde::maps::PerfEventArray`. One slot per
/// CPU, sized by the loader. [`crate::maps::RingBuf`] (5.8) is simpler and
/// keeps order across CPUs.
#[repr(transparent)]
pub struct PerfEventArray<T> {
    def: DefCell,
    _t: PhantomData<T>,
}

// SAFETY: all access goes through kernel helpers.
unsafe impl<T: Sync> Sync for PerfEventArray<T> {}

impl<T> PerfEventArray<T> {
    /// A perf event array with a slot per CPU (the loader sizes it).
    ///
    /// Kernel: Linux 4.4.
    pub const fn new() -> Self {
        PerfEventArray {
            def: DefCell::new(BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 0, 0),
            _t: PhantomData,
        }
    }

    /// `bpf_perf_event_output` (Linux 4.4): copies `value` into this CPU's
    /// buffer. Errors (no reader on this CPU, buffer full) are the helper's
    /// negative errno.
    #[inline(always)]
    pub fn output(&self, ctx: &impl EbpfContext, value: &T) -> Result<(), i64> {
        // SAFETY: `value` is size_of::<T>() readable bytes; ctx is the program's.
        let ret = unsafe {
            helpers::perf_event_output(
                ctx.as_ptr(),
                self.def.ptr(),
                BPF_F_CURRENT_CPU,
                (value as *const T).cast(),
                size_of::<T>() as u64,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(ret)
        }
    }
}

impl<T> Default for PerfEventArray<T> {
    fn default() -> Self {
        Self::new()
    }
}
