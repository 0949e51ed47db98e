//! Session programs (`#[uprobe_session]`): their two session calls are
//! pseudo-calls (`sonde_abi::helper::SONDE_SESSION_*`) the loader rewrites per
//! load:
//!
//! | load | `is_return()` | `session_cookie()` |
//! | --- | --- | --- |
//! | native session (6.13+) | kfunc `bpf_session_is_return` | kfunc `bpf_session_cookie` |
//! | emulated, entry copy | `r0 = 0` | `r0 = 0` (the program uses its map) |
//! | emulated, return copy | `r0 = 1` | `r0 = 0` |
//!
//! A third pseudo-call, `SONDE_SESSION_GO_FRAMES`, becomes `r0 = 1` in the
//! copies that serve a Go function (entry, and its return instructions: the
//! emulated slot is then keyed by goroutine frame) and `r0 = 0` elsewhere.
//!
//! Both rewrites keep the instruction count, so no jump moves. A kfunc call is
//! `call` with `src_reg = BPF_PSEUDO_KFUNC_CALL` and the function's BTF type id
//! in vmlinux, read here from `/sys/kernel/btf/vmlinux`.

use std::sync::OnceLock;

use sonde_abi::helper::{SONDE_SESSION_COOKIE, SONDE_SESSION_GO_FRAMES, SONDE_SESSION_IS_RETURN};
use sonde_abi::Insn;

/// `src_reg` of a call to a kernel function by BTF id (5.13).
const PSEUDO_KFUNC_CALL: u8 = 2;
/// `BPF_ALU64 | BPF_MOV | BPF_K`.
const MOV64_IMM: u8 = 0xb7;

/// Which half of an emulated session a program copy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionHalf {
    /// Attached at function entry (`is_return()` is false).
    Entry,
    /// Attached at function return (`is_return()` is true).
    Return,
}

/// Indices of the session pseudo-calls (skipping `ld_imm64` data halves).
fn session_calls(insns: &[Insn]) -> Vec<(usize, u32)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < insns.len() {
        for id in [SONDE_SESSION_IS_RETURN, SONDE_SESSION_COOKIE, SONDE_SESSION_GO_FRAMES] {
            if insns[i].is_helper_call(id) {
                out.push((i, id));
            }
        }
        i += if insns[i].is_ld_imm64() { 2 } else { 1 };
    }
    out
}

/// Whether the program makes session calls (a `#[uprobe_session]` program).
pub(crate) fn uses_session_calls(insns: &[Insn]) -> bool {
    !session_calls(insns).is_empty()
}

/// The BTF ids of `bpf_session_is_return` and `bpf_session_cookie`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionKfuncs {
    pub is_return: u32,
    pub cookie: u32,
}

/// The running kernel's session kfunc ids (read once), or why not.
pub(crate) fn session_kfuncs() -> Result<SessionKfuncs, String> {
    static IDS: OnceLock<Result<SessionKfuncs, String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let path = "/sys/kernel/btf/vmlinux";
        let btf = std::fs::read(path)
            .map_err(|e| format!("cannot read {path} ({e}): the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)"))?;
        let ids = btf_func_ids(&btf, &["bpf_session_is_return", "bpf_session_cookie"])
            .ok_or_else(|| format!("{path} is not BTF sonde can read"))?;
        match (ids[0], ids[1]) {
            (Some(is_return), Some(cookie)) => Ok(SessionKfuncs { is_return, cookie }),
            _ => Err(format!(
                "{path} has no bpf_session_is_return/bpf_session_cookie kfuncs (Linux 6.13+)"
            )),
        }
    })
    .clone()
}

/// A copy of `insns` with the session calls made native (`kfuncs`) or
/// constant (`half`), and the goroutine-frame question answered (`go`).
pub(crate) fn bake_session(insns: &[Insn], native: Option<SessionKfuncs>, half: SessionHalf, go: bool) -> Vec<Insn> {
    let mut out = insns.to_vec();
    for (i, id) in session_calls(insns) {
        if id == SONDE_SESSION_GO_FRAMES {
            out[i] = Insn {
                code: MOV64_IMM,
                regs: 0,
                off: 0,
                imm: i32::from(go),
            };
            continue;
        }
        match native {
            Some(k) => {
                out[i].set_src(PSEUDO_KFUNC_CALL);
                out[i].off = 0;
                out[i].imm = if id == SONDE_SESSION_IS_RETURN {
                    k.is_return
                } else {
                    k.cookie
                } as i32;
            }
            None => {
                let value = id == SONDE_SESSION_IS_RETURN && half == SessionHalf::Return;
                out[i] = Insn {
                    code: MOV64_IMM,
                    regs: 0,
                    off: 0,
                    imm: i32::from(value),
                };
            }
        }
    }
    out
}

