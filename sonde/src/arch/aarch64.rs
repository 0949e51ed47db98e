//! arm64 (AArch64): the facts sonde needs about it, in one place.
//!
//! The saved user registers start with the kernel's `struct user_pt_regs`
//! (arch/arm64/include/uapi/asm/ptrace.h, the head of `struct pt_regs`):
//! `u64 regs[31]; u64 sp; u64 pc; u64 pstate;`. Every instruction is 4 bytes,
//! 4-byte aligned: an offset starts one when it is a multiple of 4 inside the
//! function (no decoder needed). What the kernel refuses to single-step
//! follows `arch/arm64/kernel/probes/decode-insn.c` (`aarch64_insn_is_steppable`).

#![cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]

use super::Operand;

/// The ELF machine this module describes.
pub(crate) const MACHINE: object::Architecture = object::Architecture::Aarch64;

/// The name users know it by.
pub(crate) const NAME: &str = "arm64";

/// Debian's multiarch library directories, then the usual ones.
pub(crate) const LIB_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

/// The instruction `<sys/sdt.h>` places at a USDT site: `nop` (`d503201f`).
pub(crate) const USDT_NOP: &[u8] = &[0x1f, 0x20, 0x03, 0xd5];

/// The 5-byte nop sonde probes past a USDT `nop` on x86-64: none here.
pub(crate) const NOP5: [u8; 0] = [];

/// `user_pt_regs.pc`.
pub(crate) const PT_REGS_IP: u16 = 256;

/// `user_pt_regs.sp`.
const PT_REGS_SP: u16 = 248;

/// The `uprobe` system call: x86-64 only.
pub(crate) const UPROBE_SYSCALL: Option<i64> = None;

/// Every instruction's size.
const INSN: u64 = 4;

