//! The record the test programs send through their ring buffer, defined once:
//! the eBPF crate includes this file (`#[path]`), the tests read it back.

#[cfg(not(target_arch = "bpf"))]
use sonde::Pod;
#[cfg(target_arch = "bpf")]
use sonde_ebpf::Pod;

/// A ring-buffer record of the test programs (its layout checked by the derive
/// on both sides).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod)]
pub struct Event {
    /// The cookie the program read.
    pub cookie: u64,
    /// `tgid << 32 | tid`.
    pub pid_tgid: u64,
    /// First argument (entry) or return value.
    pub value: u64,
    /// 0 entry, 1 return.
    pub kind: u64,
}
