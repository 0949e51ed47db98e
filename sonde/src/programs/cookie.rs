//! The emulated cookie: on kernels without `bpf_get_attach_cookie` (before 5.15),
//! every call to it becomes a call to an appended two-line function that returns
//! the constant. A bpf-to-bpf call is one instruction like the helper call and has
//! the same register contract (r1-r5 clobbered, result in r0), so no jump offset
//! of the program moves.

use sonde_abi::Insn;

use sonde_abi::helper::GET_ATTACH_COOKIE;

/// Indices of the cookie reads (skipping the data halves of `ld_imm64`).
fn cookie_calls(insns: &[Insn]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < insns.len() {
        if insns[i].is_helper_call(GET_ATTACH_COOKIE) {
            out.push(i);
        }
        i += if insns[i].is_ld_imm64() { 2 } else { 1 };
    }
    out
}

/// Whether the program reads its cookie.
pub(crate) fn uses_cookie(insns: &[Insn]) -> bool {
    !cookie_calls(insns).is_empty()
}

/// A copy of `insns` where every cookie read yields `cookie`.
pub(crate) fn bake_cookie(insns: &[Insn], cookie: u64) -> Vec<Insn> {
    let mut out = insns.to_vec();
    let sub = out.len();
    for i in cookie_calls(insns) {
        out[i].set_src(crate::object_file::PSEUDO_CALL);
        out[i].imm = (sub as i64 - i as i64 - 1) as i32;
    }
    out.extend_from_slice(&Insn::ld_imm64(0, cookie));
    out.push(Insn::exit());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: i32) -> Insn {
        Insn {
            code: 0x85,
            imm: id,
            ..Insn::default()
        }
    }

    #[test]
    fn rewrites_every_cookie_call_and_keeps_64_bits() {
        let cookie = GET_ATTACH_COOKIE as i32;
        let prog = vec![call(cookie), Insn::exit(), call(cookie), call(14), Insn::exit()];
        assert!(uses_cookie(&prog));
        let out = bake_cookie(&prog, 0xdead_beef_0000_0001);
        assert_eq!(out.len(), prog.len() + 3);
        // Call at 0 -> function at 5: imm = 5 - 0 - 1.
        assert!(out[0].is_pseudo_call());
        assert_eq!(out[0].imm, 4);
        assert!(out[2].is_pseudo_call());
        assert_eq!(out[2].imm, 2);
        // Other helpers untouched.
        assert!(out[3].is_helper_call(14));
        assert!(!uses_cookie(&out));
        let lo = out[5].imm as u32 as u64;
        let hi = out[6].imm as u32 as u64;
        assert_eq!(hi << 32 | lo, 0xdead_beef_0000_0001);
        assert_eq!(out[7], Insn::exit());
    }

    #[test]
    fn ld_imm64_data_is_not_mistaken_for_a_call() {
        // The high half of an ld_imm64 whose bytes look like the cookie call.
        let mut ld = Insn::ld_imm64(1, 0);
        ld[1] = call(GET_ATTACH_COOKIE as i32);
        let prog = vec![ld[0], ld[1], Insn::exit()];
        assert!(!uses_cookie(&prog));
        let out = bake_cookie(&prog, 7);
        assert_eq!(out[1], call(GET_ATTACH_COOKIE as i32));
    }
}
