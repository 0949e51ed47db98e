//! x86-64: the facts sonde needs about it, in one place.
//!
//! The saved user registers are the kernel's `struct pt_regs`
//! (arch/x86/include/asm/ptrace.h): `r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax
//! cx dx si di orig_ax ip cs flags sp ss`, 8 bytes each. Instructions have
//! variable length: a probe offset is proven to start one by decoding the
//! function from its entry ([`check_boundary`], `iced-x86`, compiled on x86-64
//! only).

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod decode;

#[cfg(target_arch = "x86_64")]
pub(crate) use decode::{check_boundary, direct_branch_to, go_return_sites, refusal};

use super::Operand;

/// The ELF machine this module describes.
pub(crate) const MACHINE: object::Architecture = object::Architecture::X86_64;

/// The name users know it by.
pub(crate) const NAME: &str = "x86-64";

/// Debian's multiarch library directories, then the usual ones.
pub(crate) const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// The instruction `<sys/sdt.h>` places at a USDT site: a one-byte `nop`.
pub(crate) const USDT_NOP: &[u8] = &[0x90];

/// The 5-byte nop (`nopl 0x0(%rax,%rax,1)`): a uprobe on it becomes a call
/// into a trampoline, no trap, on x86-64 Linux 6.18+ (the kernel emulates it
/// before; a trap, never a single-step).
pub(crate) const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

/// `struct pt_regs`'s `ip`: a USDT argument read relative to it would move
/// with the probe.
pub(crate) const PT_REGS_IP: u16 = 128;

/// The `uprobe` system call (Linux 6.18): the return path of a uprobe on a
/// 5-byte nop.
pub(crate) const UPROBE_SYSCALL: Option<i64> = Some(336);

/// Bytes an entry probe at the start of `code` (a function's body at
/// `address`) skips: the `endbr64` before an emulated instruction, or a Go
/// function's stack check (`go`). See [`decode`]'s functions.
#[cfg(target_arch = "x86_64")]
pub(crate) fn entry_skip(code: &[u8], address: u64, go: bool) -> u64 {
    if go {
        decode::go_entry_skip(code, address)
    } else {
        decode::c_entry_skip(code, address)
    }
}

/// A USDT argument's operand as GNU as writes it in AT&T syntax: `$5`,
/// `%edi`, `-16(%rbp)`, `(%r8)`. Refused: `%rip`-relative symbols, indexed
/// forms, high-byte registers (`%ah`: bits 8-15, which a read of the whole
/// register cannot give).
pub(crate) fn usdt_operand(operand: &str) -> Result<Operand, String> {
    if let Some(imm) = operand.strip_prefix('$') {
        return super::parse_int(imm)
            .map(Operand::Const)
            .ok_or_else(|| "bad constant".to_string());
    }
    if let Some(reg) = operand.strip_prefix('%') {
        return register(reg)
            .map(Operand::Reg)
            .ok_or_else(|| format!("register `{reg}`"));
    }
    let Some((off, rest)) = operand.split_once('(') else {
        return Err(format!("operand `{operand}`"));
    };
    let reg = rest
        .strip_suffix(')')
        .and_then(|r| r.strip_prefix('%'))
        .filter(|r| !r.contains(','))
        .ok_or_else(|| "memory operand sonde does not decode".to_string())?;
    let offset = if off.is_empty() {
        0
    } else {
        super::parse_int(off).ok_or_else(|| format!("offset `{off}` (a symbol, not a number)"))?
    };
    Ok(Operand::Mem {
        reg: register(reg).ok_or_else(|| format!("register `{reg}`"))?,
        offset,
    })
}

/// Offset of register `name` (any width: `rax`, `eax`, `ax`, `al`, `r8d`...)
/// in `struct pt_regs`.
fn register(name: &str) -> Option<u16> {
    let base = match name {
        "rax" | "eax" | "ax" | "al" => "ax",
        "rbx" | "ebx" | "bx" | "bl" => "bx",
        "rcx" | "ecx" | "cx" | "cl" => "cx",
        "rdx" | "edx" | "dx" | "dl" => "dx",
        "rsi" | "esi" | "si" | "sil" => "si",
        "rdi" | "edi" | "di" | "dil" => "di",
        "rbp" | "ebp" | "bp" | "bpl" => "bp",
        "rsp" | "esp" | "sp" | "spl" => "sp",
        "rip" => "ip",
        r => {
            let n = r.strip_prefix('r')?;
            let n = n.strip_suffix(['d', 'w', 'b']).unwrap_or(n);
            return match n.parse::<u16>().ok()? {
                8 => Some(72),
                9 => Some(64),
                10 => Some(56),
                11 => Some(48),
                12 => Some(24),
                13 => Some(16),
                14 => Some(8),
                15 => Some(0),
                _ => None,
            };
        }
    };
    Some(match base {
        "bp" => 32,
        "bx" => 40,
        "ax" => 80,
        "cx" => 88,
        "dx" => 96,
        "si" => 104,
        "di" => 112,
        "ip" => PT_REGS_IP,
        _ => 152, // sp
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usdt_operands_as_gnu_as_writes_them() {
        assert_eq!(usdt_operand("%edi"), Ok(Operand::Reg(112)));
        assert_eq!(usdt_operand("%rax"), Ok(Operand::Reg(80)));
        assert_eq!(usdt_operand("%r12"), Ok(Operand::Reg(24)));
        assert_eq!(usdt_operand("%r8d"), Ok(Operand::Reg(72)));
        assert_eq!(usdt_operand("%r15b"), Ok(Operand::Reg(0)));
        assert_eq!(usdt_operand("$5"), Ok(Operand::Const(5)));
        assert_eq!(usdt_operand("$-0x10"), Ok(Operand::Const(-16)));
        assert_eq!(usdt_operand("-16(%rbp)"), Ok(Operand::Mem { reg: 32, offset: -16 }));
        assert_eq!(usdt_operand("(%r8)"), Ok(Operand::Mem { reg: 72, offset: 0 }));
        assert_eq!(
            usdt_operand("8(%rip)"),
            Ok(Operand::Mem {
                reg: PT_REGS_IP,
                offset: 8
            })
        );
        assert!(usdt_operand("sym(%rip)").is_err());
        assert!(usdt_operand("(%rax,%rbx,8)").is_err());
        assert!(usdt_operand("%ah").is_err(), "bits 8-15 of rax");
        assert!(usdt_operand("%r16").is_err());
        assert!(usdt_operand("%xmm0").is_err());
        assert!(usdt_operand("x0").is_err(), "arm64's form");
    }
}
