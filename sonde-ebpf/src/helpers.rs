//! Kernel helper calls (`bpf_*` functions), by their stable helper ids.
//!
//! Each wrapper names the first mainline kernel that has the helper. Helpers are
//! called through a function pointer whose address is the helper id: the BPF
//! backend turns that into `call <id>`.
//!
//! # Safety
//!
//! The `unsafe` helpers take raw pointers: each must point to memory of the size
//! the helper reads or writes (map definitions from `#[map]` statics, keys and
//! values of the map's sizes, a context pointer from the kernel). The verifier
//! rejects a program that breaks these rules, so they never fail at run time.

#![allow(clippy::missing_safety_doc)] // documented once for the module, above.

use core::ffi::c_void;
use core::mem::{transmute, MaybeUninit};

use sonde_abi::helper as id;

macro_rules! helper {
    ($id:expr, fn($($arg:ty),*) -> $ret:ty) => {{
        #[allow(unused_unsafe)]
        // SAFETY: on the BPF target a call to address `$id` is the helper call.
        let f: unsafe extern "C" fn($($arg),*) -> $ret = unsafe { transmute($id as usize) };
        f
    }};
}

/// Helper id of `bpf_get_attach_cookie` (Linux 5.15). sonde's user space
/// rewrites calls to it on kernels without cookies, so keep it a direct call.
pub const BPF_FUNC_GET_ATTACH_COOKIE: u32 = id::GET_ATTACH_COOKIE;

/// `bpf_map_lookup_elem` (3.19).
#[inline(always)]
pub unsafe fn map_lookup_elem(map: *mut c_void, key: *const c_void) -> *mut c_void {
    helper!(id::MAP_LOOKUP_ELEM, fn(*mut c_void, *const c_void) -> *mut c_void)(map, key)
}

/// `bpf_map_update_elem` (3.19).
#[inline(always)]
pub unsafe fn map_update_elem(map: *mut c_void, key: *const c_void, value: *const c_void, flags: u64) -> i64 {
    helper!(
        id::MAP_UPDATE_ELEM,
        fn(*mut c_void, *const c_void, *const c_void, u64) -> i64
    )(map, key, value, flags)
}

/// `bpf_map_delete_elem` (3.19).
#[inline(always)]
pub unsafe fn map_delete_elem(map: *mut c_void, key: *const c_void) -> i64 {
    helper!(id::MAP_DELETE_ELEM, fn(*mut c_void, *const c_void) -> i64)(map, key)
}

/// `bpf_ktime_get_ns` (4.1): monotonic time in nanoseconds.
#[inline(always)]
pub fn ktime_get_ns() -> u64 {
    // SAFETY: no arguments, no memory touched.
    unsafe { helper!(id::KTIME_GET_NS, fn() -> u64)() }
}

/// `bpf_get_smp_processor_id` (4.1).
#[inline(always)]
pub fn smp_processor_id() -> u32 {
    // SAFETY: no arguments, no memory touched.
    unsafe { helper!(id::GET_SMP_PROCESSOR_ID, fn() -> u32)() }
}

/// `bpf_get_current_pid_tgid` (4.2): `tgid << 32 | pid` (process id high, thread id low).
#[inline(always)]
pub fn current_pid_tgid() -> u64 {
    // SAFETY: no arguments, no memory touched.
    unsafe { helper!(id::GET_CURRENT_PID_TGID, fn() -> u64)() }
}

/// `bpf_get_current_cgroup_id` (4.18): the id of the current task's cgroup in
/// the cgroup v2 hierarchy (the inode number of its directory there).
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: no arguments, no memory touched.
    unsafe { helper!(id::GET_CURRENT_CGROUP_ID, fn() -> u64)() }
}

/// `bpf_get_current_uid_gid` (4.2): `gid << 32 | uid`.
#[inline(always)]
pub fn current_uid_gid() -> u64 {
    // SAFETY: no arguments, no memory touched.
    unsafe { helper!(id::GET_CURRENT_UID_GID, fn() -> u64)() }
}

/// `bpf_get_current_comm` (4.2): the current task's command name, NUL padded
/// (every byte after the first NUL is zero, on every kernel: comparable as
/// two words and usable as a map key).
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    // Zeroed as two words (not a `memset` call, which unoptimised builds make
    // of an array zeroing and the verifier refuses on the stack): some kernels
    // copy only up to the NUL (strscpy), leaving the rest as it was.
    let mut comm = core::mem::MaybeUninit::<[u64; 2]>::uninit();
    let words: *mut u64 = comm.as_mut_ptr().cast();
    // SAFETY: two writable, aligned words; then the buffer is 16 writable bytes.
    unsafe {
        core::ptr::write_volatile(words, 0);
        core::ptr::write_volatile(words.add(1), 0);
        helper!(id::GET_CURRENT_COMM, fn(*mut c_void, u32) -> i64)(words.cast(), 16);
    }
    // SAFETY: both words were written.
    let [w0, w1] = unsafe { comm.assume_init() };
    // Keep the bytes before the first NUL, word-wise and branch-light: a
    // byte-by-byte loop multiplies the paths the verifier explores.
    let (m0, nul0) = before_nul(w0);
    let m1 = if nul0 { 0 } else { before_nul(w1).0 };
    // SAFETY: any bit pattern is a byte array.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([w0 & m0, w1 & m1]) }
}

