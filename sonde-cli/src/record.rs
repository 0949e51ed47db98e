//! What the `sonde` command's eBPF programs and its user space exchange, defined
//! once: the eBPF crate includes this file (`#[path]`), so both sides share the
//! layouts. Plain `#[repr(C)]` data deriving `Pod` (its layout checked at compile
//! time on both sides), `no_std`-clean.

/// Log2 latency buckets per function in `HIST` (function `i`'s bucket `b`,
/// `[2^b, 2^(b+1))` ns, at `i * BUCKETS + b`).
pub const BUCKETS: u32 = 64;

/// Arguments a call record carries.
pub const ARGS: usize = 6;

#[cfg(not(target_arch = "bpf"))]
use sonde::Pod;
#[cfg(target_arch = "bpf")]
use sonde_ebpf::Pod;

/// One call, as `sonde trace` records it in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Pod)]
pub struct CallRecord {
    /// `bpf_ktime_get_ns` at entry.
    pub ts_ns: u64,
    /// `tgid << 32 | tid`.
    pub pid_tgid: u64,
    /// The function's cookie.
    pub cookie: u64,
    /// The first arguments, raw registers.
    pub args: [u64; ARGS],
    /// The thread's command name.
    pub comm: [u8; 16],
}
