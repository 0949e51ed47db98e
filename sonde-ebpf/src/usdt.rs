//! USDT probes: `#[usdt]` programs take a [`UsdtContext`], whose
//! [`arg`](UsdtContext::arg) reads each argument as the probe's note says
//! (register, memory at register + offset, or constant; size and sign), the
//! spec found through the attach cookie in [`USDT_SPECS`], which user space
//! fills when it attaches (`sonde::usdt`). The user's own cookie stays
//! available: [`UsdtContext::cookie`].
//!
//! ```no_run
//! use sonde_ebpf::{map, maps::HashMap, usdt, UsdtContext};
//!
//! #[map]
//! static SEEN: HashMap<u64, u64> = HashMap::with_max_entries(64);
//!
//! #[usdt]
//! fn request(ctx: UsdtContext) -> u32 {
//!     let id = ctx.arg(0).unwrap_or(0);
//!     SEEN.increment(&id);
//!     0
//! }
//! ```

use core::ffi::c_void;

use sonde_abi::usdt::{UsdtArgSpec, UsdtSpec, USDT_ARG_CONST, USDT_ARG_MEM, USDT_ARG_REG};

use crate::helpers;
use crate::maps::Array;
use crate::ProbeContext;

/// Probe sites' specs, indexed by the site's attach cookie (4,096 sites): in
/// the object only when a program reads USDT arguments.
///
/// Kernel: any (an array map, 3.19).
#[link_section = "maps"]
pub static USDT_SPECS: Array<UsdtSpec> = Array::with_max_entries(4096);

/// The context of a `#[usdt]` program. Kernel: as uprobes; the cookie-indexed
/// spec needs 5.15 natively, and is baked per site by sonde on older kernels.
pub struct UsdtContext {
    probe: ProbeContext,
}

impl UsdtContext {
    /// Wraps the raw context (the macro does this).
    ///
    /// # Safety
    /// `ctx` must be the program's context argument.
    #[inline(always)]
    pub unsafe fn new(ctx: *mut c_void) -> Self {
        UsdtContext {
            probe: ProbeContext::new(ctx),
        }
    }

    /// The same hit as a plain probe context (registers, task, attach cookie).
    #[inline(always)]
    pub fn probe(&self) -> &ProbeContext {
        &self.probe
    }

    /// The spec id: the attach cookie sonde gave this site.
    ///
    /// Kernel: as [`ProbeContext::cookie`].
    #[inline(always)]
    pub fn spec_id(&self) -> u64 {
        self.probe.cookie()
    }

    /// The user's cookie for this site (stored in its spec).
    ///
    /// Kernel: as [`ProbeContext::cookie`].
    #[inline(always)]
    pub fn cookie(&self) -> u64 {
        USDT_SPECS.get(self.spec_id() as u32).map_or(0, |s| s.cookie)
    }

    /// Argument `n` as the probe's note says, sign- or zero-extended to 64
    /// bits; `None` past the probe's arguments or when memory cannot be read.
    ///
    /// Kernel: 5.5 (`bpf_probe_read_kernel`, `bpf_probe_read_user`).
    #[inline(always)]
    pub fn arg(&self, n: usize) -> Option<u64> {
        let spec = USDT_SPECS.get_ptr_mut(self.spec_id() as u32)?;
        // SAFETY: the kernel's pointer to the spec.
        let spec = unsafe { &*spec };
        if n >= spec.nargs as usize || n >= spec.args.len() {
            return None;
        }
        read_arg(self.probe.as_ptr(), &spec.args[n])
    }
}

/// Reads one argument from the saved registers `regs` as `a` says.
///
/// Kernel: 5.5.
#[inline(always)]
pub fn read_arg(regs: *mut c_void, a: &UsdtArgSpec) -> Option<u64> {
    let raw: u64 = match a.kind {
        USDT_ARG_CONST => a.value as u64,
        USDT_ARG_REG | USDT_ARG_MEM => {
            // The register, by its run-time offset: through the helper (a
            // direct context load must have a constant offset).
            let at = (regs as *const u8).wrapping_add((a.reg_offset & 0xff8) as usize);
            // SAFETY: the helper checks the address.
            let reg: u64 = unsafe { helpers::probe_read_kernel(at.cast::<u64>()) }.ok()?;
            if a.kind == USDT_ARG_REG {
                reg
            } else {
                let addr = reg.wrapping_add(a.value as u64);
                // SAFETY: the helper checks the address.
                unsafe { helpers::probe_read_user(addr as *const u64) }.ok()?
            }
        }
        _ => return None,
    };
    // Keep `size` bytes, sign-extended when signed.
    let bits = match a.size {
        1 => 8,
        2 => 16,
        4 => 32,
        _ => 64,
    };
    if bits == 64 {
        return Some(raw);
    }
    let shift = 64 - bits;
    Some(if a.signed != 0 {
        (((raw << shift) as i64) >> shift) as u64
    } else {
        (raw << shift) >> shift
    })
}
