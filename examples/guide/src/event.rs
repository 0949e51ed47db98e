//! The record both sides share: the eBPF crate includes this file with
//! `#[path = "../../src/event.rs"] mod event;`, the host with `mod event;`.

#[cfg(not(target_arch = "bpf"))]
use sonde::Pod;
#[cfg(target_arch = "bpf")]
use sonde_ebpf::Pod;

/// One call: when, who, which function (its cookie), its first argument.
#[repr(C)]
#[derive(Clone, Copy, Pod)]
pub struct Event {
    pub ts_ns: u64,
    pub pid_tgid: u64,
    pub cookie: u64,
    pub arg0: u64,
}
