//! Every architecture fact sonde uses, one file per architecture.
//!
//! | | x86-64 ([`x86_64`]) | arm64 ([`aarch64`]) |
//! |---|---|---|
//! | ELF machine | `EM_X86_64` | `EM_AARCH64` |
//! | saved registers | `struct pt_regs` | `struct user_pt_regs` |
//! | instruction boundary | decoded from the entry (`iced-x86`) | a multiple of 4 |
//! | USDT site, operands | `nop`; `-4@%edi`, `8@-16(%rbp)`, `4@$5` | `nop`; `-4@w0`, `8@[x29, -16]`, `4@5` |
//! | entry skipped | `endbr64` before an emulated `push`; Go's stack check | Go's stack check |
//! | Go returns | at every `ret` | not found (data between instructions) |
//! | library directories | `/usr/lib/x86_64-linux-gnu`... | `/usr/lib/aarch64-linux-gnu`... |
//!
//! [`host`] is the one sonde was built for: it probes binaries of that
//! machine only (uprobes run in the traced process's own instruction set).
//! Both modules compile everywhere (their parsers are unit-tested on any
//! host) but the x86-64 decoder, which is x86-64-only. The eBPF side's
//! register layouts are in `sonde-ebpf/src/context.rs` (`regs`), chosen by
//! the `sonde_target_arch` cfg `sonde-build` sets. A new architecture is a new
//! file here, a `regs` module there, and a line in each `host` selection.

pub(crate) mod aarch64;
pub(crate) mod x86_64;

#[cfg(target_arch = "aarch64")]
pub(crate) use self::aarch64 as host;
#[cfg(target_arch = "x86_64")]
pub(crate) use self::x86_64 as host;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("sonde probes x86-64 and arm64 programs: build it for one of them");

/// A USDT argument's operand, as an architecture's assembler writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operand {
    /// A constant.
    Const(i64),
    /// A register: its byte offset in the saved registers.
    Reg(u16),
    /// Memory at a register (byte offset in the saved registers) plus `offset`.
    Mem { reg: u16, offset: i64 },
}

/// The name users know machine `a` by (`arm64`, not `Aarch64`).
pub(crate) fn name_of(a: object::Architecture) -> String {
    match a {
        a if a == x86_64::MACHINE => x86_64::NAME.to_string(),
        a if a == aarch64::MACHINE => aarch64::NAME.to_string(),
        object::Architecture::I386 => "x86 (32-bit)".to_string(),
        object::Architecture::Arm => "arm (32-bit)".to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A decimal or `0x` hexadecimal integer, optionally negative.
pub(crate) fn parse_int(s: &str) -> Option<i64> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let v = match digits.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok()?,
        None if digits.starts_with(|c: char| c.is_ascii_digit()) => digits.parse().ok()?,
        None => return None,
    };
    Some(if neg { v.checked_neg()? } else { v })
}
