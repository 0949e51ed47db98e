//! The parser: sections to programs, symbols to maps, relocations resolved,
//! bpf-to-bpf calls linked.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;

use object::{
    Architecture, Object as _, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionIndex,
    SectionKind, SymbolKind, SymbolSection,
};

use super::link::{CodeSection, ProgramEntry, Target, Unlinked};
use super::*;

impl ObjectSpec {
    /// Parses an object and links every program.
    pub fn parse(data: &[u8]) -> Result<Self, SpecError> {
        let mut unlinked = Unlinked::parse(data)?;
        let mut linked = 0usize;
        let mut programs = Vec::with_capacity(unlinked.entries.len());
        for entry in &unlinked.entries {
            programs.push(unlinked.link(entry, &mut linked)?);
        }
        Ok(ObjectSpec {
            license: std::mem::take(&mut unlinked.license),
            maps: std::mem::take(&mut unlinked.maps),
            programs,
        })
    }
}

impl<'a> Unlinked<'a> {
    /// Parses an object: its maps, its code (borrowed from `data`) with
    /// relocations and function boundaries, and its programs' entries.
    pub(crate) fn parse(data: &'a [u8]) -> Result<Self, SpecError> {
        let file = object::File::parse(data)?;
        if file.architecture() != Architecture::Bpf || !file.is_little_endian() || !file.is_64() {
            return Err(SpecError::NotBpf(file.architecture()));
        }

        let mut license = CString::default();
        let mut maps = Vec::new();
        // Map definitions by their offset in `maps` (local maps are reached
        // through the section's symbol).
        let mut map_by_offset: HashMap<u64, usize> = HashMap::with_capacity(32);
        // Global-data maps, appended after the declared ones once those are known.
        let mut data_specs: Vec<(SectionIndex, MapSpec)> = Vec::new();
        // Sized once (a section count is small): no rehash as sections are filed.
        let mut code: HashMap<SectionIndex, CodeSection> = HashMap::with_capacity(file.sections().count());
        let mut maps_section = None;

        for section in file.sections() {
            // Borrowed: most sections (debug info) are only looked at by name.
            let name = section.name().unwrap_or_default();
            let bad = |reason: String| SpecError::BadSection {
                section: name.to_string(),
                reason,
            };
            if name == "license" {
                let bytes = section.data().map_err(|e| bad(e.to_string()))?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                license = CString::new(&bytes[..end]).unwrap_or_default();
            } else if name == "maps" {
                maps_section = Some(section.index());
            } else if section.kind() == SectionKind::Text {
                let bytes = section.data().map_err(|e| bad(e.to_string()))?;
                if bytes.len() % 8 != 0 {
                    return Err(bad(format!("{} bytes is not whole instructions", bytes.len())));
                }
                if name != ".text" && ProgramKind::of_section(name).is_none() {
                    return Err(SpecError::UnknownSection(name.to_string()));
                }
                code.insert(
                    section.index(),
                    CodeSection {
                        name: name.into(),
                        code: bytes.into(),
                        relocs: Vec::new(),
                        funcs: BTreeMap::new(),
                    },
                );
            } else if is_data_section(name) && section.size() > 0 {
                // `.bss` has no bytes in the file: the kernel zero-fills the map, so
                // nothing is allocated for it (a 1 TiB `.bss` costs nothing here and
                // is refused by its size below).
                let init = if name.starts_with(".bss") {
                    Vec::new()
                } else {
                    let bytes = section.data().map_err(|e| bad(e.to_string()))?;
                    if bytes.len() as u64 != section.size() {
                        return Err(bad("data shorter than the section".into()));
                    }
                    bytes.to_vec()
                };
                let value_size = u32::try_from(section.size())
                    .map_err(|_| bad(format!("{} bytes is too large for a map value", section.size())))?;
                data_specs.push((
                    section.index(),
                    MapSpec {
                        name: name.to_string(),
                        def: MapDef::new(sonde_abi::MapType::Array, 4, value_size, 1),
                        source: MapSource::Data {
                            init,
                            read_only: name.starts_with(".rodata"),
                        },
                    },
                ));
            }
        }

        // Declared maps and function boundaries from the symbol table.
        for sym in file.symbols() {
            let SymbolSection::Section(sec) = sym.section() else {
                continue;
            };
            if Some(sec) == maps_section && sym.kind() != SymbolKind::Section {
                let name = sym.name().unwrap_or_default();
                if name.is_empty() {
                    continue;
                }
                let section = file.section_by_index(sec)?;
                let bytes = section.data()?;
                let def = usize::try_from(sym.address())
                    .ok()
                    .and_then(|start| MapDef::parse(bytes.get(start..)?))
                    .ok_or_else(|| SpecError::BadMapDef(name.to_string()))?;
                map_by_offset.insert(sym.address(), maps.len());
                maps.push(MapSpec {
                    name: map_name(name),
                    def,
                    source: MapSource::Declared,
                });
            } else if sym.kind() == SymbolKind::Text {
                if let Some(cs) = code.get_mut(&sec) {
                    // Sizes are checked against the section when a function is linked.
                    let start = usize::try_from(sym.address() / 8).unwrap_or(usize::MAX);
                    let len = usize::try_from(sym.size() / 8).unwrap_or(usize::MAX);
                    cs.funcs.insert(start, len);
                }
            }
        }
        // A function of unknown size (0) ends where the next one starts.
        for cs in code.values_mut() {
            let starts: Vec<usize> = cs.funcs.keys().copied().collect();
            for (i, start) in starts.iter().enumerate() {
                if cs.funcs[start] == 0 {
                    let end = starts.get(i + 1).copied().unwrap_or(cs.len());
                    cs.funcs.insert(*start, end.saturating_sub(*start));
                }
            }
        }
        // Declared maps come first so their indices are stable; global data follows.
        let mut data_maps: HashMap<SectionIndex, usize> = HashMap::new();
        for (section, spec) in data_specs {
            data_maps.insert(section, maps.len());
            maps.push(spec);
        }

        // Relocations of code sections. A symbol is looked up once, however
        // many instructions point at it (`targets`, by symbol index).
        let mut targets: Vec<Target> = Vec::new();
        // Indexed by symbol index: one slot per entry of the symbol table
        // (an index past it is refused by `symbol_by_index`).
        let mut target_of: Vec<Option<u32>> = vec![None; file.symbols().count() + 1];
        for section in file.sections() {
            let Some(cs) = code.get_mut(&section.index()) else {
                continue;
            };
            for (offset, rel) in section.relocations() {
                let insn = (offset / 8) as usize;
                let bad = |reason: &str| SpecError::BadRelocation {
                    section: cs.name.to_string(),
                    insn,
                    reason: reason.to_string(),
                };
                if offset % 8 != 0 || insn >= cs.len() {
                    return Err(bad("offset outside the section's instructions"));
                }
                let RelocationTarget::Symbol(si) = rel.target() else {
                    return Err(bad("target is not a symbol"));
                };
                if let RelocationFlags::Elf { r_type } = rel.flags() {
                    // R_BPF_64_64 (ld_imm64), R_BPF_64_32 (call), R_BPF_64_ABS*.
                    if !matches!(r_type, 1 | 2 | 3 | 10) {
                        return Err(bad(&format!("relocation type {r_type} is not supported")));
                    }
                }
                let target = match target_of.get(si.0).copied().flatten() {
                    Some(t) => t,
                    None => {
                        let sym = file.symbol_by_index(si).map_err(|_| bad("symbol index out of range"))?;
                        let section = match sym.section() {
                            SymbolSection::Section(s) => Some(s),
                            _ => None,
                        };
                        // A declared map: a named symbol in `maps`, found by its
                        // offset there (the section's own symbol is the local
                        // maps' base, resolved when linked).
                        let map = (section.is_some() && section == maps_section && sym.kind() != SymbolKind::Section)
                            .then(|| map_by_offset.get(&sym.address()).copied())
                            .flatten();
                        targets.push(Target {
                            section,
                            value: sym.address(),
                            map,
                            name: sym.name().unwrap_or_default().into(),
                        });
                        let t = u32::try_from(targets.len() - 1).map_err(|_| bad("too many symbols"))?;
                        let slot = target_of
                            .get_mut(si.0)
                            .ok_or_else(|| bad("symbol index out of range"))?;
                        *slot = Some(t);
                        t
                    }
                };
                cs.relocs.push((insn, target));
            }
        }
        for cs in code.values_mut() {
            // In instruction order (stable: of two on one instruction the last
            // counts, as the ELF order gives them).
            cs.relocs.sort_by_key(|&(insn, _)| insn);
            cs.relocs.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
        }

        // Programs: function symbols in program sections, by name.
        let mut entries = Vec::new();
        for sym in file.symbols() {
            if sym.kind() != SymbolKind::Text {
                continue;
            }
            let SymbolSection::Section(section) = sym.section() else {
                continue;
            };
            // Only program sections have entries.
            let Some(kind) = code.get(&section).and_then(|cs| ProgramKind::of_section(&cs.name)) else {
                continue;
            };
            entries.push(ProgramEntry {
                name: sym.name().unwrap_or_default().to_string(),
                section,
                start: (sym.address() / 8) as usize,
                kind,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Unlinked {
            license,
            maps,
            code,
            targets,
            maps_at: (maps_section, map_by_offset),
            data_maps,
            entries,
        })
    }
}

fn is_data_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"]
        .iter()
        .filter_map(|p| name.strip_prefix(p))
        .any(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A map's name: its symbol, or for a Rust-mangled one (a map static that is
/// not `#[no_mangle]`, such as `sonde_ebpf::session::SESSION_SLOTS`) the
/// item's own name, `SESSION_SLOTS`.
fn map_name(symbol: &str) -> String {
    // Only Rust's manglings (v0 `_R`, legacy `_ZN`) are worth a demangling try.
    if !(symbol.starts_with("_R") || symbol.starts_with("_ZN")) {
        return symbol.to_string();
    }
    match rustc_demangle::try_demangle(symbol) {
        Ok(d) => {
            let path = format!("{d:#}");
            path.rsplit("::").next().unwrap_or(&path).to_string()
        }
        Err(_) => symbol.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mangled_map_statics_are_named_by_their_item() {
        assert_eq!(
            super::map_name("_RNvNtCs6G8LWwGhXYZ_10sonde_ebpf7session13SESSION_SLOTS"),
            "SESSION_SLOTS"
        );
        assert_eq!(super::map_name("COUNTS"), "COUNTS");
    }
}
