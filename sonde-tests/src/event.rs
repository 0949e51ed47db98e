//! The record the test programs send through their ring buffer, defined once:
//! the eBPF crate includes this file (`#[path]`), the tests read it back.

/// A ring-buffer record of the test programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
