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
//! | per-file cache (device, inode, mtime) | [`cache`] |
//! | x86-64 instruction boundaries | `boundary` |

mod boundary;
pub mod cache;
pub mod debuginfo;
mod elf;
pub mod libpath;
mod names;
mod query;

use std::path::{Path, PathBuf};

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
    /// Canonical path of the binary.
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
    /// The file is not an ELF file.
    #[error("{path} is not an ELF binary: {reason}")]
    NotElf {
        /// The path.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// No function of that name.
    #[error("function `{symbol}` not found in {binary}{hint}")]
    NoSymbol {
        /// The name asked for.
        symbol: String,
        /// The binary.
        binary: PathBuf,
        /// Closest names, or a note that the binary is stripped.
        hint: String,
    },
    /// The binary imports the symbol; its code is elsewhere.
    #[error("`{symbol}` is imported by {binary}, not defined there: probe the library that defines it")]
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
    #[error("library `{name}` not found (looked in {looked}): give its full path, or a pid that has it loaded")]
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
    /// A glob that does not parse.
    #[error("bad pattern `{pattern}`: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A pattern that matches no function.
    #[error("no function matches `{pattern}` in {binary}{hint}")]
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

/// Resolves targets to file offsets. Each binary's symbols are read once
/// ([`cache`]); bare library names are looked up ([`find_binary`]).
pub fn resolve(targets: &[Target]) -> Result<Vec<ResolvedTarget>, TargetError> {
    let mut out = Vec::with_capacity(targets.len());
    let mut paths: Vec<((PathBuf, Option<u32>), PathBuf)> = Vec::new();
    for t in targets {
        let key = (t.binary.clone(), t.pid);
        let path = match paths.iter().find(|(k, _)| k == &key) {
            Some((_, p)) => p.clone(),
            None => {
                let p = find_binary(&t.binary, t.pid)?;
                paths.push((key, p.clone()));
                p
            }
        };
        let table = cache::symbols(&path, Path::new(debuginfo::DEFAULT_DEBUG_ROOT))?;
        let (offset, symbol) = match &t.location {
            Location::FileOffset(off) => {
                if *off >= table.file_size() {
                    return Err(TargetError::BadFileOffset {
                        offset: *off,
                        size: table.file_size(),
                        binary: path,
                    });
                }
                (*off, None)
            }
            Location::VirtualAddress(addr) => {
                let off = table.file_offset_of(*addr).ok_or_else(|| TargetError::NotMapped {
                    symbol: format!("{addr:#x}"),
                    address: *addr,
                    binary: path.clone(),
                })?;
                (off, None)
            }
            Location::Symbol { name, offset } => {
                let f = table.function(name)?;
                check_offset(&table, f, *offset)?;
                if let Some(reason) = table.refusal_at(f.file_offset + offset) {
                    return Err(TargetError::NotProbeable {
                        symbol: f.name.clone(),
                        binary: table.path().to_path_buf(),
                        reason,
                    });
                }
                (f.file_offset + offset, Some(f.name.clone()))
            }
        };
        out.push(ResolvedTarget {
            path: table.path().to_path_buf(),
            offset,
            cookie: t.cookie,
            symbol,
        });
    }
    Ok(out)
}

/// An offset into `f`: within its size and, on x86-64, on an instruction boundary.
fn check_offset(table: &SymbolTable, f: &FunctionSymbol, offset: u64) -> Result<(), TargetError> {
    if offset == 0 {
        return Ok(());
    }
    if f.size > 0 && offset >= f.size {
        return Err(TargetError::OffsetOutsideSymbol {
            symbol: f.name.clone(),
            offset,
            size: f.size,
            binary: table.path().to_path_buf(),
        });
    }
    if cfg!(target_arch = "x86_64") && f.size > 0 {
        if let Some(code) = table.bytes_at(f.file_offset, f.size) {
            if let Err(instruction) = boundary::check_x86_64(code, f.address, offset) {
                return Err(TargetError::NotInstructionBoundary {
                    symbol: f.name.clone(),
                    offset,
                    instruction,
                    binary: table.path().to_path_buf(),
                });
            }
        }
    }
    Ok(())
}
