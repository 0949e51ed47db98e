//! Targets: "these functions of this binary, library or process" turned into
//! file offsets with cookies.
//!
//! A uprobe takes a file offset, not a virtual address: for a symbol, the offset
//! through the `PT_LOAD` segment that holds it (`st_value - p_vaddr + p_offset`).
//!
//! Two ways in, sharing one resolver:
//! - [`Target`]: one location (symbol, symbol + offset, file offset, virtual
//!   address) with the cookie you choose;
//! - [`Functions`]: glob patterns over a binary's raw and demangled names, giving
//!   a [`FunctionSet`] whose targets carry their index as cookie.
//!
//! | piece | module |
//! |---|---|
//! | symbol tables, versions, aliases, ifuncs | `elf` |
//! | demangling and globs | `names` ([`demangle`], [`Pattern`]) |
//! | debug files of stripped binaries | [`debuginfo`] |
//! | bare library names, `/proc/PID/maps`, `ld.so.cache`, containers | [`libpath`] |
//! | one opened file per binary, handed to the kernel | [`BinaryFile`] |
//! | per-file cache (device, inode, mtime) | [`cache`] |
//! | x86-64 instruction boundaries | `boundary` |

mod binary;
mod boundary;
pub mod cache;
pub mod debuginfo;
mod elf;
pub mod libpath;
mod names;
mod query;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use binary::BinaryFile;
pub use elf::{FunctionSymbol, SymbolTable};
pub use libpath::find_binary;
pub use names::{demangle, Pattern};
pub use query::{FunctionMatch, FunctionSet, Functions};

/// Where in the binary to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A function symbol, plus a byte offset into the function (0: its entry).
    Symbol {
        /// Symbol name (as in the symbol table).
        name: String,
        /// Offset from the symbol's start; bounds-checked against its size.
        offset: u64,
    },
    /// A raw file offset.
    FileOffset(u64),
    /// A virtual address as the binary's symbols and `objdump` give it,
    /// translated through the `PT_LOAD` segment that holds it.
    VirtualAddress(u64),
}

/// One thing to probe and the cookie its program will read.
///
/// ```
/// use sonde::Target;
/// let t = Target::symbol("/usr/bin/bash", "readline").cookie(7);
/// assert_eq!(t.cookie_value(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    binary: PathBuf,
    location: Location,
    cookie: u64,
    pid: Option<u32>,
    unverified: bool,
}

impl Target {
    /// The entry of function `name` in `binary`. `binary` is a path or a bare
    /// library name (`libc`, see [`find_binary`]); `name` is a symbol name,
    /// optionally versioned (`memcpy@GLIBC_2.2.5`), or a demangled name.
    pub fn symbol(binary: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self::at(
            binary,
            Location::Symbol {
                name: name.into(),
                offset: 0,
            },
        )
    }

    /// A raw file offset in `binary`.
    pub fn file_offset(binary: impl Into<PathBuf>, offset: u64) -> Self {
        Self::at(binary, Location::FileOffset(offset))
    }

    /// A virtual address in `binary` (as `nm` or `objdump -d` shows it).
    pub fn virtual_address(binary: impl Into<PathBuf>, address: u64) -> Self {
        Self::at(binary, Location::VirtualAddress(address))
    }

    fn at(binary: impl Into<PathBuf>, location: Location) -> Self {
        Target {
            binary: binary.into(),
            location,
            cookie: 0,
            pid: None,
            unverified: false,
        }
    }

    /// Looks a bare library name up among the files process `pid` maps first, and
    /// a path inside the process's root (container) when it has its own.
    pub fn in_process(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Probe `offset` bytes into the symbol instead of its entry.
    pub fn at_offset(mut self, offset: u64) -> Self {
        match &mut self.location {
            Location::Symbol { offset: o, .. } => *o = offset,
            Location::FileOffset(o) | Location::VirtualAddress(o) => *o += offset,
        }
        self
    }

    /// Accepts a file offset or address that no function symbol covers without
    /// proof that it starts an instruction (a probe inside an instruction
    /// corrupts the traced program: use only for an offset you have checked,
    /// e.g. in a stripped binary). Offsets inside a known function are always
    /// checked.
    pub fn allow_unverified(mut self) -> Self {
        self.unverified = true;
        self
    }

    /// The cookie the program reads with `ctx.cookie()` when this target fires.
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.cookie = cookie;
        self
    }

