//! Session probes: one program runs at a function's entry and at its return,
//! with an 8-byte value kept per call between the two.
//!
//! ```no_run
//! use sonde_ebpf::{helpers, map, maps::HashMap, uprobe_session, SessionContext};
//!
//! #[map]
//! static TOTAL_NS: HashMap<u64, u64> = HashMap::with_max_entries(64);
//!
//! #[uprobe_session]
//! fn timed(ctx: SessionContext) -> u32 {
//!     if !ctx.is_return() {
//!         ctx.set_session_cookie(helpers::ktime_get_ns());
//!         return 0; // 1 would skip this call's return
//!     }
//!     let took = helpers::ktime_get_ns() - ctx.session_cookie();
//!     TOTAL_NS.add(&ctx.cookie(), took);
//!     0
//! }
//! ```
//!
//! Kernel: native on Linux 6.13+ (a `BPF_TRACE_UPROBE_SESSION` link, kfuncs
//! `bpf_session_is_return` and `bpf_session_cookie`). On older kernels (5.10 up)
//! sonde loads the same code twice, as an entry program and a return program,
//! and the per-call value lives in [`SESSION_SLOTS`], keyed by thread and the
//! stack pointer at entry (found again at return: it cannot drift, even past
//! the kernel's 64 nested return probes per thread, whose entries get no
//! return); what the program sees is the same.
//!
//! Go functions (5.10 up, every tier): never a uretprobe (the Go runtime
//! copies and walks goroutine stacks and dies of a rewritten return address).
//! The return copy is an entry probe at each of the function's return
//! instructions, and a call is found again by its goroutine and its depth in
//! the goroutine's stack, since goroutines move between threads.

use core::ffi::c_void;
use core::mem::transmute;

use sonde_abi::helper::{SONDE_SESSION_COOKIE, SONDE_SESSION_GO_FRAMES, SONDE_SESSION_IS_RETURN};

use crate::context::FromRegister;
use crate::helpers;
use crate::maps::LruHashMap;
use crate::{ProbeContext, RetProbeContext};

/// One emulated call: thread and stack pointer at entry.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SlotKey {
    pid_tgid: u64,
    sp: u64,
}

/// The per-call state of an emulated session.
#[doc(hidden)]
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    cookie: u64,
    skip: u64,
}

/// Per-call session values by (thread, stack pointer at entry), for emulated
/// sessions (in the object only when a session program is). Entries whose
/// return the kernel never reports (nested deeper than 64 return probes)
/// age out of the LRU.
///
/// Kernel: 4.10 (LRU hash).
#[link_section = "maps"]
pub static SESSION_SLOTS: LruHashMap<SlotKey, Slot> = LruHashMap::with_max_entries(65536);

/// `bpf_session_is_return()` through sonde's pseudo-call (made a kfunc call or
/// a constant by the loader). Only the low byte is meaningful (a C `bool`).
#[inline(always)]
fn session_is_return() -> bool {
    // SAFETY: a call to this address is rewritten by sonde's loader before load.
    let f: unsafe extern "C" fn() -> u64 = unsafe { transmute(SONDE_SESSION_IS_RETURN as usize) };
    // SAFETY: no arguments.
    unsafe { f() & 0xff != 0 }
}

/// Whether this copy serves a Go function (sonde's pseudo-call, made a
/// constant by the loader).
#[inline(always)]
fn session_go_frames() -> bool {
    // SAFETY: a call to this address is rewritten by sonde's loader before load.
    let f: unsafe extern "C" fn() -> u64 = unsafe { transmute(SONDE_SESSION_GO_FRAMES as usize) };
    // SAFETY: no arguments.
    unsafe { f() & 0xff != 0 }
}

/// `bpf_session_cookie()` through sonde's pseudo-call: the kernel's per-call
/// slot, or null where the session is emulated.
#[inline(always)]
fn session_cookie_ptr() -> *mut u64 {
    // SAFETY: a call to this address is rewritten by sonde's loader before load.
    let f: unsafe extern "C" fn() -> *mut u64 = unsafe { transmute(SONDE_SESSION_COOKIE as usize) };
    // SAFETY: no arguments.
    unsafe { f() }
}

/// The context of a `#[uprobe_session]` program: at entry the arguments, at
/// return the return value; on both sides the attach cookie and the per-call
/// session value.
///
/// Kernel: see the [module](self) (6.13 native, 5.10+ emulated by sonde).
pub struct SessionContext {
    regs: *mut c_void,
    slot: *mut u64,
    is_return: bool,
}

/// What the program wrapper keeps between the body and its end.
#[doc(hidden)]
pub struct Frame {
    slot: *mut Slot,
    key: SlotKey,
    is_return: bool,
}