/// Type ids of the `BTF_KIND_FUNC` entries named `names` in a BTF blob (ids
/// start at 1). `None` when the blob is malformed.
fn btf_func_ids(btf: &[u8], names: &[&str]) -> Option<Vec<Option<u32>>> {
    let u32_at = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?)) };
    if btf.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = btf.get(hdr_len.checked_add(type_off)?..hdr_len.checked_add(type_off)?.checked_add(type_len)?)?;
    let strings = btf.get(hdr_len.checked_add(str_off)?..)?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let s = strings.get(off..)?;
        Some(&s[..s.iter().position(|&b| b == 0)?])
    };
    let mut found = vec![None; names.len()];
    let (mut at, mut id) = (0usize, 1u32);
    while at + 12 <= types.len() {
        let word =
            |k: usize| u32::from_le_bytes([types[at + k], types[at + k + 1], types[at + k + 2], types[at + k + 3]]);
        let (name_off, info) = (word(0) as usize, word(4));
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => vlen * 12, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => vlen * 8,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF..FUNC, FLOAT, TYPE_TAG
            _ => return None,
        };
        if kind == 12 {
            if let Some(name) = name_at(name_off) {
                if let Some(k) = names.iter().position(|n| n.as_bytes() == name) {
                    found[k] = Some(id);
                }
            }
        }
        at += 12 + extra;
        id += 1;
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: u32) -> Insn {
        Insn {
            code: 0x85,
            imm: id as i32,
            ..Insn::default()
        }
    }

    #[test]
    fn emulated_halves_become_constants_and_native_becomes_kfunc_calls() {
        let prog = vec![
            call(SONDE_SESSION_IS_RETURN),
            call(SONDE_SESSION_COOKIE),
            call(14),
            Insn::exit(),
        ];
        assert!(uses_session_calls(&prog));
        let entry = bake_session(&prog, None, SessionHalf::Entry, false);
        let ret = bake_session(&prog, None, SessionHalf::Return, false);
        assert_eq!((entry[0].code, entry[0].imm, entry[1].imm), (MOV64_IMM, 0, 0));
        assert_eq!((ret[0].code, ret[0].imm, ret[1].imm), (MOV64_IMM, 1, 0));
        let go = vec![call(SONDE_SESSION_GO_FRAMES), Insn::exit()];
        assert_eq!(bake_session(&go, None, SessionHalf::Entry, true)[0].imm, 1);
        assert_eq!(bake_session(&go, None, SessionHalf::Entry, false)[0].imm, 0);
        assert_eq!(bake_session(&go, None, SessionHalf::Entry, false)[0].code, MOV64_IMM);
        assert!(entry[2].is_helper_call(14));
        let native = bake_session(
            &prog,
            Some(SessionKfuncs {
                is_return: 7,
                cookie: 9,
            }),
            SessionHalf::Entry,
            false,
        );
        assert_eq!((native[0].src(), native[0].imm), (PSEUDO_KFUNC_CALL, 7));
        assert_eq!((native[1].src(), native[1].imm), (PSEUDO_KFUNC_CALL, 9));
        assert!(!uses_session_calls(&entry) && !uses_session_calls(&native));
    }

    #[test]
    fn btf_of_this_kernel_names_functions_and_garbage_is_refused() {
        assert_eq!(btf_func_ids(b"not btf at all", &["x"]), None);
        assert_eq!(
            btf_func_ids(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], &["x"]),
            None
        );
        if let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") {
            // Every kernel with BTF has this helper's implementation as a FUNC.
            let ids = btf_func_ids(&btf, &["bpf_map_lookup_elem", "no_such_function_here"]).expect("parse");
            assert!(ids[0].is_some(), "{ids:?}");
            assert_eq!(ids[1], None);
        }
    }
}