    /// The cookie set so far.
    pub fn cookie_value(&self) -> u64 {
        self.cookie
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The location.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// A target resolved to a file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// The binary, opened once: the offset was computed from this file, and the
    /// kernel attaches to this file.
    pub binary: Arc<BinaryFile>,
    /// Path of the binary (as opened, symlinks resolved).
    pub path: PathBuf,
    /// File offset of the probed instruction.
    pub offset: u64,
    /// Cookie.
    pub cookie: u64,
    /// The symbol, when resolved from one.
    pub symbol: Option<String>,
}

impl ResolvedTarget {
    /// The symbol's demangled name, when it is mangled.
    pub fn demangled(&self) -> Option<String> {
        self.symbol.as_deref().and_then(demangle)
    }
}

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The binary cannot be opened.
    #[error("cannot open binary {path}: {source} (check the path, or name a library by its bare name: `libc`)")]
    NoSuchBinary {
        /// The path as given.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A directory, device, pipe or empty file.
    #[error("{path} is {what}, not a binary: name an executable or shared library")]
    NotABinary {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// An ELF binary for another machine.
    #[error("{path} is built for {found}, but this machine runs {expected}: uprobes can only probe binaries of the running architecture")]
    WrongArchitecture {
        /// The path.
        path: PathBuf,
        /// Its architecture.
        found: String,
        /// The host's.
        expected: String,
    },
    /// A file offset or address that is not in executable code.
    #[error("{location} in {binary} is not in an executable segment: a uprobe must sit on code")]
    NotCode {
        /// `file offset 0x..` or `address 0x..`.
        location: String,
        /// The binary.
        binary: PathBuf,
    },
    /// A file offset or address no function symbol covers: sonde cannot prove
    /// it starts an instruction.
    #[error("{location} in {binary} is in no known function, so sonde cannot check that it starts an instruction (a probe inside one corrupts the program): probe a symbol, or vouch for the offset with Target::allow_unverified")]
    Unverifiable {
        /// `file offset 0x..` or `address 0x..`.
        location: String,
        /// The binary.
        binary: PathBuf,
    },
    /// The file is not an ELF file.
    #[error("{path} is not an ELF binary: {reason}")]
    NotElf {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// No function of that name.
    #[error("function `{}` not found in {binary}{hint}", shorten(symbol))]
    NoSymbol {
        /// The name asked for.
        symbol: String,
        /// The binary.
        binary: PathBuf,
        /// Closest names, or a note that the binary is stripped.
        hint: String,
    },
    /// The binary imports the symbol; its code is elsewhere.
    #[error(
        "`{}` is imported by {binary}, not defined there: probe the library that defines it",
        shorten(symbol)
    )]
    Imported {
        /// The symbol.
        symbol: String,
        /// The binary.
        binary: PathBuf,
    },
    /// Offset past the end of the symbol.
    #[error("offset {offset:#x} is outside `{symbol}` ({size} bytes) in {binary}")]
    OffsetOutsideSymbol {
        /// The symbol.
        symbol: String,
        /// The offset asked for.
        offset: u64,
        /// The symbol's size.
        size: u64,
        /// The binary.
        binary: PathBuf,
    },
    /// The address is in no loadable segment.
    #[error("address {address:#x} of `{symbol}` is in no loadable segment of {binary} (is it the address of another build?)")]
    NotMapped {
        /// The symbol.
        symbol: String,
        /// Its virtual address.
        address: u64,
        /// The binary.
        binary: PathBuf,
    },
    /// A bare library name found nowhere.
    #[error(
        "library `{}` not found (looked in {looked}): give its full path, or a pid that has it loaded",
        shorten(name)
    )]
    LibraryNotFound {
        /// The name.
        name: String,
        /// Where it was looked for.
        looked: String,
    },
    /// The process to look a library up in does not exist.
    #[error("no process {pid} (cannot read /proc/{pid}/maps): check the pid")]
    NoSuchProcess {
        /// The pid.
        pid: u32,
    },
    /// The pid names no user-space process.
    #[error(transparent)]
    Process(#[from] crate::ProcessError),
    /// A glob that does not parse.
    #[error("bad pattern `{}`: {reason}", shorten(pattern))]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A pattern that matches no function.
    #[error("no function matches `{}` in {binary}{hint}", shorten(pattern))]
    NoMatch {
        /// The pattern.
        pattern: String,
        /// The binary.
        binary: PathBuf,
        /// Closest names, or a note that the binary is stripped.
        hint: String,
    },
    /// An offset into a function that splits an instruction (x86-64).
    #[error("offset {offset:#x} into `{symbol}` in {binary} is inside an instruction (the one starting at +{instruction:#x}): a uprobe must sit on an instruction boundary")]
    NotInstructionBoundary {
        /// The symbol.
        symbol: String,
        /// The offset asked for.
        offset: u64,
        /// Offset of the instruction that covers it.
        instruction: u64,
        /// The binary.
        binary: PathBuf,
    },
    /// The kernel's uprobe code refuses the instruction there (x86-64).
    #[error("`{symbol}` in {binary} cannot be probed: {reason} (the kernel refuses it; probe an offset past it)")]
    NotProbeable {
        /// The symbol.
        symbol: String,
        /// The binary.
        binary: PathBuf,
        /// Which rule.
        reason: &'static str,
    },
    /// A file offset past the end of the file.
    #[error("file offset {offset:#x} is past the end of {binary} ({size} bytes)")]
    BadFileOffset {
        /// The offset.
        offset: u64,
        /// File size.
        size: u64,
        /// The binary.
        binary: PathBuf,
    },
}

/// A name or pattern as shown in a message: whole up to 120 characters, else
/// its start and its length (a 100k-character argument is not echoed back).
pub fn shorten(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return s.into();
    }
    let head: String = s.chars().take(60).collect();
    format!("{head}… ({} characters)", s.chars().count()).into()
}

