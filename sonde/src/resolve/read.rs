//! Reading one ELF file's symbol tables, segments, executable sections,
//! build-id and debuglink: everything resolution takes from a binary, in one pass
//! over one mapping.

use std::path::Path;
use std::sync::Arc;

use object::elf::{PF_X, PT_LOAD, SHN_UNDEF, STT_FUNC, STT_GNU_IFUNC};
use object::read::elf::{ElfFile, FileHeader, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::Object as _;

use super::TargetError;

#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub vaddr: u64,
    pub filesz: u64,
    pub offset: u64,
    pub exec: bool,
}

/// One symbol as read, before aliases are folded: its name borrowed from
/// the file (or from a lossy copy of it) for as long as the sink runs.
pub(super) struct RawSym<'a> {
    pub name: &'a str,
    pub version: Option<(Arc<str>, bool)>,
    pub address: u64,
    pub size: u64,
    pub ifunc: bool,
}

/// Which defined function symbols to keep.
#[derive(Clone, Copy)]
pub(super) enum Keep<'a> {
    /// Every one.
    All,
    /// Those whose name (without a version suffix) is one of these (bytes:
    /// compared before any UTF-8 check).
    Named(&'a rustc_hash::FxHashSet<&'a [u8]>),
    /// Those at one of these addresses (the aliases of the named ones).
    At(&'a rustc_hash::FxHashSet<u64>),
}

/// What one ELF file's symbol tables hold.
#[derive(Default)]
pub(super) struct Symbols {
    /// The addresses of the defined functions kept ([`parse_symbols_keeping`]).
    pub defined: Vec<u64>,
    pub code_sections: Vec<(u64, u64)>,
    pub imported: Vec<String>,
    pub has_symtab: bool,
    pub segments: Vec<Segment>,
    pub debuglink: Option<(String, u32)>,
    pub build_id: Option<Vec<u8>>,
    pub count: usize,
}

/// Where each defined function symbol goes as it is read, with the file's
/// `PT_LOAD` segments (to place it): folded into a table at once, or kept.
pub(super) type Sink<'a> = &'a mut dyn FnMut(&[Segment], RawSym<'_>);

fn read_elf<Elf: FileHeader<Endian = object::Endianness>>(
    elf: &ElfFile<'_, Elf>,
    data: &[u8],
    keep: Keep<'_>,
    sink: Sink<'_>,
) -> object::Result<Symbols> {
    let e = elf.endian();
    let mut out = Symbols {
        segments: elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(e) == PT_LOAD)
            .map(|p| Segment {
                vaddr: p.p_vaddr(e).into(),
                filesz: p.p_filesz(e).into(),
                offset: p.p_offset(e).into(),
                exec: p.p_flags(e) & PF_X != 0,
            })
            .collect(),
        debuglink: elf
            .gnu_debuglink()?
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc)),
        build_id: elf.build_id()?.map(<[u8]>::to_vec),
        ..Symbols::default()
    };
    let sections = elf.elf_section_table();
    out.code_sections = sections
        .iter()
        .filter(|s| Into::<u64>::into(s.sh_flags(e)) & u64::from(object::elf::SHF_EXECINSTR) != 0)
        .map(|s| {
            let addr: u64 = s.sh_addr(e).into();
            (addr, addr.saturating_add(s.sh_size(e).into()))
        })
        .collect();
    out.code_sections.sort_unstable();
    let versions = sections.versions(e, data)?;
    for (table, dynamic) in [(elf.elf_symbol_table(), false), (elf.elf_dynamic_symbol_table(), true)] {
        if !dynamic && !table.is_empty() {
            out.has_symtab = true;
        }
        out.count += table.len();
        let strings = table.strings();
        for (index, sym) in table.enumerate() {
            let kind = sym.st_type();
            if kind != STT_FUNC && kind != STT_GNU_IFUNC {
                continue;
            }
            let defined = sym.st_shndx(e) != SHN_UNDEF;
            // By address: skipped before its name is even looked at.
            if let Keep::At(addrs) = keep {
                if defined && !addrs.contains(&sym.st_value(e).into()) {
                    continue;
                }
            }
            let Ok(raw) = sym.name(e, strings) else { continue };
            if raw.is_empty() {
                continue;
            }
            // Skipped before any allocation or UTF-8 check: a few names of a
            // large table cost one scan.
            if let Keep::Named(names) = keep {
                let plain = raw.split(|&b| b == b'@').next().unwrap_or(raw);
                if defined && !names.contains(plain) {
                    continue;
                }
            }
            // Valid UTF-8 (nearly always) is borrowed, not re-scanned and copied.
            let raw = match std::str::from_utf8(raw) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(raw),
            };
            if sym.st_shndx(e) == SHN_UNDEF {
                let plain = raw.split('@').next().unwrap_or(&raw);
                out.imported.push(plain.to_string());
                continue;
            }
            // .symtab spells versions into the name; .dynsym keeps them in .gnu.version.
            let at = raw.as_bytes().iter().position(|&b| b == b'@');
            let (name, version) = match at.map(|i| (&raw[..i], &raw[i + 1..])) {
                Some((n, v)) => match v.strip_prefix('@') {
                    Some(v) => (n, Some((Arc::from(v), true))),
                    None => (n, Some((Arc::from(v), false))),
                },
                None => {
                    let v = match (&versions, dynamic) {
                        (Some(vt), true) => {
                            let vi = vt.version_index(e, index);
                            vt.version(vi)
                                .ok()
                                .flatten()
                                .filter(|_| !vi.is_global() && !vi.is_local())
                                .map(|ver| (Arc::from(String::from_utf8_lossy(ver.name())), !vi.is_hidden()))
                        }
                        _ => None,
                    };
                    (&*raw, v)
                }
            };
            sink(
                &out.segments,
                RawSym {
                    name,
                    version,
                    address: sym.st_value(e).into(),
                    size: sym.st_size(e).into(),
                    ifunc: kind == STT_GNU_IFUNC,
                },
            );
        }
    }
    Ok(out)
}

