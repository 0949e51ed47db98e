//! Function symbols of an ELF binary and their file offsets.
//!
//! Both symbol tables are read (`.symtab` and `.dynsym`), plus the `.symtab` of a
//! separate debug file when the binary is stripped. Functions (`STT_FUNC` and
//! `STT_GNU_IFUNC`) at one address are one function with aliases; a symbol's
//! version (`name@VER`, `name@@VER` for the default) comes from `.gnu.version` for
//! `.dynsym` and from the name itself for `.symtab`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::binary::BinaryFile;
use super::debuginfo::{self, DebugFile};
use super::name::{Name, NameBuffer};
use super::read::{parse_symbols_into, parse_symbols_keeping, Keep, RawSym, Segment};
use super::TargetError;

/// A function defined in a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// Name as in the symbol table, without a version suffix.
    pub name: Name,
    /// Symbol version (`GLIBC_2.2.5`), when the symbol has one.
    pub version: Option<Arc<str>>,
    /// Whether that version is the default one (`name@@VER`) rather than a
    /// compatibility one (`name@VER`).
    pub default_version: bool,
    /// Other names at the same address (probed once, under the first name).
    pub aliases: Vec<Name>,
    /// Virtual address (`st_value`).
    pub address: u64,
    /// Size in bytes (0 if unknown).
    pub size: u64,
    /// File offset of the first instruction.
    pub file_offset: u64,
    /// A GNU indirect function: the symbol is its *resolver*, run once when the
    /// dynamic linker binds it; the implementations are separate functions.
    pub ifunc: bool,
}

impl FunctionSymbol {
    /// The name with its version: `name@@VER`, `name@VER` or `name`.
    pub fn versioned_name(&self) -> String {
        match &self.version {
            Some(v) if self.default_version => format!("{}@@{v}", self.name),
            Some(v) => format!("{}@{v}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// The function symbols of one binary.
#[derive(Debug)]
pub struct SymbolTable {
    /// Path of the file opened (symlinks resolved).
    path: PathBuf,
    /// The opened file, mapped: symbols, segments and instructions are read from
    /// here (the mapping pins the inode; no descriptor is held).
    data: memmap2::Mmap,
    pub(super) functions: Vec<FunctionSymbol>,
    /// Hash of a name or alias → the first function index with it; a lookup
    /// compares the strings. No allocation per name.
    pub(super) by_name: HashMap<u64, u32>,
    /// Further (hash, index) pairs where a hash names several functions
    /// (versions of one name, aliases, collisions), sorted.
    pub(super) by_name_more: Vec<(u64, u32)>,
    pub(super) imported: HashSet<String>,
    debug_file: Option<PathBuf>,
    pub(super) looked_for_debug: Vec<PathBuf>,
    symbols_read: usize,
    pub(super) stripped: bool,
    /// Each function's demangled name, made on first use (the list itself
    /// too: most lookups never demangle).
    pub(super) demangled: OnceLock<Vec<OnceLock<Option<String>>>>,
    segments: Vec<Segment>,
    /// Address ranges of executable sections (`SHF_EXECINSTR`), sorted: a symbol
    /// of size 0 is taken to end at its section's end at the latest.
    code_sections: Vec<(u64, u64)>,
    /// Function indices in address order (for "which function holds this address").
    by_address: OnceLock<Vec<usize>>,
}

/// File offset of virtual address `addr`, through the `PT_LOAD` segment that
/// holds it (an executable one first).
fn file_offset_in(segments: &[Segment], addr: u64) -> Option<u64> {
    let hit = |s: &&Segment| addr >= s.vaddr && addr < s.vaddr + s.filesz;
    segments
        .iter()
        .filter(|s| s.exec)
        .find(hit)
        .or_else(|| segments.iter().find(hit))
        .map(|s| addr - s.vaddr + s.offset)
}

/// Raw symbols folded into functions as they are read: one per address,
/// aliases kept, and the name index.
struct Fold {
    functions: Vec<FunctionSymbol>,
    /// Every function's names, in one buffer bound at [`Fold::finish`].
    names: NameBuffer,
    by_name: HashMap<u64, u32>,
    by_name_more: Vec<(u64, u32)>,
    by_address: HashMap<u64, usize>,
}

impl Fold {
    fn with_capacity(n: usize) -> Fold {
        let mut by_name = HashMap::default();
        let mut by_address = HashMap::default();
        by_name.reserve(n);
        by_address.reserve(n);
        Fold {
            functions: Vec::with_capacity(n),
            names: NameBuffer::with_capacity(n.saturating_mul(8)),
            by_name,
            by_name_more: Vec::new(),
            by_address,
        }
    }

    /// Adds one symbol, placed through `segments` (one outside every segment
    /// is left out).
    fn add(&mut self, segments: &[Segment], s: RawSym<'_>) {
        let Some(file_offset) = file_offset_in(segments, s.address) else {
            return;
        };
        let hash = name_hash(s.name);
        let names = &mut self.names;
        let idx = match self.by_address.entry(s.address) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let i = *o.get();
                let f = &mut self.functions[i];
                let known = names.text(&f.name) == s.name || f.aliases.iter().any(|a| names.text(a) == s.name);
                if !known {
                    // The public-looking, shorter name is the one shown:
                    // `malloc` over `__libc_malloc`, `f` over `f_alias`.
                    let rank = |n: &str| (n.starts_with('_'), n.len());
                    let shown = rank(s.name) < rank(names.text(&f.name));
                    let added = names.add(s.name);
                    if shown {
                        let old = std::mem::replace(&mut f.name, added);
                        f.aliases.push(old);
                        f.ifunc |= s.ifunc;
                        (f.version, f.default_version) = match &s.version {
                            Some((v, d)) => (Some(v.clone()), *d),
                            None => (None, false),
                        };
                    } else {
                        f.aliases.push(added);
                    }
                }
                if f.version.is_none() && names.text(&f.name) == s.name {
                    if let Some((v, d)) = s.version {
                        f.version = Some(v);
                        f.default_version = d;
                    }
                }
                f.size = f.size.max(s.size);
                i
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let (version, default_version) = match s.version {
                    Some((v, d)) => (Some(v), d),
                    None => (None, false),
                };
                self.functions.push(FunctionSymbol {
                    name: names.add(s.name),
                    version,
                    default_version,
                    aliases: Vec::new(),
                    address: s.address,
                    size: s.size,
                    file_offset,
                    ifunc: s.ifunc,
                });
                v.insert(self.functions.len() - 1);
                self.functions.len() - 1
            }
        };
        let idx = idx as u32;
        match self.by_name.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(idx);
            }
            std::collections::hash_map::Entry::Occupied(o) if *o.get() != idx => {
                self.by_name_more.push((hash, idx));
            }
            std::collections::hash_map::Entry::Occupied(_) => {}
        }
    }