/// The instruction word at byte `at` of `code`.
fn word(code: &[u8], at: usize) -> Option<u32> {
    let b = code.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether `offset` starts an instruction of `code` (a function's bytes from
/// its entry at `address`): a multiple of 4 inside the bytes given.
/// `Err(start)` gives the start of the instruction that covers `offset`, or
/// the last one when it lies past the bytes given (unproven is refused).
pub(crate) fn check_boundary(code: &[u8], _address: u64, offset: u64) -> Result<(), u64> {
    let len = code.len() as u64;
    if offset == 0 || offset.is_multiple_of(INSN) && offset < len {
        return Ok(());
    }
    if offset >= len {
        return Err(len.saturating_sub(1) / INSN * INSN);
    }
    Err(offset - offset % INSN)
}

/// Why the kernel's arm64 uprobe code would refuse the instruction at the
/// start of `code`, or `None` (it answers at attach time otherwise).
///
/// The kernel steps an instruction out of line or simulates it (branches,
/// `adr`/`adrp`, `ldr`/`ldrsw` of a literal); it refuses exception-generating
/// instructions (`svc`, `brk`, `hlt`...), `msr`, `mrs` of DAIF, hints other
/// than the ones it lists (`nop`, the `pac*` and `bti` hints), other literal
/// loads (`prfm`, SIMD registers) and exclusive loads and stores
/// (`ldxr`/`stxr`: a trap between them would break the pair's monitor).
pub(crate) fn refusal(code: &[u8]) -> Option<&'static str> {
    let Some(w) = word(code, 0) else {
        return Some("its first instruction is past the end of the file");
    };
    if w & 0xff00_0000 == 0xd400_0000 {
        return Some("its first instruction generates an exception (svc, brk, hlt...)");
    }
    if w & 0xffc0_0000 == 0xd500_0000 {
        if w & 0xfff0_0000 == 0xd530_0000 {
            // mrs: the system register is bits 20-5.
            return ((w & 0x1f_ffe0) >> 5 == 0xda11).then_some("its first instruction reads DAIF");
        }
        if w & 0xfff0_0000 == 0xd510_0000 || w & 0xfff8_f01f == 0xd500_401f {
            return Some("its first instruction writes a system register (msr)");
        }
        if w & 0xffff_f01f == 0xd503_201f {
            // The hint number (CRm:op2) times 32: nop, xpaclri, pacia1716,
            // pacib1716, paciaz, paciasp, pacibz, pacibsp, bti, bti c|j|jc.
            let steppable = matches!(
                w & 0xfe0,
                0x000 | 0x0e0 | 0x100 | 0x140 | 0x300 | 0x320 | 0x340 | 0x360 | 0x400 | 0x440 | 0x480 | 0x4c0
            );
            return (!steppable).then_some("its first instruction is a hint the kernel does not step");
        }
        return None;
    }
    let literal = w & 0x3b00_0000 == 0x1800_0000;
    if literal && w & 0xbf00_0000 != 0x1800_0000 && w & 0xff00_0000 != 0x9800_0000 {
        return Some("its first instruction loads a literal the kernel does not simulate (prfm, SIMD)");
    }
    if w & 0x3f80_0000 == 0x0800_0000 {
        return Some("its first instruction is an exclusive load or store (ldxr/stxr)");
    }
    None
}

/// The target of a direct branch (`b`, `bl`, `b.cond`, `cbz`/`cbnz`,
/// `tbz`/`tbnz`) `w` at `at`, or `None`.
fn branch_target(w: u32, at: u64) -> Option<u64> {
    let sext = |v: u32, bits: u32| ((v << (32 - bits)) as i32 >> (32 - bits)) as i64 * 4;
    let rel = if w & 0x7c00_0000 == 0x1400_0000 {
        sext(w & 0x03ff_ffff, 26)
    } else if w & 0xff00_0010 == 0x5400_0000 || w & 0x7e00_0000 == 0x3400_0000 {
        sext((w >> 5) & 0x7_ffff, 19)
    } else if w & 0x7e00_0000 == 0x3600_0000 {
        sext((w >> 5) & 0x3fff, 14)
    } else {
        return None;
    };
    Some(at.wrapping_add_signed(rel))
}

/// Whether `w` is an indirect branch (`br`, `blr`, or their authenticated
/// forms; not `ret`).
fn indirect_branch(w: u32) -> bool {
    w & 0xffdf_fc1f == 0xd61f_0000
}

/// Bytes an entry probe at the start of `code` (a function's body at
/// `address`) skips: a Go function's stack check (`go`),
/// `ldr x16, [x28, #16]; [sub x17, sp, #N;] cmp sp|x17, x16; b.ls MORESTACK`
/// (`g` in x28), after which each call is seen once (a call that grows its
/// stack runs again from the entry); 0 for C functions (no entry instruction
/// worth skipping: arm64 steps `bti`/`paciasp` as cheaply as any other), for
/// Go functions without the check, and when a direct branch lands after the
/// entry and at or before the probe point or the function has an indirect
/// branch (targets not in the code).
pub(crate) fn entry_skip(code: &[u8], address: u64, go: bool) -> u64 {
    if !go || word(code, 0) != Some(0xf940_0b90) {
        return 0;
    }
    let after = match (word(code, 4), word(code, 8), word(code, 12)) {
        // cmp sp, x16; b.ls
        (Some(0xeb30_63ff), Some(b), _) if b & 0xff00_001f == 0x5400_0009 => 12,
        // sub x17, sp, #N; cmp x17, x16; b.ls
        (Some(sub), Some(0xeb10_023f), Some(b))
            if sub & 0xff80_03ff == 0xd100_03f1 && b & 0xff00_001f == 0x5400_0009 =>
        {
            16
        }
        _ => return 0,
    };
    if branch_lands(code, address, address + 1..=address + after, true) {
        return 0;
    }
    after
}

/// Whether a branch of `code` (a function's body at `address`) may land in
/// `landing`: a direct branch that does, or any indirect branch when
/// `indirect` (its targets are not in the code).
fn branch_lands(code: &[u8], address: u64, landing: std::ops::RangeInclusive<u64>, indirect: bool) -> bool {
    let mut at = 0;
    while let Some(w) = word(code, at) {
        if indirect && indirect_branch(w) || branch_target(w, address + at as u64).is_some_and(|t| landing.contains(&t))
        {
            return true;
        }
        at += 4;
    }
    false
}

/// Go return instructions are not found on arm64: Go's arm64 assembler
/// places literal pools (data) between a function's instructions, so a word
/// that reads as `ret` may be a constant, and a probe written there would
/// change it.
pub(crate) fn go_return_sites(_code: &[u8], _base: u64) -> Result<Vec<u64>, &'static str> {
    Err("Go return instructions are not found on arm64 (Go's arm64 code holds data between its instructions)")
}

