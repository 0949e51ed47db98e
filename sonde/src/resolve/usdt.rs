//! USDT probes (`<sys/sdt.h>` `DTRACE_PROBE*`/`STAP_PROBE*`): the notes of
//! `.note.stapsdt`, each a probe point's address, its semaphore (the counter a
//! `PROVIDER_NAME_ENABLED()` guard reads, raised by the kernel through the
//! uprobe's `ref_ctr_offset`) and its argument specs (`-4@%edi 8@-16(%rbp) 4@$5`).
//! Addresses are rebased with `.stapsdt.base` (prelinked binaries) and turned
//! into file offsets through the file's own segments.

use object::read::elf::{FileHeader, ProgramHeader as _, SectionHeader as _};
use object::Object as _;

use super::{BinaryFile, TargetError};
use crate::arch::Operand;

/// Where a USDT argument's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsdtArgLocation {
    /// A constant (`$5`).
    Const(i64),
    /// A register (`%edi`): its offset in the kernel's saved registers
    /// (`struct pt_regs`).
    Reg {
        /// Byte offset in `struct pt_regs`.
        pt_regs_offset: u16,
    },
    /// Memory at a register plus an offset (`-16(%rbp)`).
    Mem {
        /// Byte offset of the base register in `struct pt_regs`.
        pt_regs_offset: u16,
        /// Added to the register.
        offset: i64,
    },
}

/// One USDT argument: size, sign and location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsdtArg {
    /// Bytes (1, 2, 4 or 8).
    pub size: u8,
    /// Sign-extended when read.
    pub signed: bool,
    /// Where it is.
    pub location: UsdtArgLocation,
}

/// A USDT probe point of a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsdtProbe {
    /// Provider (`python`).
    pub provider: String,
    /// Probe name (`function__entry`).
    pub name: String,
    /// File offset of the probe's `nop`.
    pub file_offset: u64,
    /// Virtual address of the probe point (rebased).
    pub address: u64,
    /// File offset of its semaphore, when guarded.
    pub semaphore: Option<u64>,
    /// The argument specs as written in the note.
    pub args_text: String,
    /// The arguments, or why they cannot be read (an operand form sonde does
    /// not decode: the probe still counts).
    pub args: Result<Vec<UsdtArg>, String>,
}

impl UsdtProbe {
    /// The spec a `#[usdt]` program reads this probe's arguments with, carrying
    /// the user's `cookie`; an error when the note's arguments cannot be read.
    pub fn spec(&self, cookie: u64) -> Result<sonde_abi::usdt::UsdtSpec, String> {
        use sonde_abi::usdt::{UsdtArgSpec, UsdtSpec, USDT_ARG_CONST, USDT_ARG_MEM, USDT_ARG_REG, USDT_MAX_ARGS};
        let args = self
            .args
            .as_ref()
            .map_err(|e| format!("{}: arguments {e}", self.label()))?;
        let mut spec = UsdtSpec {
            cookie,
            nargs: args.len().min(USDT_MAX_ARGS) as u32,
            ..UsdtSpec::default()
        };
        for (slot, a) in spec.args.iter_mut().zip(args) {
            let (kind, reg_offset, value) = match a.location {
                UsdtArgLocation::Const(v) => (USDT_ARG_CONST, 0, v),
                UsdtArgLocation::Reg { pt_regs_offset } => (USDT_ARG_REG, pt_regs_offset, 0),
                UsdtArgLocation::Mem { pt_regs_offset, offset } => (USDT_ARG_MEM, pt_regs_offset, offset),
            };
            *slot = UsdtArgSpec {
                kind,
                size: u32::from(a.size),
                signed: u32::from(a.signed),
                reg_offset: u32::from(reg_offset),
                value,
            };
        }
        Ok(spec)
    }

    /// `usdt:PROVIDER:NAME`, as patterns and reports spell it.
    pub fn label(&self) -> String {
        format!("usdt:{}:{}", self.provider, self.name)
    }
}