    /// Done: the names bound to their buffer, the name index's overflow
    /// sorted for its lookups.
    fn finish(mut self) -> Fold {
        std::mem::take(&mut self.names).finish(
            self.functions
                .iter_mut()
                .flat_map(|f| std::iter::once(&mut f.name).chain(f.aliases.iter_mut())),
        );
        self.by_name_more.sort_unstable();
        self.by_name_more.dedup();
        self
    }
}

/// A name's hash for the name index (FxHash: fast, collisions resolved by a
/// string compare).
pub(super) fn name_hash(name: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(name.as_bytes());
    h.finish()
}

impl SymbolTable {
    /// Reads the symbols of `path`, and of its separate debug file when the binary
    /// is stripped (see [`super::debuginfo`]: build-id, then `.gnu_debuglink`,
    /// under `debug_root`, usually `/usr/lib/debug`).
    pub fn read(path: &Path) -> Result<Self, TargetError> {
        Self::read_with_debug_root(path, Path::new(debuginfo::DEFAULT_DEBUG_ROOT))
    }

    /// [`SymbolTable::read`] with another directory for debug files.
    pub fn read_with_debug_root(path: &Path, debug_root: &Path) -> Result<Self, TargetError> {
        Self::from_binary(&BinaryFile::open(path)?, debug_root)
    }