/// Resolves targets to file offsets. Each binary is opened once and its
/// symbols read once ([`cache`]); bare library names are looked up
/// ([`find_binary`]). Every location is proven to start an instruction the
/// kernel can probe.
pub fn resolve(targets: &[Target]) -> Result<Vec<ResolvedTarget>, TargetError> {
    let mut out = Vec::with_capacity(targets.len());
    // One open file and table per (binary as named, pid): 10,000 targets of one
    // binary cost one open, one stat and one lookup of the cache.
    type Opened = (Arc<BinaryFile>, Arc<SymbolTable>);
    let mut opened: Vec<((&Path, Option<u32>), Opened)> = Vec::new();
    for t in targets {
        let key = (t.binary.as_path(), t.pid);
        let (binary, table) = match opened.iter().find(|(k, _)| *k == key) {
            Some((_, o)) => o.clone(),
            None => {
                let path = find_binary(&t.binary, t.pid)?;
                let binary = Arc::new(BinaryFile::open(&path)?);
                let table = cache::symbols_of(&binary, Path::new(debuginfo::DEFAULT_DEBUG_ROOT))?;
                opened.push((key, (Arc::clone(&binary), Arc::clone(&table))));
                (binary, table)
            }
        };
        let (offset, symbol) = locate(&table, t)?;
        if let Some(reason) = table.refusal_at(offset) {
            return Err(TargetError::NotProbeable {
                symbol: symbol.clone().unwrap_or_else(|| format!("offset {offset:#x}")),
                binary: table.path().to_path_buf(),
                reason,
            });
        }
        out.push(ResolvedTarget {
            path: binary.path().to_path_buf(),
            binary,
            offset,
            cookie: t.cookie,
            symbol,
        });
    }
    Ok(out)
}

/// The file offset of `t` in `table`'s binary, proven to start an instruction.
fn locate(table: &SymbolTable, t: &Target) -> Result<(u64, Option<String>), TargetError> {
    let path = || table.path().to_path_buf();
    let (address, what) = match &t.location {
        Location::Symbol { name, offset } => {
            let f = table.function(name)?;
            let (_, extent) = table
                .function_holding(f.address)
                .filter(|(g, _)| g.address == f.address)
                .unwrap_or((f, f.size));
            if *offset > 0 && (extent == 0 || *offset >= extent) {
                return Err(TargetError::OffsetOutsideSymbol {
                    symbol: f.name.clone(),
                    offset: *offset,
                    size: extent,
                    binary: path(),
                });
            }
            check_boundary(table, f, extent, *offset)?;
            return Ok((f.file_offset + offset, Some(f.name.clone())));
        }
        Location::FileOffset(off) => {
            if *off >= table.file_size() {
                return Err(TargetError::BadFileOffset {
                    offset: *off,
                    size: table.file_size(),
                    binary: path(),
                });
            }
            let what = format!("file offset {off:#x}");
            let address = table.code_address_of(*off).ok_or_else(|| TargetError::NotCode {
                location: what.clone(),
                binary: path(),
            })?;
            (address, what)
        }
        Location::VirtualAddress(addr) => {
            let what = format!("address {addr:#x}");
            let Some(off) = table.file_offset_of(*addr) else {
                return Err(TargetError::NotMapped {
                    symbol: format!("{addr:#x}"),
                    address: *addr,
                    binary: path(),
                });
            };
            if table.code_address_of(off) != Some(*addr) {
                return Err(TargetError::NotCode {
                    location: what,
                    binary: path(),
                });
            }
            (*addr, what)
        }
    };
    let offset = table.file_offset_of(address).unwrap_or_default();
    match table.function_holding(address) {
        Some((f, extent)) => {
            check_boundary(table, f, extent, address - f.address)?;
            let symbol = if address == f.address {
                f.name.clone()
            } else {
                format!("{}+{:#x}", f.name, address - f.address)
            };
            Ok((offset, Some(symbol)))
        }
        None if t.unverified => Ok((offset, None)),
        None => Err(TargetError::Unverifiable {
            location: what,
            binary: path(),
        }),
    }
}

/// An offset into `f` (whose code spans `extent` bytes) must start an
/// instruction: decoded from the function's entry on x86-64, a multiple of the
/// fixed instruction size elsewhere.
fn check_boundary(table: &SymbolTable, f: &FunctionSymbol, extent: u64, offset: u64) -> Result<(), TargetError> {
    if offset == 0 {
        return Ok(());
    }
    let inside = |instruction| TargetError::NotInstructionBoundary {
        symbol: f.name.clone(),
        offset,
        instruction,
        binary: table.path().to_path_buf(),
    };
    if cfg!(target_arch = "x86_64") {
        let code = table.bytes_at(f.file_offset, extent).unwrap_or_default();
        boundary::check_x86_64(code, f.address, offset).map_err(inside)
    } else if cfg!(any(target_arch = "aarch64", target_arch = "powerpc64")) && !offset.is_multiple_of(4) {
        Err(inside(offset - offset % 4))
    } else {
        Ok(())
    }
}
