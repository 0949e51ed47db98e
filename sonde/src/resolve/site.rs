//! A probe site: what every attach mechanism needs, resolved and proven.

use super::name::Name;
use std::path::Path;
use std::sync::Arc;

use super::BinaryFile;

/// One place to put a uprobe, resolved and proven: the opened binary, a file
/// offset that starts an instruction the kernel can probe, an optional USDT
/// semaphore, and two cookies kept apart.
///
/// `attach_cookie` is what the kernel hands the program (`bpf_get_attach_cookie`;
/// on the emulated tiers, the constant baked into the program copy); `value` is
/// the caller's own 64-bit value. For plain uprobes they are the same; for USDT
/// the attach cookie indexes the argument specs and the value is found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSite {
    /// The binary, opened once: the offset was computed from this file, and the
    /// kernel attaches to this file.
    pub binary: Arc<BinaryFile>,
    /// File offset of the probed instruction.
    pub offset: u64,
    /// File offset of a USDT semaphore (a `u16` the kernel increments while the
    /// probe is attached, so `if (PROVIDER_NAME_ENABLED())` guards fire); `None`
    /// for plain uprobes. Needs Linux 4.20 (PMU), 6.6 (multi) or tracefs' `(0x..)`.
    pub ref_ctr_offset: Option<u64>,
    /// The cookie the kernel-facing attachment carries.
    pub attach_cookie: u64,
    /// The caller's value.
    pub value: u64,
    /// The symbol, when resolved from one (`name` or `name+0x..`).
    pub symbol: Option<Name>,
    /// A second place for the same probe, cheaper where the kernel has
    /// [`crate::Feature::UprobeNop5`]: the 5-byte nop right after a USDT site's
    /// 1-byte nop ([`crate::resolve::FunctionMatch::nop5_offset`]). The attach
    /// moves the probe there when the kernel has it; `None` for most sites.
    pub nop5_offset: Option<u64>,
    /// File offset and size of the function the site is the entry of, when
    /// known: a return probe on a Go function goes at each of its return
    /// instructions, found in these bytes (never a uretprobe, which Go's
    /// stack moves would find). `None` for USDT sites, ifuncs and raw offsets.
    pub function: Option<(u64, u64)>,
}

impl ProbeSite {
    /// Path of the binary (as opened, symlinks resolved).
    pub fn path(&self) -> &Path {
        self.binary.path()
    }

    /// The same site with `cookie` as both attach cookie and value.
    pub fn with_cookie(mut self, cookie: u64) -> Self {
        self.attach_cookie = cookie;
        self.value = cookie;
        self
    }

    /// The symbol's demangled name, when it is mangled.
    pub fn demangled(&self) -> Option<String> {
        self.symbol.as_deref().and_then(super::demangle)
    }
}