/// Whether a direct branch of `code` (at `address`) lands on `target`: only
/// asked about x86-64's 5-byte nops.
pub(crate) fn direct_branch_to(code: &[u8], address: u64, target: u64) -> bool {
    branch_lands(code, address, target..=target, false)
}

/// A USDT argument's operand as GCC writes it for arm64: `x0`, `w1`, `sp`,
/// `[sp, 12]`, `[x29, -16]`, `[x0]`, `5`, `-1` (an optional `#` before
/// numbers is accepted).
pub(crate) fn usdt_operand(operand: &str) -> Result<Operand, String> {
    let number = |s: &str| super::parse_int(s.trim().trim_start_matches('#'));
    if let Some(inner) = operand.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| "memory operand sonde does not decode".to_string())?;
        let (reg, offset) = match inner.split_once(',') {
            Some((reg, off)) => (
                reg.trim(),
                number(off).ok_or_else(|| format!("offset `{}` (not a number)", off.trim()))?,
            ),
            None => (inner.trim(), 0),
        };
        return Ok(Operand::Mem {
            reg: register(reg).ok_or_else(|| format!("register `{reg}`"))?,
            offset,
        });
    }
    if let Some(reg) = register(operand) {
        return Ok(Operand::Reg(reg));
    }
    number(operand)
        .map(Operand::Const)
        .ok_or_else(|| format!("operand `{operand}`"))
}

