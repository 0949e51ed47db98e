//! Function symbols of an ELF binary and their file offsets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::elf::{PF_X, PT_LOAD};
use object::read::elf::ProgramHeader as _;
use object::{Object as _, ObjectSymbol, SymbolKind};

use super::TargetError;

/// A function defined in a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// Name as in the symbol table (without a version suffix).
    pub name: String,
    /// Virtual address (`st_value`).
    pub address: u64,
    /// Size in bytes (0 if unknown).
    pub size: u64,
    /// File offset of the first instruction.
    pub file_offset: u64,
}

/// The function symbols of one binary (`.symtab` and `.dynsym`).
#[derive(Debug, Clone)]
pub struct SymbolTable {
    path: PathBuf,
    file_size: u64,
    functions: Vec<FunctionSymbol>,
    by_name: HashMap<String, usize>,
    imported: std::collections::HashSet<String>,
    had_symtab: bool,
}

struct Segment {
    vaddr: u64,
    filesz: u64,
    offset: u64,
    exec: bool,
}

impl SymbolTable {
    /// Reads the symbols of `path`.
    pub fn read(path: &Path) -> Result<Self, TargetError> {
        let data = std::fs::read(path).map_err(|source| TargetError::NoSuchBinary {
            path: path.to_path_buf(),
            source,
        })?;
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let not_elf = |reason: String| TargetError::NotElf {
            path: path.to_path_buf(),
            reason,
        };
        let file = object::File::parse(&*data).map_err(|e| not_elf(e.to_string()))?;
        let segments: Vec<Segment> = match &file {
            object::File::Elf64(elf) => {
                let e = elf.endian();
                elf.elf_program_headers()
                    .iter()
                    .filter(|p| p.p_type(e) == PT_LOAD)
                    .map(|p| Segment {
                        vaddr: p.p_vaddr(e),
                        filesz: p.p_filesz(e),
                        offset: p.p_offset(e),
                        exec: p.p_flags(e) & PF_X != 0,
                    })
                    .collect()
            }
            object::File::Elf32(elf) => {
                let e = elf.endian();
                elf.elf_program_headers()
                    .iter()
                    .filter(|p| p.p_type(e) == PT_LOAD)
                    .map(|p| Segment {
                        vaddr: p.p_vaddr(e).into(),
                        filesz: p.p_filesz(e).into(),
                        offset: p.p_offset(e).into(),
                        exec: p.p_flags(e) & PF_X != 0,
                    })
                    .collect()
            }
            _ => return Err(not_elf("not an ELF file".into())),
        };
        let to_offset = |addr: u64| {
            let hit = |s: &&Segment| addr >= s.vaddr && addr < s.vaddr + s.filesz;
            segments
                .iter()
                .filter(|s| s.exec)
                .find(hit)
                .or_else(|| segments.iter().find(hit))
                .map(|s| addr - s.vaddr + s.offset)
        };
        let mut functions = Vec::new();
        let mut by_name = HashMap::new();
        let mut imported = std::collections::HashSet::new();
        let had_symtab = file.symbols().next().is_some();
        for sym in file.symbols().chain(file.dynamic_symbols()) {
            if sym.kind() != SymbolKind::Text {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            if sym.is_undefined() {
                imported.insert(name.to_string());
                continue;
            }
            if by_name.contains_key(name) {
                continue;
            }
            let Some(file_offset) = to_offset(sym.address()) else {
                continue;
            };
            by_name.insert(name.to_string(), functions.len());
            functions.push(FunctionSymbol {
                name: name.to_string(),
                address: sym.address(),
                size: sym.size(),
                file_offset,
            });
        }
        Ok(SymbolTable {
            path: canonical,
            file_size: data.len() as u64,
            functions,
            by_name,
            imported,
            had_symtab,
        })
    }

    /// Canonical path of the binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Every defined function.
    pub fn functions(&self) -> &[FunctionSymbol] {
        &self.functions
    }

    /// The function `name`, or an error that says why not and what is close.
    pub fn function(&self, name: &str) -> Result<&FunctionSymbol, TargetError> {
        if let Some(&i) = self.by_name.get(name) {
            return Ok(&self.functions[i]);
        }
        if self.imported.contains(name) {
            return Err(TargetError::Imported {
                symbol: name.to_string(),
                binary: self.path.clone(),
            });
        }
        let hint = if !self.had_symtab && self.functions.is_empty() {
            " (the binary is stripped: install its debug file or give a file offset)".to_string()
        } else {
            let lower = name.to_lowercase();
            let mut close: Vec<&str> = self
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .filter(|n| n.to_lowercase().contains(&lower) || lower.contains(&n.to_lowercase()))
                .take(5)
                .collect();
            close.sort_unstable();
            if close.is_empty() {
                format!(" ({} functions defined there)", self.functions.len())
            } else {
                format!(" (did you mean: {}?)", close.join(", "))
            }
        };
        Err(TargetError::NoSymbol {
            symbol: name.to_string(),
            binary: self.path.clone(),
            hint,
        })
    }
}
