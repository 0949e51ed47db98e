//! x86-64 code, decoded (`iced-x86`): instruction boundaries, the entry
//! instructions a probe can skip, Go return instructions, what the kernel refuses.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

use super::NOP5;

/// Whether `offset` is an instruction boundary of the x86-64 code `code`
/// (a function's bytes from its entry), decoding linearly from the entry.
/// `Err(previous)` gives the start of the instruction that covers `offset`, or
/// the last one decoded when `offset` lies past the bytes given (unproven is
/// refused: a wrong guess corrupts the traced program).
pub(crate) fn check_boundary(code: &[u8], address: u64, offset: u64) -> Result<(), u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let target = address.wrapping_add(offset);
    let mut last = 0;
    while decoder.can_decode() {
        let ip = decoder.ip();
        if ip == target {
            return Ok(());
        }
        let insn = decoder.decode();
        if ip < target && target < insn.next_ip() {
            return Err(ip - address);
        }
        last = ip - address;
    }
    if offset == 0 {
        return Ok(());
    }
    Err(last)
}

/// `endbr64`: the first instruction of every function built with
/// `-fcf-protection` (Ubuntu's and Fedora's default). The kernel single-steps
/// it out of line, a second trap per hit.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// Bytes an entry probe skips at the start of `code` (a function's whole body,
/// at `address`): 4 when the function starts with `endbr64` (which changes
/// nothing a probe can observe: no register, flag, stack or memory) followed
/// by a `push` of a register (which the kernel emulates, one trap per hit
/// instead of two) or a 5-byte nop (emulated, or a call with no trap at all on
/// 6.18+), and no branch of the function lands after the entry and at or
/// before that instruction (a loop back to it would be counted as a call);
/// otherwise 0. A function with an indirect jump (a jump table: its targets
/// are not in the code) keeps its entry.
pub(crate) fn c_entry_skip(code: &[u8], address: u64) -> u64 {
    let Some(rest) = code.strip_prefix(&ENDBR64) else {
        return 0;
    };
    if !matches!(rest, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..]) && !rest.starts_with(&NOP5) {
        return 0;
    }
    if branch_lands(code, address, address + 1..=address + ENDBR64.len() as u64, true) {
        return 0;
    }
    ENDBR64.len() as u64
}

/// Whether a branch of `code` (a function's body at `address`) may land in
/// `landing`: a direct branch (jmp, jcc, call, loop, jrcxz: they carry their
/// target) that does, any indirect jump when `indirect` (its targets are not
/// in the code), or bytes that do not decode (unproven is refused).
fn branch_lands(code: &[u8], address: u64, landing: std::ops::RangeInclusive<u64>, indirect: bool) -> bool {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut insn = iced_x86::Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return true;
        }
        let direct = matches!(
            insn.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        );
        if direct && landing.contains(&insn.near_branch_target()) {
            return true;
        }
        if indirect && !direct && insn.mnemonic() == Mnemonic::Jmp {
            return true;
        }
    }
    false
}

/// Bytes an entry probe of a Go function skips (x86-64): its stack check,
/// `[lea R, [rsp-N];] cmp rsp|R, [g+0x10]; jbe|jb MORESTACK` with `g` in R14
/// (Go 1.17+) or loaded by `mov REG, fs:[-8]` first (older Go). When the
/// goroutine's stack is too small, the check jumps to `runtime.morestack`,
/// which copies the stack and runs the function again from its entry: a probe
/// on the entry would count that call twice. After the check it sees each call
/// once, with the arguments untouched (the check writes only flags and a
/// scratch register). 0 when the function has no such check (`//go:nosplit`,
/// assembly), a direct branch lands after the entry and at or before the probe
/// point, or it has an indirect jump (a jump table whose targets are not in
/// the code).
pub(crate) fn go_entry_skip(code: &[u8], address: u64) -> u64 {
    use iced_x86::Register;
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut insn = iced_x86::Instruction::default();
    let mut g = Register::R14;
    let mut compared = Register::RSP;
    let mut checked = false;
    let mut after = None;
    // The check is at most four instructions.
    for _ in 0..4 {
        if !decoder.can_decode() {
            return 0;
        }
        decoder.decode_out(&mut insn);
        let reg0 = insn.op0_kind() == OpKind::Register && gpr64(insn.op0_register());
        let mem1 = insn.op_count() == 2 && insn.op1_kind() == OpKind::Memory && insn.memory_index() == Register::None;
        match insn.mnemonic() {
            // mov REG, fs:[-8]: the current g, before the register ABI.
            Mnemonic::Mov
                if !checked
                    && reg0
                    && mem1
                    && insn.memory_segment() == Register::FS
                    && insn.memory_base() == Register::None
                    && insn.memory_displacement64() as i64 == -8 =>
            {
                g = insn.op0_register();
            }
            // lea R, [rsp - N]: a frame larger than the guard's slack.
            Mnemonic::Lea
                if !checked
                    && reg0
                    && mem1
                    && insn.memory_base() == Register::RSP
                    && (insn.memory_displacement64() as i64) < 0 =>
            {
                compared = insn.op0_register();
            }
            // cmp rsp|R, [g + 0x10]: g.stackguard0.
            Mnemonic::Cmp
                if !checked
                    && reg0
                    && mem1
                    && insn.op0_register() == compared
                    && insn.memory_base() == g
                    && insn.memory_displacement64() == 0x10 =>
            {
                checked = true;
            }
            // jbe|jb MORESTACK, forward.
            Mnemonic::Jbe | Mnemonic::Jb
                if checked
                    && matches!(insn.op0_kind(), OpKind::NearBranch32 | OpKind::NearBranch64)
                    && insn.near_branch_target() > insn.next_ip() =>
            {
                after = Some(insn.next_ip());
                break;
            }
            _ => return 0,
        }
    }
    let Some(after) = after else { return 0 };
    if branch_lands(code, address, address + 1..=after, true) {
        return 0;
    }
    after - address
}