/// Offset of register `name` (`x0`-`x30`, `w0`-`w30`, `sp`, `wsp`) in
/// `user_pt_regs`.
fn register(name: &str) -> Option<u16> {
    if matches!(name, "sp" | "wsp") {
        return Some(PT_REGS_SP);
    }
    let n: u16 = name.strip_prefix(['x', 'w'])?.parse().ok()?;
    (n <= 30 && !name[1..].starts_with('+')).then_some(n * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usdt_operands_as_gcc_writes_them_for_arm64() {
        assert_eq!(usdt_operand("x0"), Ok(Operand::Reg(0)));
        assert_eq!(usdt_operand("w1"), Ok(Operand::Reg(8)));
        assert_eq!(usdt_operand("x30"), Ok(Operand::Reg(240)));
        assert_eq!(usdt_operand("sp"), Ok(Operand::Reg(248)));
        assert_eq!(usdt_operand("[sp, 12]"), Ok(Operand::Mem { reg: 248, offset: 12 }));
        assert_eq!(usdt_operand("[x29, -16]"), Ok(Operand::Mem { reg: 232, offset: -16 }));
        assert_eq!(usdt_operand("[x0]"), Ok(Operand::Mem { reg: 0, offset: 0 }));
        assert_eq!(usdt_operand("[sp, #0x10]"), Ok(Operand::Mem { reg: 248, offset: 16 }));
        assert_eq!(usdt_operand("5"), Ok(Operand::Const(5)));
        assert_eq!(usdt_operand("-1"), Ok(Operand::Const(-1)));
        assert!(usdt_operand("x31").is_err());
        assert!(usdt_operand("v0").is_err());
        assert!(usdt_operand("[x0, x1]").is_err(), "register offset");
        assert!(usdt_operand("[x0, 8]!").is_err(), "pre-index");
        assert!(usdt_operand("%edi").is_err(), "x86-64's form");
    }

    #[test]
    fn boundaries_are_aligned_words_inside_the_function() {
        let code = [0u8; 16];
        for ok in [0, 4, 8, 12] {
            assert_eq!(check_boundary(&code, 0x1000, ok), Ok(()), "offset {ok}");
        }
        assert_eq!(check_boundary(&code, 0x1000, 6), Err(4));
        assert_eq!(check_boundary(&code, 0x1000, 16), Err(12), "past the end");
        assert_eq!(check_boundary(&[], 0x1000, 4), Err(0));
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn refused_first_instructions_follow_the_kernel() {
        assert_eq!(refusal(&words(&[0xa9bf_7bfd])), None, "stp x29, x30, [sp, #-16]!");
        assert_eq!(refusal(&words(&[0xd503_233f])), None, "paciasp");
        assert_eq!(refusal(&words(&[0xd503_201f])), None, "nop");
        assert_eq!(refusal(&words(&[0xd53b_d040])), None, "mrs x0, tpidr_el0");
        assert_eq!(refusal(&words(&[0x1400_0010])), None, "b: simulated");
        assert!(refusal(&words(&[0xd53b_4220])).is_some(), "mrs x0, daif");
        assert!(refusal(&words(&[0xd400_0001])).is_some(), "svc #0");
        assert!(refusal(&words(&[0xd420_0000])).is_some(), "brk #0");
        assert!(refusal(&words(&[0xc85f_7c20])).is_some(), "ldxr x0, [x1]");
        assert_eq!(refusal(&words(&[0xd503_3f9f])), None, "dsb sy: steppable");
        assert!(refusal(&words(&[0xd51b_4220])).is_some(), "msr daif, x0");
        assert!(refusal(&words(&[0xd503_203f])).is_some(), "yield");
        assert_eq!(refusal(&words(&[0x5800_0040])), None, "ldr x0, literal: simulated");
        assert!(refusal(&words(&[0xd800_0040])).is_some(), "prfm, literal");
        assert_eq!(refusal(&words(&[0xc8df_fc20])), None, "ldar x0, [x1]: steppable");
        assert!(refusal(&[0x1f, 0x20]).is_some(), "past the end");
    }

    #[test]
    fn go_stack_checks_are_skipped() {
        // main.nap of a Go 1.19 arm64 build: ldr x16, [x28, #16]; cmp sp, x16; b.ls +0x2c; str x30, [sp, #-32]!
        let nap = words(&[0xf940_0b90, 0xeb30_63ff, 0x5400_0169, 0xf81e_0ffe, 0xd65f_03c0]);
        assert_eq!(entry_skip(&nap, 0x927a0, true), 12);
        assert_eq!(entry_skip(&nap, 0x927a0, false), 0, "C functions keep their entry");
        // main.grow: a frame larger than the guard's slack (sub x17, sp, #0xb0; cmp x17, x16).
        let grow = words(&[0xf940_0b90, 0xd102_c3f1, 0xeb10_023f, 0x5400_0509, 0xd65f_03c0]);
        assert_eq!(entry_skip(&grow, 0x926d0, true), 16);
        // A loop back to just after the entry: kept.
        let looped = words(&[0xf940_0b90, 0xeb30_63ff, 0x5400_0169, 0x17ff_fffe, 0xd65f_03c0]);
        assert_eq!(entry_skip(&looped, 0x1000, true), 0);
        // An indirect branch (br x1): kept.
        let table = words(&[0xf940_0b90, 0xeb30_63ff, 0x5400_0169, 0xd61f_0020]);
        assert_eq!(entry_skip(&table, 0x1000, true), 0);
        // No stack check (nosplit).
        assert_eq!(entry_skip(&words(&[0xf900_07e0, 0xd65f_03c0]), 0x1000, true), 0);
    }

    #[test]
    fn direct_branches_are_found() {
        // b +8 from 0x1000 lands on 0x1008; cbz x0, +4 from 0x1004 on 0x1008.
        let code = words(&[0x1400_0002, 0xb400_0020, 0xd65f_03c0]);
        assert!(direct_branch_to(&code, 0x1000, 0x1008));
        assert!(!direct_branch_to(&code, 0x1000, 0x100c));
        assert!(indirect_branch(0xd61f_0020), "br x1");
        assert!(indirect_branch(0xd63f_0020), "blr x1");
        assert!(!indirect_branch(0xd65f_03c0), "ret");
    }
}
