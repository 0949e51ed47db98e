//! The stack trace map ([`StackTrace`]) and the flags of `bpf_get_stackid`.

use super::{DefCell, BPF_MAP_TYPE_STACK_TRACE};
use crate::{helpers, EbpfContext};

/// Frames kept per stack (the kernel's default `PERF_MAX_STACK_DEPTH`).
///
/// Kernel: Linux 4.6 (stack trace maps).
pub const MAX_DEPTH: usize = 127;

/// `BPF_F_USER_STACK`: the user-space stack of the probed task.
///
/// Kernel: Linux 4.6.
pub const BPF_F_USER_STACK: u64 = 1 << 8;
/// `BPF_F_STACK_BUILD_ID` (map flag): frames stored as (build id, file offset).
///
/// Kernel: Linux 4.17.
pub const BPF_F_STACK_BUILD_ID: u32 = 1 << 5;

/// Bytes of one frame of a build-id stack map (`struct bpf_stack_build_id`).
pub const BUILD_ID_FRAME: usize = 32;

/// `BPF_F_REUSE_STACKID`: when the bucket is taken by another stack, replace it.
///
/// Kernel: Linux 4.6.
pub const BPF_F_REUSE_STACKID: u64 = 1 << 10;

/// `BPF_MAP_TYPE_STACK_TRACE` (Linux 4.6): stacks stored by the kernel, each
/// under an id that [`StackTrace::get_stackid`] returns; user space reads a
/// stack by id (`sonde::maps::StackTraceMap`) and symbolizes it.
///
/// ```no_run
/// use sonde_ebpf::maps::{stack_trace::BPF_F_USER_STACK, HashMap, StackTrace};
/// use sonde_ebpf::{map, uprobe, ProbeContext};
///
/// #[map]
/// static STACKS: StackTrace = StackTrace::with_max_entries(1024);
/// #[map]
/// static BY_STACK: HashMap<i64, u64> = HashMap::with_max_entries(1024);
///
/// #[uprobe]
/// fn by_stack(ctx: ProbeContext) -> u32 {
///     if let Ok(id) = STACKS.get_stackid(&ctx, BPF_F_USER_STACK) {
///         BY_STACK.increment(&id);
///     }
///     0
/// }
/// ```
#[repr(transparent)]
pub struct StackTrace {
    def: DefCell,
}

// SAFETY: all access goes through kernel helpers, which synchronise.
unsafe impl Sync for StackTrace {}

impl StackTrace {
    /// A map with room for `max_entries` distinct stacks of [`MAX_DEPTH`] frames.
    ///
    /// Kernel: Linux 4.6.
    pub const fn with_max_entries(max_entries: u32) -> Self {
        StackTrace {
            def: DefCell::new(BPF_MAP_TYPE_STACK_TRACE, 4, MAX_DEPTH * 8, max_entries, 0),
        }
    }

    /// A map with room for `max_entries` distinct stacks of `depth` frames
    /// (instruction addresses).
    ///
    /// Kernel: Linux 4.6.
    pub const fn with_depth(max_entries: u32, depth: usize) -> Self {
        StackTrace {
            def: DefCell::new(BPF_MAP_TYPE_STACK_TRACE, 4, depth * 8, max_entries, 0),
        }
    }

    /// A map whose frames the kernel stores as (build id, file offset) of the
    /// file mapped there, `depth` frames a stack: user space can name the
    /// functions of processes that have exited since (user stacks only).
    ///
    /// Kernel: Linux 4.17.
    pub const fn with_build_ids(max_entries: u32, depth: usize) -> Self {
        StackTrace {
            def: DefCell::new(
                BPF_MAP_TYPE_STACK_TRACE,
                4,
                depth * BUILD_ID_FRAME,
                max_entries,
                BPF_F_STACK_BUILD_ID,
            ),
        }
    }

    /// `bpf_get_stackid` (Linux 4.6): stores the current stack (with
    /// [`BPF_F_USER_STACK`], the user-space one) and returns its id. Errors are
    /// the helper's negative errno (`-EEXIST`: the bucket holds another stack
    /// and [`BPF_F_REUSE_STACKID`] was not given; `-ENOMEM`: the map is full).
    #[inline(always)]
    pub fn get_stackid(&self, ctx: &impl EbpfContext, flags: u64) -> Result<i64, i64> {
        // SAFETY: `ctx` is the program's context and the map is a stack trace map.
        let ret = unsafe { helpers::get_stackid(ctx.as_ptr(), self.def.ptr(), flags) };
        if ret < 0 {
            Err(ret)
        } else {
            Ok(ret)
        }
    }
}
