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
    /// [`ENTRY`] or [`RETURN`] (then `args[0]` is the return value).
    pub kind: u32,
    /// Bytes of `text` read, NUL included (0: no string asked for; negative:
    /// the read failed, e.g. a bad pointer; [`TEXT`]: possibly truncated).
    pub text_len: i32,
    /// The string argument or return value the function's settings ask for.
    pub text: [u8; TEXT],
}

/// `CallRecord::kind` of a function entry (written by the program).
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
pub const ENTRY: u32 = 0;
/// `CallRecord::kind` of a function return.
pub const RETURN: u32 = 1;
/// Bytes of a string read from the traced process (longer ones are truncated).
pub const TEXT: usize = 256;

/// A `--by` row's key in the program's `BY_KEY` map: the function and the
/// value it is broken down by.
#[repr(C)]
#[derive(Clone, Copy, Pod, PartialEq, Eq, Hash, Debug)]
pub struct ByKey {
    /// The function's cookie.
    pub cookie: u32,
    /// What `value` is: one of the `BY_*` kinds.
    pub kind: u32,
    /// The pid, tid or argument.
    pub value: u64,
    /// The command name's first 8 bytes (`BY_COMM`).
    pub comm_lo: u64,
    /// Its last 8 bytes.
    pub comm_hi: u64,
}

/// `--by` kinds (`COUNT_BY[0]`); `COUNT_BY[1]` is the argument index for [`BY_ARG`].
pub const BY_PID: u64 = 1;
/// By thread id.
pub const BY_TID: u64 = 2;
/// By command name.
pub const BY_COMM: u64 = 3;
/// By the value of an argument.
pub const BY_ARG: u64 = 4;

/// `sonde trace`'s settings of one function (index: its cookie), read by the
/// program on every hit: one verification serves every function.
#[repr(C)]
#[derive(Clone, Copy, Pod, Default)]
pub struct TraceConfig {
    /// Which argument is read as a C string: 1..=6, or 0 for none.
    pub text_arg: u32,
    /// 1 when the return value is read as a C string.
    pub text_ret: u32,
}
