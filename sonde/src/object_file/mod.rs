//! Parsing eBPF objects (ELF, as `sonde-ebpf` + `bpf-linker` produce them).
//!
//! Pure code, no syscalls: programs by section, map definitions, map and global-data
//! relocations, bpf-to-bpf calls (callees appended to each program). Malformed input
//! gives an [`SpecError`], never a panic.

mod link;
mod parse;

use std::ffi::CString;

pub use sonde_abi::insn::Insn;

pub(crate) use link::Unlinked;
pub(crate) use sonde_abi::insn::{PSEUDO_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};

use object::Architecture;

/// Why an object could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// Not an ELF file the `object` crate can read.
    #[error("not a valid ELF object: {0}")]
    Elf(#[from] object::Error),
    /// An ELF file for another machine.
    #[error("not an eBPF object (machine is {0:?}, expected Bpf little-endian 64-bit)")]
    NotBpf(Architecture),
    /// A code section whose name is no known program kind.
    #[error("unknown program section `{0}`: sonde loads uprobe/, uretprobe/, uprobe.session/, usdt/ and tracepoint/CATEGORY/EVENT programs")]
    UnknownSection(String),
    /// A section that cannot be read or has a size that is not whole instructions.
    #[error("section `{section}` is malformed: {reason}")]
    BadSection {
        /// Section name.
        section: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation sonde cannot apply.
    #[error("bad relocation in `{section}` at instruction {insn}: {reason}")]
    BadRelocation {
        /// Section name.
        section: String,
        /// Instruction index in the section.
        insn: usize,
        /// What is wrong.
        reason: String,
    },
    /// A map definition that is too short.
    #[error("map `{0}` has a definition shorter than 20 bytes")]
    BadMapDef(String),
    /// Programs that, with their callees linked in, exceed what the kernel loads.
    #[error("program `{program}` links into more than {limit} instructions (the kernel loads at most {limit})")]
    ProgramTooLarge {
        /// The program.
        program: String,
        /// The limit.
        limit: usize,
    },
    /// All programs together link into more instructions than sonde keeps in memory.
    #[error("the object's programs link into more than {limit} instructions in all")]
    ObjectTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// The most instructions one program may link into: the kernel's own limit
/// (`BPF_COMPLEXITY_LIMIT_INSNS`, which also bounds `insn_cnt` at load).
pub const MAX_PROGRAM_INSNS: usize = 1_000_000;

/// The most instructions all programs of an object may link into (32 MiB):
/// each program carries its own copy of its callees, so a hostile object with
/// many entry points into one large function could otherwise need gigabytes.
pub const MAX_OBJECT_INSNS: usize = 4 * MAX_PROGRAM_INSNS;

pub use sonde_abi::{MapDef, ProbeKind};

/// Where a map comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSource {
    /// Declared with `#[map]`.
    Declared,
    /// A global-data section (`.rodata*`, `.data*`, `.bss*`) as a one-element array
    /// with this initial value; `read_only` for `.rodata`.
    Data {
        /// Initial bytes; empty for `.bss` (the kernel zero-fills the value).
        init: Vec<u8>,
        /// Frozen and read-only to programs.
        read_only: bool,
    },
}

/// A map the object needs.
#[derive(Debug, Clone)]
pub struct MapSpec {
    /// Symbol or section name.
    pub name: String,
    /// Its definition.
    pub def: MapDef,
    /// Declared or global data.
    pub source: MapSource,
}

/// A reference from an instruction to a map, applied once the map exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapReloc {
    /// Index of the `ld_imm64` in the program.
    pub insn: usize,
    /// Index into [`ObjectSpec::maps`].
    pub map: usize,
    /// Offset into the map's value, for global data.
    pub offset: u32,
}

/// A program: its instructions with every callee appended, and its map references.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// Function name.
    pub name: String,
    /// Section name, e.g. `uprobe/count_calls`.
    pub section: String,
    /// A uprobe kind or a tracepoint: from the section name.
    pub kind: ProgramKind,
    /// Instructions, callees linked in.
    pub insns: Vec<Insn>,
    /// Map references to patch.
    pub relocs: Vec<MapReloc>,
}

/// What a program section declares.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgramKind {
    /// A uprobe program: entry, return, session or USDT.
    Probe(ProbeKind),
    /// A kernel tracepoint program (`tracepoint/CATEGORY/EVENT`, Linux 4.7+).
    Tracepoint {
        /// Tracepoint category (`sched`).
        category: String,
        /// Event name (`sched_process_fork`).
        event: String,
    },
}

impl ProgramKind {
    /// The kind a program section declares, if it is one.
    pub fn of_section(section: &str) -> Option<ProgramKind> {
        if let Some((kind, _)) = ProbeKind::from_section(section) {
            return Some(ProgramKind::Probe(kind));
        }
        sonde_abi::program::tracepoint_of_section(section).map(|(c, e)| ProgramKind::Tracepoint {
            category: c.to_string(),
            event: e.to_string(),
        })
    }
}

/// A parsed object.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    /// The `license` section (defaults to none: the kernel then refuses GPL helpers).
    pub license: CString,
    /// Maps, declared ones first.
    pub maps: Vec<MapSpec>,
    /// Programs.
    pub programs: Vec<ProgramSpec>,
}
