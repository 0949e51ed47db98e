//! Why a target could not be resolved.

use std::path::PathBuf;

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The file is a script (`#!`): its interpreter is the program that runs.
    #[error(
        "{path} is a script (`{}`), not a program: probe the interpreter's binary (for a pyenv or rbenv shim, the \
         path `pyenv which python3` prints)",
        shorten(interpreter)
    )]
    Script {
        /// The path.
        path: PathBuf,
        /// Its `#!` line.
        interpreter: String,
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
    Process(#[from] crate::process::ProcessError),
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
    /// A USDT note whose probe site or semaphore cannot be right: the site is
    /// not the `nop` `<sys/sdt.h>` places, or lies inside an instruction; the
    /// semaphore is past the file or misaligned. Attaching there would corrupt
    /// the traced program.
    #[error("USDT probe {probe} in {binary} is refused: {reason} (a corrupt or hostile .note.stapsdt)")]
    BadUsdtSite {
        /// `provider:name`.
        probe: String,
        /// The binary.
        binary: PathBuf,
        /// What is wrong.
        reason: String,
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