    /// A table of only the functions named `names` (and their aliases) of
    /// `binary`, mapped as `data`, read in two scans that allocate only for
    /// those: what a few exact names of a large binary cost. The mapping back
    /// (for the whole table) for a stripped binary (its debug file has the
    /// symbols; the full read finds it), and when the names are a quarter of
    /// the symbols or more: the whole table costs less then (every symbol is
    /// kept either way).
    pub(crate) fn named_only(
        binary: &BinaryFile,
        data: memmap2::Mmap,
        names: &[&str],
    ) -> Result<Result<Self, memmap2::Mmap>, TargetError> {
        if names.len().saturating_mul(4) >= super::read::symbol_count(&data) {
            return Ok(Err(data));
        }
        let wanted: rustc_hash::FxHashSet<&[u8]> = names
            .iter()
            .map(|n| n.split('@').next().unwrap_or(n).as_bytes())
            .collect();
        let first = parse_symbols_keeping(binary.path(), &data, Keep::Named(&wanted))?;
        if !first.has_symtab {
            return Ok(Err(data));
        }
        let addresses: rustc_hash::FxHashSet<u64> = first.defined.iter().copied().collect();
        let mut fold = Fold::with_capacity(first.defined.len());
        let syms = parse_symbols_into(binary.path(), &data, Keep::At(&addresses), &mut |segments, s| {
            fold.add(segments, s)
        })?;
        Ok(Ok(Self::assemble(binary, data, syms, fold, None, Vec::new())))
    }

    /// Reads the symbols of a binary already opened.
    pub fn from_binary(binary: &BinaryFile, debug_root: &Path) -> Result<Self, TargetError> {
        Self::from_mapped(binary, binary.map()?, debug_root)
    }

    /// [`SymbolTable::from_binary`], of the binary mapped as `data`.
    pub(crate) fn from_mapped(
        binary: &BinaryFile,
        data: memmap2::Mmap,
        debug_root: &Path,
    ) -> Result<Self, TargetError> {
        // Folded as they are read (both tables' entries: an upper bound).
        let mut fold = Fold::with_capacity(super::read::symbol_count(&data));
        let mut syms = parse_symbols_into(binary.path(), &data, Keep::All, &mut |segments, s| {
            fold.add(segments, s)
        })?;
        let mut debug_file = None;
        let mut looked_for_debug = Vec::new();
        if !syms.has_symtab {
            match debuginfo::find(
                binary.path(),
                syms.build_id.as_deref(),
                syms.debuglink.as_ref(),
                debug_root,
            ) {
                DebugFile::Found(found, dbg_data) => {
                    // Folded as read too, placed through the binary's own segments.
                    let segments = &syms.segments;
                    let dbg = parse_symbols_into(&found, &dbg_data, Keep::All, &mut |_, s| fold.add(segments, s))?;
                    syms.count += dbg.count;
                    syms.has_symtab = dbg.has_symtab;
                    debug_file = Some(found);
                }
                DebugFile::Missing(looked) => looked_for_debug = looked,
            }
        }
        // A Go program stripped of its symbols keeps the runtime's own table
        // of function names and entries.
        if !syms.has_symtab && binary.is_go_in(&data) {
            if let Some(go) = super::gopclntab::from_elf(&data) {
                syms.count += go.len();
                syms.has_symtab = !go.is_empty();
                for f in go {
                    let raw = RawSym {
                        name: &f.name,
                        version: None,
                        address: f.address,
                        size: f.size,
                        ifunc: false,
                    };
                    fold.add(&syms.segments, raw);
                }
                looked_for_debug.clear();
            }
        }
        Ok(Self::assemble(binary, data, syms, fold, debug_file, looked_for_debug))
    }

    fn assemble(
        binary: &BinaryFile,
        data: memmap2::Mmap,
        syms: super::read::Symbols,
        fold: Fold,
        debug_file: Option<PathBuf>,
        looked_for_debug: Vec<PathBuf>,
    ) -> Self {
        let Fold {
            functions,
            by_name,
            by_name_more,
            ..
        } = fold.finish();
        SymbolTable {
            path: binary.path().to_path_buf(),
            data,
            functions,
            by_name,
            by_name_more,
            imported: syms.imported.into_iter().collect(),
            debug_file,
            looked_for_debug,
            symbols_read: syms.count,
            stripped: !syms.has_symtab,
            demangled: OnceLock::new(),
            segments: syms.segments,
            code_sections: syms.code_sections,
            by_address: OnceLock::new(),
        }
    }

    /// File offset of virtual address `addr`, through the `PT_LOAD` segment that
    /// holds it (an executable one first).
    pub fn file_offset_of(&self, addr: u64) -> Option<u64> {
        file_offset_in(&self.segments, addr)
    }

