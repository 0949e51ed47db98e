//! USDT argument specs as the programs read them: user space decodes a probe's
//! note (`-4@%edi 8@-16(%rbp) 4@$5`) into a [`UsdtSpec`] per probe site, the
//! program finds it through the site's attach cookie and reads each argument
//! as it says.

use crate::Pod;

/// Arguments a spec holds (`<sys/sdt.h>` allows 12).
pub const USDT_MAX_ARGS: usize = 12;

/// A constant (`$5`).
pub const USDT_ARG_CONST: u32 = 0;
/// A register (`%edi`).
pub const USDT_ARG_REG: u32 = 1;
/// Memory at a register plus an offset (`-16(%rbp)`).
pub const USDT_ARG_MEM: u32 = 2;

/// How to read one argument.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtArgSpec {
    /// `USDT_ARG_CONST`, `USDT_ARG_REG` or `USDT_ARG_MEM`.
    pub kind: u32,
    /// Bytes: 1, 2, 4 or 8.
    pub size: u32,
    /// 1: sign-extend from `size` bytes.
    pub signed: u32,
    /// Byte offset of the register in the kernel's saved registers
    /// (`struct pt_regs`).
    pub reg_offset: u32,
    /// The constant, or the offset added to the register for memory.
    pub value: i64,
}

/// One probe site's arguments and its user cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtSpec {
    /// The value `UsdtContext::cookie` returns (the site's user cookie: the
    /// attach cookie is the spec's index).
    pub cookie: u64,
    /// Arguments in use.
    pub nargs: u32,
    /// Zero.
    pub _pad: u32,
    /// The arguments.
    pub args: [UsdtArgSpec; USDT_MAX_ARGS],
}

// SAFETY: repr(C), integer fields only, no padding (4 * 4 + 8 = 24 bytes an
// argument; 8 + 4 + 4 + 12 * 24 for the spec), every bit pattern valid.
unsafe impl Pod for UsdtArgSpec {}
// SAFETY: as above.
unsafe impl Pod for UsdtSpec {}