/// Every USDT probe of `binary` (none when it has no `.note.stapsdt`).
pub fn usdt_probes(binary: &BinaryFile) -> Result<Vec<UsdtProbe>, TargetError> {
    let data = binary.map()?;
    let bad = |e: object::Error| TargetError::NotElf {
        path: binary.path().to_path_buf(),
        reason: e.to_string(),
    };
    match object::FileKind::parse(&*data).map_err(bad)? {
        object::FileKind::Elf64 => {
            let elf = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).map_err(bad)?;
            read(&elf, &data).map_err(bad)
        }
        _ => Ok(Vec::new()),
    }
}

fn read<Elf: FileHeader<Endian = object::Endianness>>(
    elf: &object::read::elf::ElfFile<'_, Elf>,
    data: &[u8],
) -> object::Result<Vec<UsdtProbe>> {
    let e = elf.endian();
    // (vaddr, filesz, offset, exec) of every PT_LOAD.
    let segments: Vec<(u64, u64, u64, bool)> = elf
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(e) == object::elf::PT_LOAD)
        .map(|p| {
            (
                p.p_vaddr(e).into(),
                p.p_filesz(e).into(),
                p.p_offset(e).into(),
                p.p_flags(e) & object::elf::PF_X != 0,
            )
        })
        .collect();
    let to_offset = |addr: u64, exec: bool| {
        segments
            .iter()
            .find(|(va, sz, _, x)| (!exec || *x) && addr >= *va && addr - va < *sz)
            .map(|(va, _, off, _)| addr - va + off)
    };
    let base = elf
        .section_by_name(".stapsdt.base")
        .map(|s| object::ObjectSection::address(&s));
    let mut out = Vec::new();
    for section in elf.elf_section_table().iter() {
        let name = elf.elf_section_table().section_name(e, section).unwrap_or_default();
        if name != b".note.stapsdt" {
            continue;
        }
        let Some(mut notes) = section.notes(e, data)? else {
            continue;
        };
        while let Some(note) = notes.next()? {
            if note.name() != b"stapsdt" || note.n_type(e) != 3 {
                continue;
            }
            let desc = note.desc();
            if desc.len() < 24 {
                continue;
            }
            let word = |i: usize| u64::from_le_bytes(desc[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            let (mut pc, note_base, mut sema) = (word(0), word(1), word(2));
            if let Some(b) = base {
                if note_base != 0 {
                    pc = pc.wrapping_add(b).wrapping_sub(note_base);
                    if sema != 0 {
                        sema = sema.wrapping_add(b).wrapping_sub(note_base);
                    }
                }
            }
            let mut strings = desc[24..]
                .split(|&c| c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned());
            let provider = strings.next().unwrap_or_default();
            let name = strings.next().unwrap_or_default();
            let args_text = strings.next().unwrap_or_default();
            let Some(file_offset) = to_offset(pc, true) else {
                continue;
            };
            out.push(UsdtProbe {
                provider,
                name,
                file_offset,
                address: pc,
                semaphore: (sema != 0).then(|| to_offset(sema, false)).flatten(),
                args: parse_args(&args_text),
                args_text,
            });
        }
    }
    Ok(out)
}

/// Parses a probe's argument specs, as the assembler of the machine sonde was
/// built for writes them (`-4@%edi 8@-16(%rbp) 4@$5` on x86-64, `-4@w0
/// 8@[x29, -16] 4@5` on arm64; `crate::arch`).
pub fn parse_args(text: &str) -> Result<Vec<UsdtArg>, String> {
    specs(text)
        .map(|spec| parse_arg(spec, crate::arch::host::usdt_operand))
        .collect()
}

/// The argument specs of a note, split at blanks outside brackets (arm64
/// writes `8@[x29, -16]`).
fn specs(text: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0i32;
    text.split(move |c: char| {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        c.is_whitespace() && depth <= 0
    })
    .filter(|s| !s.is_empty())
}

fn parse_arg(spec: &str, operand: fn(&str) -> Result<Operand, String>) -> Result<UsdtArg, String> {
    let (size, text) = spec.split_once('@').ok_or_else(|| format!("`{spec}`: no size@"))?;
    let size: i8 = size.parse().map_err(|_| format!("`{spec}`: bad size"))?;
    let signed = size < 0;
    let size = size.unsigned_abs();
    if ![1, 2, 4, 8].contains(&size) {
        return Err(format!("`{spec}`: size {size}"));
    }
    let location = match operand(text).map_err(|e| format!("`{spec}`: {e}"))? {
        Operand::Const(v) => UsdtArgLocation::Const(v),
        Operand::Reg(pt_regs_offset) => UsdtArgLocation::Reg { pt_regs_offset },
        Operand::Mem { reg, offset } => UsdtArgLocation::Mem {
            pt_regs_offset: reg,
            offset,
        },
    };
    Ok(UsdtArg { size, signed, location })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse_args` with one machine's operand syntax.
    fn parse_as(text: &str, operand: fn(&str) -> Result<Operand, String>) -> Result<Vec<UsdtArg>, String> {
        specs(text).map(|s| parse_arg(s, operand)).collect()
    }

    fn parse_x86(text: &str) -> Result<Vec<UsdtArg>, String> {
        parse_as(text, crate::arch::x86_64::usdt_operand)
    }

    #[test]
    fn arg_specs() {
        let args = parse_x86("-4@%edi 8@-16(%rbp) 8@%rax 4@$5 -8@%r12 1@(%r8)").expect("parses");
        assert_eq!(
            args[0],
            UsdtArg {
                size: 4,
                signed: true,
                location: UsdtArgLocation::Reg { pt_regs_offset: 112 }
            }
        );
        assert_eq!(
            args[1].location,
            UsdtArgLocation::Mem {
                pt_regs_offset: 32,
                offset: -16
            }
        );
        assert_eq!(args[2].location, UsdtArgLocation::Reg { pt_regs_offset: 80 });
        assert_eq!(args[3].location, UsdtArgLocation::Const(5));
        assert_eq!(args[4].location, UsdtArgLocation::Reg { pt_regs_offset: 24 });
        assert_eq!(
            args[5].location,
            UsdtArgLocation::Mem {
                pt_regs_offset: 72,
                offset: 0
            }
        );
        assert!(parse_x86("8@sym(%rip)").is_err());
        assert!(parse_x86("8@(%rax,%rbx,8)").is_err());
        assert!(parse_x86("3@%rax").is_err());
        assert_eq!(parse_x86("").expect("no args"), vec![]);
    }

    #[test]
    fn arm64_arg_specs() {
        let parse = |text: &str| parse_as(text, crate::arch::aarch64::usdt_operand);
        // As GCC writes them for <sys/sdt.h> on arm64 (and libbpf's tests).
        let args = parse("-4@w0 8@[x29, -16] 4@5 -8@[sp, 12] 8@x1").expect("parses");
        assert_eq!(
            args[0],
            UsdtArg {
                size: 4,
                signed: true,
                location: UsdtArgLocation::Reg { pt_regs_offset: 0 }
            }
        );
        assert_eq!(
            args[1].location,
            UsdtArgLocation::Mem {
                pt_regs_offset: 232,
                offset: -16
            }
        );
        assert_eq!(args[2].location, UsdtArgLocation::Const(5));
        assert_eq!(
            args[3],
            UsdtArg {
                size: 8,
                signed: true,
                location: UsdtArgLocation::Mem {
                    pt_regs_offset: 248,
                    offset: 12
                }
            }
        );
        assert_eq!(args[4].location, UsdtArgLocation::Reg { pt_regs_offset: 8 });
        assert_eq!(parse("8@[x29,  -16]  ").expect("blanks").len(), 1);
        assert!(parse("3@x0").is_err());
        assert!(parse("8@%rdi").is_err_and(|e| e.contains("%rdi")));
    }
}