/// The file offsets of every return instruction of a Go function (`code`,
/// at file offset `base`), where a return probe goes in place of a uretprobe
/// (which Go's stack moves would find and die of). Decoded from the entry, one
/// instruction after another: Go puts no data between its instructions.
///
/// Refused, with the reason: a function that jumps out of itself directly (a
/// tail call: its return is elsewhere), one that reads its goroutine from
/// thread-local storage (built by Go before 1.17: the pairing needs `g` in
/// R14), one whose bytes do not decode, one with no `ret`. An indirect jump
/// is allowed (Go's jump tables land inside the function); one that left it
/// would lose that call's return, never mis-pair one.
pub(crate) fn go_return_sites(code: &[u8], base: u64) -> Result<Vec<u64>, &'static str> {
    use iced_x86::Register;
    let end = base + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, base, DecoderOptions::NONE);
    let mut insn = iced_x86::Instruction::default();
    let mut returns = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Err("its code does not decode as x86-64");
        }
        match insn.mnemonic() {
            Mnemonic::Ret => returns.push(insn.ip()),
            Mnemonic::Jmp
                if matches!(
                    insn.op0_kind(),
                    OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                ) && !(base..end).contains(&insn.near_branch_target()) =>
            {
                return Err("it jumps out of itself (a tail call), so its return is not its own");
            }
            Mnemonic::Mov
                if insn.op_count() == 2
                    && insn.op1_kind() == OpKind::Memory
                    && insn.memory_segment() == Register::FS
                    && insn.memory_base() == Register::None
                    && insn.memory_displacement64() as i64 == -8 =>
            {
                return Err("it was built by Go before 1.17 (its goroutine is not in R14)");
            }
            _ => {}
        }
    }
    if returns.is_empty() {
        return Err("it has no return instruction (it never returns)");
    }
    Ok(returns)
}

/// Whether `r` is a 64-bit general-purpose register.
fn gpr64(r: iced_x86::Register) -> bool {
    use iced_x86::Register::*;
    matches!(
        r,
        RAX | RCX | RDX | RBX | RSP | RBP | RSI | RDI | R8 | R9 | R10 | R11 | R12 | R13 | R14 | R15
    )
}

/// Whether a direct branch (jmp, jcc, call, loop, jrcxz) of `code` (at
/// `address`) lands on `target`, or `code` cannot be decoded.
pub(crate) fn direct_branch_to(code: &[u8], address: u64, target: u64) -> bool {
    branch_lands(code, address, target..=target, false)
}

