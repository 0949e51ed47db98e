//! Logging from programs: [`info!`](crate::info), [`debug!`](crate::debug),
//! [`warn!`](crate::warn), [`error!`](crate::error), [`trace!`](crate::trace),
//! formatted in user space (`sonde::log::EbpfLogger`, one line to enable).
//!
//! ```no_run
//! # use sonde_ebpf::{uprobe, ProbeContext};
//! #[uprobe]
//! fn probe(ctx: ProbeContext) -> u32 {
//!     sonde_ebpf::info!("call {} with {:#x}", ctx.cookie(), ctx.arg::<u64>(0).unwrap_or(0));
//!     0
//! }
//! ```
//!
//! A call sends one fixed-size record (level, format id, up to
//! [`MAX_ARGS`] integer arguments) through the [`SONDE_LOG`] ring buffer; the
//! format strings never run in the kernel: each is kept in the object's
//! `sonde_log` section under a hash of its text, where user space reads it.
//! Arguments are integers, pointers, or C strings in the traced process's
//! memory wrapped in [`UserStr`] (at most [`MAX_STRS`] a line, read in the
//! program, up to [`LOG_TEXT`] bytes each, escaped on the host);
//! placeholders are `{}`, `{:x}`, `{:#x}` and `{:?}` (decimal for integers).
//! Needs Linux 5.8 (ring buffers); a full buffer drops the line.
//!
//! ```no_run
//! # use sonde_ebpf::{uprobe, ProbeContext};
//! use sonde_ebpf::log::UserStr;
//! #[uprobe]
//! fn open(ctx: ProbeContext) -> u32 {
//!     let path = ctx.arg::<u64>(0).unwrap_or(0);
//!     sonde_ebpf::info!("open {} flags {:#x}", UserStr(path), ctx.arg::<u64>(1).unwrap_or(0));
//!     0
//! }
//! ```

use crate::maps::RingBuf;

/// Arguments a log line carries at most.
pub const MAX_ARGS: usize = 6;
/// String arguments ([`UserStr`]) a log line carries at most; more print as
/// their address.
pub const MAX_STRS: usize = 2;
/// Bytes kept of each string, its NUL included: longer ones are cut (and
/// shown with `...`).
pub const LOG_TEXT: usize = 64;

/// A NUL-terminated string at this address of the traced process, logged as
/// text (read with `bpf_probe_read_user_str`, Linux 5.5).
#[derive(Clone, Copy)]
pub struct UserStr(pub u64);

/// One argument of a log line: an integer, or a string to read.
#[derive(Clone, Copy)]
pub enum Arg {
    /// Printed as a number.
    Int(u64),
    /// Read from user memory and printed as text.
    Str(u64),
}

impl From<UserStr> for Arg {
    #[inline(always)]
    fn from(s: UserStr) -> Arg {
        Arg::Str(s.0)
    }
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            #[inline(always)]
            fn from(v: $t) -> Arg {
                Arg::Int(v as u64)
            }
        }
    )*};
}
int_args!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl From<bool> for Arg {
    #[inline(always)]
    fn from(v: bool) -> Arg {
        Arg::Int(v as u64)
    }
}

impl<T> From<*const T> for Arg {
    #[inline(always)]
    fn from(v: *const T) -> Arg {
        Arg::Int(v as u64)
    }
}

impl<T> From<*mut T> for Arg {
    #[inline(always)]
    fn from(v: *mut T) -> Arg {
        Arg::Int(v as u64)
    }
}

/// The ring buffer log lines go through (256 KiB): in the object only when a
/// program logs (not exported: the linker drops it when unused; user space
/// finds it by the name its symbol ends with).
///
/// Kernel: Linux 5.8.
#[link_section = "maps"]
pub static SONDE_LOG: RingBuf = RingBuf::with_byte_size(256 * 1024);

/// Level of a log line (the `log` crate's, same order).
#[repr(u8)]
#[derive(Clone, Copy)]
pub enum Level {
    /// `error!`
    Error = 1,
    /// `warn!`
    Warn = 2,
    /// `info!`
    Info = 3,
    /// `debug!`
    Debug = 4,
    /// `trace!`
    Trace = 5,
}