    /// Path of the binary (as opened, symlinks resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.data.len() as u64
    }

    /// The whole file, as mapped when the table was read.
    pub(crate) fn contents(&self) -> &[u8] {
        &self.data
    }

    /// Up to `len` bytes of the file from `offset` (fewer at its end).
    pub(crate) fn bytes_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let data = &self.data[..];
        let start = usize::try_from(offset).ok()?;
        let end = start.saturating_add(usize::try_from(len).ok()?).min(data.len());
        data.get(start..end)
    }

    /// The virtual address of file offset `offset`, through the executable
    /// `PT_LOAD` segment that holds it; `None` outside executable code.
    pub fn code_address_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.exec && offset >= s.offset && offset - s.offset < s.filesz)
            .map(|s| offset - s.offset + s.vaddr)
    }

    /// The executable segment's range of addresses holding `addr`.
    fn code_segment_of(&self, addr: u64) -> Option<(u64, u64)> {
        self.segments
            .iter()
            .find(|s| s.exec && addr >= s.vaddr && addr - s.vaddr < s.filesz)
            .map(|s| (s.vaddr, s.vaddr + s.filesz))
    }

    /// Function indices in address order, sorted on first use (only locations
    /// given by offset or address need it).
    fn by_address(&self) -> &[usize] {
        self.by_address.get_or_init(|| {
            let mut order: Vec<(u64, usize)> = self.functions.iter().map(|f| f.address).zip(0..).collect();
            order.sort_unstable();
            order.into_iter().map(|(_, i)| i).collect()
        })
    }

    /// The function whose code holds address `addr`, and its extent in bytes:
    /// its size, or for a symbol of size 0 up to the next function (or the end
    /// of its segment).
    pub(crate) fn function_holding(&self, addr: u64) -> Option<(&FunctionSymbol, u64)> {
        let (_, seg_end) = self.code_segment_of(addr)?;
        let by_address = self.by_address();
        let pos = by_address.partition_point(|&i| self.functions[i].address <= addr);
        // Aliases are folded, so the nearest function starting at or before addr
        // is the only candidate.
        let f = &self.functions[*by_address.get(pos.checked_sub(1)?)?];
        let extent = if f.size > 0 {
            f.size
        } else {
            // Unknown size: up to the next function, the end of its section or
            // the end of its segment, whichever comes first.
            let next = by_address.get(pos).map_or(seg_end, |&i| self.functions[i].address);
            let k = self.code_sections.partition_point(|&(start, _)| start <= f.address);
            let section_end = k
                .checked_sub(1)
                .and_then(|k| self.code_sections.get(k))
                .filter(|&&(_, end)| f.address < end)
                .map_or(seg_end, |&(_, end)| end);
            next.min(seg_end).min(section_end).saturating_sub(f.address)
        };
        if addr - f.address < extent {
            return Some((f, extent));
        }
        None
    }

    /// Why the kernel's uprobe code would refuse a probe at file offset
    /// `offset` (`crate::arch`: what each architecture's uprobe code refuses).
    pub(crate) fn refusal_at(&self, offset: u64) -> Option<&'static str> {
        crate::arch::host::refusal(self.bytes_at(offset, 16)?)
    }

    /// Bytes an entry probe at `offset` skips (a function of `size` bytes):
    /// 4 past an `endbr64` before an emulated `push` that no branch reaches
    /// (x86-64: one trap per hit instead of two); in a Go program (`go`), the
    /// stack check that re-runs the function after growing its stack (each
    /// call seen once); else 0.
    pub(crate) fn entry_skip_at(&self, offset: u64, size: u64, go: bool) -> u64 {
        if size == 0 {
            return 0;
        }
        let Some(address) = self.code_address_of(offset) else {
            return 0;
        };
        match self.bytes_at(offset, size) {
            Some(code) => crate::arch::host::entry_skip(code, address, go),
            None => 0,
        }
    }

    /// Every defined function, one per address.
    pub fn functions(&self) -> &[FunctionSymbol] {
        &self.functions
    }

    /// How many symbol-table entries were read (all kinds, both tables and the
    /// debug file).
    pub fn symbols_read(&self) -> usize {
        self.symbols_read
    }

    /// The separate debug file whose symbols were used, if any.
    pub fn debug_file(&self) -> Option<&Path> {
        self.debug_file.as_deref()
    }

    /// Whether the binary had no `.symtab` and no debug file supplied one.
    pub fn is_stripped(&self) -> bool {
        self.stripped
    }
}