impl SessionContext {
    /// Starts a run: finds the per-call slot (the kernel's, or the emulated
    /// one). `None`: nothing to run (an emulated return whose entry was not
    /// seen or was skipped). The macro calls this.
    ///
    /// # Safety
    /// `ctx` must be the program's context argument.
    #[doc(hidden)]
    #[inline(always)]
    pub unsafe fn begin(ctx: *mut c_void) -> Option<(SessionContext, Frame)> {
        let is_return = session_is_return();
        let native = session_cookie_ptr();
        if !native.is_null() {
            let frame = Frame {
                slot: core::ptr::null_mut(),
                // Unused here; not all zeros, so that no memset (which the
                // verifier refuses, misaligned) is emitted for the frame.
                key: SlotKey {
                    pid_tgid: crate::context::sp_of(ctx),
                    sp: 0,
                },
                is_return,
            };
            return Some((
                SessionContext {
                    regs: ctx,
                    slot: native,
                    is_return,
                },
                frame,
            ));
        }
        let pid_tgid = helpers::current_pid_tgid();
        let key = if session_go_frames() {
            let (g, frame) = crate::context::go_frame(ctx)?;
            SlotKey { pid_tgid: g, sp: frame }
        } else if !is_return {
            SlotKey {
                pid_tgid,
                sp: crate::context::sp_of(ctx),
            }
        } else {
            SlotKey {
                pid_tgid,
                sp: crate::context::entry_sp_at_return(ctx),
            }
        };
        let slot = if !is_return {
            SESSION_SLOTS.insert(&key, &Slot { cookie: 0, skip: 0 }, 0).ok()?;
            SESSION_SLOTS.get_ptr_mut(&key)?
        } else {
            let slot = SESSION_SLOTS.get_ptr_mut(&key)?;
            // SAFETY: the kernel's pointer to this call's slot.
            if unsafe { (*slot).skip } != 0 {
                let _ = SESSION_SLOTS.remove(&key);
                return None;
            }
            slot
        };
        Some((
            SessionContext {
                regs: ctx,
                // SAFETY: a field of the kernel's value.
                slot: unsafe { core::ptr::addr_of_mut!((*slot).cookie) },
                is_return,
            },
            Frame { slot, key, is_return },
        ))
    }

    /// Ends a run with the body's result `r`: native sessions hand it to the
    /// kernel (1 at entry skips the return); emulated ones record the skip, or
    /// free the slot at return. The macro calls this.
    #[doc(hidden)]
    #[inline(always)]
    pub fn end(frame: Frame, r: u32) -> u32 {
        if frame.slot.is_null() {
            return r;
        }
        if !frame.is_return {
            if r != 0 {
                // SAFETY: the kernel's pointer to this call's slot.
                unsafe { (*frame.slot).skip = 1 };
            }
        } else {
            let _ = SESSION_SLOTS.remove(&frame.key);
        }
        0
    }

    /// Whether this run is at the function's return (else at its entry).
    ///
    /// Kernel: 6.13 native (`bpf_session_is_return`); emulated from 5.10.
    #[inline(always)]
    pub fn is_return(&self) -> bool {
        self.is_return
    }

    /// This call's session value: 0 at entry until set, at return what the
    /// entry set.
    ///
    /// Kernel: 6.13 native (`bpf_session_cookie`); emulated from 5.10.
    #[inline(always)]
    pub fn session_cookie(&self) -> u64 {
        // SAFETY: an 8-byte slot of the kernel (native) or of a map value.
        unsafe { core::ptr::read_volatile(self.slot) }
    }

    /// Sets this call's session value (read back at its return).
    ///
    /// Kernel: as [`SessionContext::session_cookie`].
    #[inline(always)]
    pub fn set_session_cookie(&self, value: u64) {
        // SAFETY: an 8-byte slot of the kernel (native) or of a map value.
        unsafe { core::ptr::write_volatile(self.slot, value) }
    }

    /// The attach cookie of the probed function (as [`ProbeContext::cookie`]).
    ///
    /// Kernel: 5.15 native; emulated by sonde before.
    #[inline(always)]
    pub fn cookie(&self) -> u64 {
        self.probe().cookie()
    }

    /// Argument `n` (meaningful at entry; see [`ProbeContext::arg`]).
    ///
    /// Kernel: any.
    #[inline(always)]
    pub fn arg<T: FromRegister>(&self, n: usize) -> Option<T> {
        self.probe().arg(n)
    }

    /// The return value (meaningful at return; see [`RetProbeContext::ret`]).
    ///
    /// Kernel: any.
    #[inline(always)]
    pub fn ret<T: FromRegister>(&self) -> T {
        // SAFETY: the program's context.
        unsafe { RetProbeContext::new(self.regs) }.ret()
    }

    /// The hit as a plain probe context (task, registers, helpers taking a
    /// context).
    ///
    /// Kernel: any.
    #[inline(always)]
    pub fn probe(&self) -> ProbeContext {
        // SAFETY: the program's context.
        unsafe { ProbeContext::new(self.regs) }
    }

    /// `tgid << 32 | tid` of the task.
    ///
    /// Kernel: 4.2.
    #[inline(always)]
    pub fn pid_tgid(&self) -> u64 {
        helpers::current_pid_tgid()
    }
}