/// Why the kernel's x86-64 uprobe code would refuse the instruction at the
/// start of `code` (it answers ENOTSUPP at attach time), or `None`.
///
/// The kernel refuses instructions with an ES, CS, SS or DS segment prefix or a
/// LOCK prefix, VEX/EVEX-encoded (AVX) instructions, and traps, privileged and
/// I/O instructions. (All 21 functions of Debian 12's libc that Linux 6.18
/// refused at attach time start with a VEX instruction.)
pub(crate) fn refusal(code: &[u8]) -> Option<&'static str> {
    if common_entry(code) {
        return None;
    }
    let mut decoder = Decoder::new(64, code, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Some("its first bytes are not a valid instruction");
    }
    let len = insn.len().min(code.len());
    // Legacy prefixes, scanned once.
    let prefixes = &code[..code[..len]
        .iter()
        .take_while(|b| {
            matches!(
                b,
                0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
            )
        })
        .count()];
    // In 64-bit mode 0xc4/0xc5 start a VEX prefix and 0x62 an EVEX one.
    if matches!(code.get(prefixes.len()), Some(0xc4 | 0xc5 | 0x62)) {
        return Some("its first instruction is VEX/EVEX-encoded (AVX), which x86 uprobes do not support");
    }
    for b in prefixes {
        match b {
            0x26 | 0x2e | 0x36 | 0x3e => return Some("its first instruction has a segment prefix"),
            0xf0 => return Some("its first instruction has a LOCK prefix"),
            _ => {}
        }
    }
    use iced_x86::Mnemonic::*;
    match insn.mnemonic() {
        Int3 | Int | Into | Int1 | Hlt | In | Out | Insb | Insw | Insd | Outsb | Outsw | Outsd | Syscall | Sysenter
        | Sysexit | Sysret | Ud2 | Cli | Sti => Some("its first instruction is a trap, privileged or I/O instruction"),
        _ => None,
    }
}

