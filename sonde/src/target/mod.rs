//! Targets: "this function of this binary" turned into a file offset.
//!
//! A uprobe takes a file offset, not a virtual address: for a symbol, the offset
//! through the executable `PT_LOAD` segment that holds it
//! (`st_value - p_vaddr + p_offset`).

mod elf;

use std::path::{Path, PathBuf};

pub use elf::{FunctionSymbol, SymbolTable};

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
}

impl Target {
    /// The entry of function `name` in `binary` (an executable or shared library).
    pub fn symbol(binary: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Target {
            binary: binary.into(),
            location: Location::Symbol {
                name: name.into(),
                offset: 0,
            },
            cookie: 0,
        }
    }

    /// A raw file offset in `binary`.
    pub fn file_offset(binary: impl Into<PathBuf>, offset: u64) -> Self {
        Target {
            binary: binary.into(),
            location: Location::FileOffset(offset),
            cookie: 0,
        }
    }

    /// Probe `offset` bytes into the symbol instead of its entry.
    pub fn at_offset(mut self, offset: u64) -> Self {
        match &mut self.location {
            Location::Symbol { offset: o, .. } => *o = offset,
            Location::FileOffset(o) => *o += offset,
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

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The binary cannot be opened.
    #[error("cannot open binary {path}: {source} (check the path; name a library by its full path)")]
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
    #[error("address {address:#x} of `{symbol}` is in no loadable segment of {binary}")]
    NotMapped {
        /// The symbol.
        symbol: String,
        /// Its virtual address.
        address: u64,
        /// The binary.
        binary: PathBuf,
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

/// Resolves targets to file offsets, reading each binary's symbols once.
pub fn resolve(targets: &[Target]) -> Result<Vec<ResolvedTarget>, TargetError> {
    let mut tables: Vec<(PathBuf, SymbolTable)> = Vec::new();
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        let idx = match tables.iter().position(|(p, _)| p == &t.binary) {
            Some(i) => i,
            None => {
                tables.push((t.binary.clone(), SymbolTable::read(&t.binary)?));
                tables.len() - 1
            }
        };
        let table = &tables[idx].1;
        let (offset, symbol) = match &t.location {
            Location::FileOffset(off) => {
                if *off >= table.file_size() {
                    return Err(TargetError::BadFileOffset {
                        offset: *off,
                        size: table.file_size(),
                        binary: t.binary.clone(),
                    });
                }
                (*off, None)
            }
            Location::Symbol { name, offset } => {
                let f = table.function(name)?;
                if *offset > 0 && f.size > 0 && *offset >= f.size {
                    return Err(TargetError::OffsetOutsideSymbol {
                        symbol: name.clone(),
                        offset: *offset,
                        size: f.size,
                        binary: t.binary.clone(),
                    });
                }
                (f.file_offset + offset, Some(name.clone()))
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
