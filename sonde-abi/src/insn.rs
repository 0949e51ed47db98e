//! One eBPF instruction (`struct bpf_insn`), and the opcodes sonde reads or
//! rewrites (map references, bpf-to-bpf calls, the cookie helper).

/// `struct bpf_insn`: opcode, dst/src registers, offset, immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high one.
    pub regs: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// `BPF_JMP | BPF_CALL`.
pub const CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`.
pub const EXIT: u8 = 0x95;
/// `BPF_LD | BPF_IMM | BPF_DW`: the first half of a 64-bit immediate load.
pub const LD_IMM64: u8 = 0x18;
/// `src_reg` of a call to a bpf-to-bpf function.
pub const PSEUDO_CALL: u8 = 1;
/// `src_reg` of an `ld_imm64` holding a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of an `ld_imm64` holding a map fd and an offset into its value.
pub const PSEUDO_MAP_VALUE: u8 = 2;

impl Insn {
    /// Decodes 8 little-endian bytes.
    pub fn from_bytes(b: &[u8; 8]) -> Self {
        Insn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The source register.
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }

    /// The destination register.
    pub fn dst(&self) -> u8 {
        self.regs & 0xf
    }

    /// Sets the source register.
    pub fn set_src(&mut self, src: u8) {
        self.regs = (self.regs & 0x0f) | (src << 4);
    }

    /// A call to kernel helper `id` (see [`crate::helper`]).
    pub fn is_helper_call(&self, id: u32) -> bool {
        self.code == CALL && self.src() == 0 && self.imm as u32 == id
    }

    /// A bpf-to-bpf call.
    pub fn is_pseudo_call(&self) -> bool {
        self.code == CALL && self.src() == PSEUDO_CALL
    }

    /// The first half of a 64-bit immediate load.
    pub fn is_ld_imm64(&self) -> bool {
        self.code == LD_IMM64
    }

    /// `r{dst} = imm64` as two instructions.
    pub fn ld_imm64(dst: u8, value: u64) -> [Insn; 2] {
        [
            Insn {
                code: LD_IMM64,
                regs: dst & 0xf,
                off: 0,
                imm: value as u32 as i32,
            },
            Insn {
                imm: (value >> 32) as u32 as i32,
                ..Insn::default()
            },
        ]
    }

    /// `exit`.
    pub fn exit() -> Insn {
        Insn {
            code: EXIT,
            ..Insn::default()
        }
    }
}