/// Whether `code` starts with one of the instructions most functions begin
/// with, none of which the kernel refuses: answered without the decoder, whose
/// tables cost about a millisecond to build the first time.
fn common_entry(code: &[u8]) -> bool {
    if code.len() < 8 {
        return false;
    }
    let rex_w_op = |b: u8| {
        matches!(
            b,
            0x01 | 0x29 | 0x31 | 0x33 | 0x39 | 0x3b | 0x63 | 0x81 | 0x83 | 0x85 | 0x89 | 0x8b | 0x8d
        )
    };
    match code[0] {
        // push %reg, mov imm32, jmp, ret
        0x50..=0x57 | 0xb8..=0xbf | 0xe9 | 0xeb | 0xc3 => true,
        // mov, xor, test, sub/add imm8 with ModRM (no prefix)
        0x89 | 0x8b | 0x31 | 0x33 | 0x85 | 0x83 => true,
        // push %r8..%r15
        0x41 => (0x50..=0x57).contains(&code[1]),
        // REX.W forms of the above, lea, movslq
        0x48 | 0x4c | 0x49 | 0x4d => rex_w_op(code[1]),
        // endbr64
        0xf3 => code[1..4] == [0x0f, 0x1e, 0xfa],
        // nopw/nopl
        0x0f => code[1] == 0x1f,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        // push %rbp; mov %rsp,%rbp; mov $1,%eax; pop %rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x5d, 0xc3];
        for ok in [0, 1, 4, 9, 10] {
            assert_eq!(check_boundary(&code, 0x1000, ok), Ok(()), "offset {ok}");
        }
        assert_eq!(check_boundary(&code, 0x1000, 2), Err(1));
        assert_eq!(check_boundary(&code, 0x1000, 6), Err(4));
        // Past the bytes given: not proven, refused.
        assert_eq!(check_boundary(&code, 0x1000, 11), Err(10));
        assert_eq!(check_boundary(&[], 0x1000, 3), Err(0));
    }

    #[test]
    fn endbr64_is_skipped_only_before_an_emulated_push_no_branch_reaches() {
        // endbr64; push %rbp; mov %rsp,%rbp; pop %rbp; ret
        let plain = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3];
        assert_eq!(c_entry_skip(&plain, 0x1000), 4);
        // endbr64; push %r12; ret
        assert_eq!(c_entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x54, 0xc3], 0x1000), 4);
        // endbr64; mov %edi,%eax (single-stepped either way); ret
        assert_eq!(c_entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x89, 0xf8, 0xc3], 0x1000), 0);
        // No endbr64.
        assert_eq!(c_entry_skip(&[0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3], 0x1000), 0);
        // endbr64; push %rbp; jmp back to the push (jmp rel8 -3 from 0x1007).
        let loops = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xeb, 0xfd, 0xc3];
        assert_eq!(c_entry_skip(&loops, 0x1000), 0);
        // endbr64; push %rbp; jmp *%rax (a jump table).
        assert_eq!(c_entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xff, 0xe0], 0x1000), 0);
        // A branch to the entry itself is a call like any other.
        let recursive = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xe8, 0xf6, 0xff, 0xff, 0xff, 0x5d, 0xc3];
        assert_eq!(c_entry_skip(&recursive, 0x1000), 4);
        // endbr64; nopl 0x0(%rax,%rax,1); ret: the nop5 (a patchable entry).
        let patchable = [0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3];
        assert_eq!(c_entry_skip(&patchable, 0x1000), 4);
        // endbr64; nopw (a 4-byte nop, 0f 1f 40 00): not the nop5 the kernel optimises.
        assert_eq!(
            c_entry_skip(&[0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x1f, 0x40, 0x00, 0xc3], 0x1000),
            0
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(refusal(&[0x55, 0x48, 0x89, 0xe5]), None, "push %rbp");
        assert_eq!(
            refusal(&[0x64, 0x48, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0]),
            None,
            "mov %fs:0x10,%rax"
        );
        assert!(refusal(&[0xf0, 0x48, 0x0f, 0xb1, 0x17]).is_some(), "lock cmpxchg");
        assert!(refusal(&[0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0]).is_some(), "cs nopw");
        assert!(refusal(&[0xcc]).is_some(), "int3");
        assert!(refusal(&[0xc5, 0xf9, 0xef, 0xc0]).is_some(), "vpxor (VEX)");
        assert!(refusal(&[0x0f, 0x05]).is_some(), "syscall");
        // The fast path agrees with the decoder on common entries.
        for entry in [
            &[0x55, 0x48, 0x89, 0xe5, 0, 0, 0, 0][..],
            &[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0, 0, 0],
            &[0x48, 0x83, 0xec, 0x08, 0, 0, 0, 0],
            &[0x8b, 0x05, 0, 0, 0, 0, 0xc3, 0],
            &[0x41, 0x57, 0x41, 0x56, 0, 0, 0, 0],
        ] {
            assert!(common_entry(entry), "{entry:02x?}");
            let mut d = Decoder::new(64, entry, DecoderOptions::NONE);
            assert!(!d.decode().is_invalid(), "{entry:02x?}");
        }
        assert!(
            !common_entry(&[0xf0, 0x48, 0x0f, 0xb1, 0x17, 0, 0, 0]),
            "lock is decoded"
        );
    }
    #[test]
    fn go_functions_are_probed_after_their_stack_check() {
        // main.nap of Go 1.19 (cmp rsp, [r14+0x10]; jbe; body; morestack
        // tail jumping back to the entry): probed at its `sub rsp`.
        let nap = hex("493b661076294883ec1048896c2408488d6c24084869c040420f000f1f440000e8fb73fdff488b6c24084883c410c34889442408e80785fdff488b4424086690ebbe");
        assert_eq!(go_entry_skip(&nap, 0x482c40), 6);
        // A larger frame: lea r12, [rsp-0xa0]; cmp r12, [r14+0x10]; jbe rel32.
        let mut grow = hex("4c8da42460ffffff4d3b66100f8608000000");
        grow.extend(hex("4881ec20010000c3")); // sub rsp, 0x120; ret
        grow.extend(hex("e800000000ebdf")); // call; jmp entry
        assert_eq!(go_entry_skip(&grow, 0x1000), 18);
        // Before the register ABI: mov rcx, fs:[-8]; cmp rsp, [rcx+0x10]; jbe.
        let mut old = hex("64488b0c25f8ffffff483b61107605");
        old.extend(hex("4883ec10c3e800000000"));
        assert_eq!(go_entry_skip(&old, 0x1000), 15);
        // No check (nosplit): the entry.
        assert_eq!(go_entry_skip(&hex("4883ec10c3"), 0x1000), 0);
        // Compared against another field, or a jump backwards: the entry.
        assert_eq!(go_entry_skip(&hex("493b66187629c3"), 0x1000), 0);
        // A branch landing on the probe point: the entry.
        let mut looped = nap.clone();
        let n = looped.len();
        looped[n - 1] = (6 - n as i64) as u8; // jmp to entry + 6
        assert_eq!(go_entry_skip(&looped, 0x482c40), 0);
    }

    #[test]
    fn go_returns_are_found_at_every_ret() {
        let nap = hex("493b661076294883ec1048896c2408488d6c24084869c040420f000f1f440000e8fb73fdff488b6c24084883c410c34889442408e80785fdff488b4424086690ebbe");
        assert_eq!(go_return_sites(&nap, 0x1000), Ok(vec![0x1000 + 46]));
        // Two returns, an indirect jump (a jump table) between.
        let two = hex("4885c07401c3ffe0c3");
        assert_eq!(go_return_sites(&two, 0x2000), Ok(vec![0x2005, 0x2008]));
        // A tail call out, code from before the register ABI, no ret, garbage.
        let tail = hex("4883ec10e910000000c3");
        assert!(go_return_sites(&tail, 0x1000).is_err_and(|e| e.contains("tail call")));
        let old = hex("64488b0c25f8ffffff483b61107605c3");
        assert!(go_return_sites(&old, 0x1000).is_err_and(|e| e.contains("1.17")));
        assert!(go_return_sites(&hex("4883ec10ebfe"), 0x1000).is_err_and(|e| e.contains("never")));
        assert!(go_return_sites(&hex("4883"), 0x1000).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }
}