/// The symbols of `data`, keeping the defined functions `keep` accepts in
/// [`Symbols::defined`] (imports always).
pub(super) fn parse_symbols_keeping(path: &Path, data: &[u8], keep: Keep<'_>) -> Result<Symbols, TargetError> {
    let mut defined = Vec::new();
    let mut syms = parse_symbols_into(path, data, keep, &mut |_, s| defined.push(s.address))?;
    syms.defined = defined;
    Ok(syms)
}

/// [`parse_symbols_keeping`], each defined function handed to `sink` as it is
/// read instead of kept (a table folds them at once: no list of every symbol
/// made first).
pub(super) fn parse_symbols_into(
    path: &Path,
    data: &[u8],
    keep: Keep<'_>,
    sink: Sink<'_>,
) -> Result<Symbols, TargetError> {
    let not_elf = |reason: String| TargetError::NotElf {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(rest) = data.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
        return Err(TargetError::Script {
            path: path.to_path_buf(),
            interpreter: format!("#!{}", String::from_utf8_lossy(&line[..line.len().min(200)]).trim()),
        });
    }
    let file = object::File::parse(data).map_err(|e| not_elf(e.to_string()))?;
    let host = host_architecture();
    if file.architecture() != host {
        return Err(TargetError::WrongArchitecture {
            path: path.to_path_buf(),
            found: crate::arch::name_of(file.architecture()),
            expected: crate::arch::host::NAME.to_string(),
        });
    }
    match &file {
        object::File::Elf64(elf) => read_elf(elf, data, keep, sink),
        object::File::Elf32(elf) => read_elf(elf, data, keep, sink),
        _ => return Err(not_elf("not an ELF file".into())),
    }
    .map_err(|e| not_elf(e.to_string()))
}

/// How many entries `.symtab` and `.dynsym` hold together (0 when `data` is
/// not an ELF file): read from the section headers, no symbol looked at.
pub(super) fn symbol_count(data: &[u8]) -> usize {
    match object::File::parse(data) {
        Ok(object::File::Elf64(elf)) => elf.elf_symbol_table().len() + elf.elf_dynamic_symbol_table().len(),
        Ok(object::File::Elf32(elf)) => elf.elf_symbol_table().len() + elf.elf_dynamic_symbol_table().len(),
        _ => 0,
    }
}

/// The machine uprobes here can probe: the one this library was built for.
fn host_architecture() -> object::Architecture {
    crate::arch::host::MACHINE
}