/// The mask of the bytes of `w` (little-endian) before its first zero byte,
/// and whether it has one.
#[inline(always)]
fn before_nul(w: u64) -> (u64, bool) {
    // The lowest zero byte's high bit (bytes above it may be flagged wrongly).
    let z = w.wrapping_sub(0x0101_0101_0101_0101) & !w & 0x8080_8080_8080_8080;
    let lowest = z & z.wrapping_neg();
    ((lowest >> 7).wrapping_sub(1), z != 0)
}

/// `bpf_get_attach_cookie` (5.15): the cookie given when the program was attached.
///
/// Prefer [`crate::ProbeContext::cookie`].
#[inline(always)]
pub unsafe fn get_attach_cookie(ctx: *mut c_void) -> u64 {
    helper!(BPF_FUNC_GET_ATTACH_COOKIE, fn(*mut c_void) -> u64)(ctx)
}

/// `bpf_probe_read_user` (5.5): copies a `T` from user memory.
#[inline(always)]
pub unsafe fn probe_read_user<T>(src: *const T) -> Result<T, i64> {
    let mut v = MaybeUninit::<T>::uninit();
    let ret = helper!(id::PROBE_READ_USER, fn(*mut c_void, u32, *const c_void) -> i64)(
        v.as_mut_ptr().cast(),
        core::mem::size_of::<T>() as u32,
        src.cast(),
    );
    if ret == 0 {
        Ok(v.assume_init())
    } else {
        Err(ret)
    }
}

/// `bpf_perf_event_output` (4.4): copies `size` bytes at `data` into the perf
/// event array `map`'s buffer selected by `flags` (`BPF_F_CURRENT_CPU`).
#[inline(always)]
pub unsafe fn perf_event_output(ctx: *mut c_void, map: *mut c_void, flags: u64, data: *const c_void, size: u64) -> i64 {
    helper!(
        id::PERF_EVENT_OUTPUT,
        fn(*mut c_void, *mut c_void, u64, *const c_void, u64) -> i64
    )(ctx, map, flags, data, size)
}

/// `bpf_get_stackid` (4.6): stores the current stack in a stack trace map and
/// returns its id, or a negative errno.
#[inline(always)]
pub unsafe fn get_stackid(ctx: *mut c_void, map: *mut c_void, flags: u64) -> i64 {
    helper!(id::GET_STACKID, fn(*mut c_void, *mut c_void, u64) -> i64)(ctx, map, flags)
}

/// `bpf_probe_read_kernel` (5.5): copies a `T` from kernel memory (a
/// tracepoint's record, a kernel structure).
#[inline(always)]
pub unsafe fn probe_read_kernel<T>(src: *const T) -> Result<T, i64> {
    let mut v = MaybeUninit::<T>::uninit();
    let ret = helper!(id::PROBE_READ_KERNEL, fn(*mut c_void, u32, *const c_void) -> i64)(
        v.as_mut_ptr().cast(),
        core::mem::size_of::<T>() as u32,
        src.cast(),
    );
    if ret == 0 {
        Ok(v.assume_init())
    } else {
        Err(ret)
    }
}

/// `bpf_probe_read_user_str` (5.5): copies a NUL-terminated string from user memory
/// into `dst`; returns the length copied, including the NUL.
#[inline(always)]
pub unsafe fn probe_read_user_str(src: *const u8, dst: &mut [u8]) -> Result<usize, i64> {
    let ret = helper!(id::PROBE_READ_USER_STR, fn(*mut c_void, u32, *const c_void) -> i64)(
        dst.as_mut_ptr().cast(),
        dst.len() as u32,
        src.cast(),
    );
    if ret < 0 {
        Err(ret)
    } else {
        Ok(ret as usize)
    }
}

/// `bpf_probe_read_user` (5.5) of `dst.len()` bytes at `src` into `dst` (a
/// buffer of a length known at run time: keep it bounded for the verifier).
#[inline(always)]
pub unsafe fn probe_read_user_bytes(src: *const u8, dst: &mut [u8]) -> Result<(), i64> {
    let ret = helper!(id::PROBE_READ_USER, fn(*mut c_void, u32, *const c_void) -> i64)(
        dst.as_mut_ptr().cast(),
        dst.len() as u32,
        src.cast(),
    );
    if ret == 0 {
        Ok(())
    } else {
        Err(ret)
    }
}

/// `bpf_ringbuf_output` (5.8).
#[inline(always)]
pub unsafe fn ringbuf_output(map: *mut c_void, data: *const c_void, size: u64, flags: u64) -> i64 {
    helper!(id::RINGBUF_OUTPUT, fn(*mut c_void, *const c_void, u64, u64) -> i64)(map, data, size, flags)
}

/// `bpf_ringbuf_reserve` (5.8).
#[inline(always)]
pub unsafe fn ringbuf_reserve(map: *mut c_void, size: u64, flags: u64) -> *mut c_void {
    helper!(id::RINGBUF_RESERVE, fn(*mut c_void, u64, u64) -> *mut c_void)(map, size, flags)
}

/// `bpf_ringbuf_submit` (5.8).
#[inline(always)]
pub unsafe fn ringbuf_submit(data: *mut c_void, flags: u64) {
    helper!(id::RINGBUF_SUBMIT, fn(*mut c_void, u64) -> ())(data, flags)
}

/// `bpf_ringbuf_discard` (5.8).
#[inline(always)]
pub unsafe fn ringbuf_discard(data: *mut c_void, flags: u64) {
    helper!(id::RINGBUF_DISCARD, fn(*mut c_void, u64) -> ())(data, flags)
}
