//! What the caller asks for: a binary, a location in it, a cookie.

use std::path::{Path, PathBuf};

/// Where in the binary to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    ref_ctr_offset: Option<u64>,
}

impl Target {
    /// The entry of function `name` in `binary`. `binary` is a path or a bare
    /// library name (`libc`, see [`super::find_binary`]); `name` is a symbol name,
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
            ref_ctr_offset: None,
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

    /// A USDT semaphore at file offset `offset` of the same binary: the kernel
    /// increments that `u16` while the probe is attached (Linux 4.20+), so a
    /// probe guarded by `if (PROVIDER_NAME_ENABLED())` fires.
    pub fn semaphore(mut self, offset: u64) -> Self {
        self.ref_ctr_offset = Some(offset);
        self
    }

    /// The semaphore's file offset, if any.
    pub fn ref_ctr_offset(&self) -> Option<u64> {
        self.ref_ctr_offset
    }

    /// The process set with [`Target::in_process`].
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Whether [`Target::allow_unverified`] was given.
    pub fn is_unverified(&self) -> bool {
        self.unverified
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
