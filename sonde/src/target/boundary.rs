//! Instruction boundaries: a uprobe placed inside an instruction corrupts it, so
//! on x86-64 an offset into a function must be where an instruction starts.

use iced_x86::{Decoder, DecoderOptions};

/// Whether `offset` is an instruction boundary of the x86-64 code `code`
/// (a function's bytes from its entry), decoding linearly from the entry.
/// `Err(previous)` gives the start of the instruction that covers `offset`.
pub(crate) fn check_x86_64(code: &[u8], address: u64, offset: u64) -> Result<(), u64> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let target = address + offset;
    while decoder.can_decode() {
        let ip = decoder.ip();
        if ip == target {
            return Ok(());
        }
        let insn = decoder.decode();
        if ip < target && target < insn.next_ip() {
            return Err(ip - address);
        }
    }
    // Past the decoded bytes: not inside a known instruction.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries() {
        // push %rbp; mov %rsp,%rbp; mov $1,%eax; pop %rbp; ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x5d, 0xc3];
        for ok in [0, 1, 4, 9, 10] {
            assert_eq!(check_x86_64(&code, 0x1000, ok), Ok(()), "offset {ok}");
        }
        assert_eq!(check_x86_64(&code, 0x1000, 2), Err(1));
        assert_eq!(check_x86_64(&code, 0x1000, 6), Err(4));
    }
}