/// One log line as sent: `sonde::log` reads the same layout.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Record {
    /// The format string's id ([`fmt_id`]).
    pub id: u64,
    /// [`Level`] as a byte.
    pub level: u8,
    /// Arguments used.
    pub nargs: u8,
    /// Bit `i` set: argument `i` is a string, `args[i]` its slot in `text`
    /// (low byte) and the length read, its NUL included (the next bytes), or
    /// `u64::MAX` when it could not be read.
    pub strs: u8,
    /// Zero.
    pub _pad0: u8,
    /// Zero.
    pub _pad1: u32,
    /// The arguments, as 64-bit values.
    pub args: [u64; MAX_ARGS],
    /// The strings' bytes, [`LOG_TEXT`] per slot.
    pub text: [u8; LOG_TEXT * MAX_STRS],
}

/// FNV-1a of a format string: its id in records and in the `sonde_log` section.
pub const fn fmt_id(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// A `sonde_log` section entry: id (8 bytes, little-endian), length (2 bytes),
/// then the format's bytes; `L` is `10 + s.len()`.
pub const fn entry<const L: usize>(s: &str) -> [u8; L] {
    let mut out = [0u8; L];
    let id = fmt_id(s).to_le_bytes();
    let mut i = 0;
    while i < 8 {
        out[i] = id[i];
        i += 1;
    }
    let b = s.as_bytes();
    let len = (b.len() as u16).to_le_bytes();
    out[8] = len[0];
    out[9] = len[1];
    let mut j = 0;
    while j < b.len() && 10 + j < L {
        out[10 + j] = b[j];
        j += 1;
    }
    out
}

/// Sends one record (the macros call this): reserved in the ring buffer and
/// written field by field (volatile stores: no `memset` the verifier would
/// refuse), strings read straight into it, then submitted.
#[inline(always)]
pub fn send(level: Level, id: u64, args: &[Arg]) {
    let Some(mut entry) = SONDE_LOG.reserve::<Record>(0) else {
        return;
    };
    let r = entry.as_mut_ptr();
    let n = if args.len() < MAX_ARGS { args.len() } else { MAX_ARGS };
    let mut strs: u8 = 0;
    let mut slot = 0usize;
    // SAFETY: `r` is the reserved record, valid for writes of a whole Record;
    // each string lands in its own fixed LOG_TEXT slot of it.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).id), id);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).level), level as u8);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).nargs), n as u8);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r)._pad0), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r)._pad1), 0);
        let mut i = 0;
        while i < MAX_ARGS {
            let v = if i < n {
                match args[i] {
                    Arg::Int(v) => v,
                    Arg::Str(p) if slot < MAX_STRS => {
                        let text = core::ptr::addr_of_mut!((*r).text) as *mut u8;
                        let dst = if slot == 0 {
                            core::slice::from_raw_parts_mut(text, LOG_TEXT)
                        } else {
                            core::slice::from_raw_parts_mut(text.add(LOG_TEXT), LOG_TEXT)
                        };
                        let read = crate::helpers::probe_read_user_str(p as *const u8, dst);
                        strs |= 1 << i;
                        let v = match read {
                            Ok(len) => slot as u64 | (len as u64) << 8,
                            Err(_) => u64::MAX,
                        };
                        slot += 1;
                        v
                    }
                    Arg::Str(p) => p,
                }
            } else {
                0
            };
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).args[i]), v);
            i += 1;
        }
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*r).strs), strs);
    }
    entry.submit(0);
}

/// Logs at `level`: `log!(Level::Info, "x = {}", x)`. Prefer [`info!`](crate::info) and friends.
#[macro_export]
macro_rules! log {
    ($level:expr, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        const FMT: &str = $fmt;
        // The format, for user space only: never read by the program.
        #[link_section = "sonde_log"]
        #[used]
        static ENTRY: [u8; 10 + FMT.len()] = $crate::log::entry::<{ 10 + FMT.len() }>(FMT);
        $crate::log::send($level, $crate::log::fmt_id(FMT), &[$($crate::log::Arg::from($arg)),*]);
    }};
}

/// Logs at error level (Linux 5.8).
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Error, $($t)*) };
}

/// Logs at warn level (Linux 5.8).
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Warn, $($t)*) };
}

/// Logs at info level (Linux 5.8).
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Info, $($t)*) };
}

/// Logs at debug level (Linux 5.8).
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Debug, $($t)*) };
}

/// Logs at trace level (Linux 5.8).
#[macro_export]
macro_rules! trace {
    ($($t:tt)*) => { $crate::log!($crate::log::Level::Trace, $($t)*) };
}
