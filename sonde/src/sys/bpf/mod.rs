//! `bpf(2)` commands. Layouts follow `include/uapi/linux/bpf.h`; each attr struct is
//! the prefix of `union bpf_attr` the command reads (the kernel zero-fills the rest).

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

mod info;

pub(crate) use info::*;

use super::{cvt, run_detailed, Call, SysResult, SyscallError};
use sonde_abi::Insn;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_MAP_FREEZE: u32 = 22;
const BPF_LINK_CREATE: u32 = 28;

pub(crate) use sonde_abi::map::BPF_F_RDONLY_PROG;
pub(crate) use sonde_abi::program::{
    BPF_F_UPROBE_MULTI_RETURN, BPF_PERF_EVENT, BPF_PROG_TYPE_KPROBE, BPF_TRACE_UPROBE_MULTI,
};

/// Calls `bpf(cmd, attr, sizeof attr)`.
fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised attr prefix of the given size.
    cvt(unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, size_of::<T>()) })
}

fn fd_result(ret: io::Result<libc::c_long>) -> io::Result<OwnedFd> {
    // SAFETY: the kernel returned a new descriptor we now own.
    ret.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn obj_name(name: &str) -> [u8; 16] {
    // The kernel accepts [A-Za-z0-9_.] and 15 bytes plus NUL.
    let mut out = [0u8; 16];
    for (o, c) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' {
            c
        } else {
            b'_'
        };
    }
    out
}

/// `union bpf_attr` for `BPF_MAP_CREATE`, up to `map_name` (4.15).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> SysResult<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: obj_name(name),
        ..Default::default()
    };
    let detail = || format!("{name} type={map_type} entries={max_entries}");
    run_detailed(Call::MapCreate, detail, || {
        fd_result(sys_bpf(BPF_MAP_CREATE, &mut attr))
    })
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM` and `BPF_MAP_GET_NEXT_KEY`
/// (`value` is `next_key` for the latter).
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_MAP_FREEZE` (5.2).
#[repr(C)]
struct MapFreezeAttr {
    map_fd: u32,
}

fn map_elem(cmd: u32, fd: BorrowedFd<'_>, key: *const u8, value: *const u8, flags: u64) -> io::Result<libc::c_long> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as u64,
        value: value as u64,
        flags,
    };
    sys_bpf(cmd, &mut attr)
}

/// Looks up `key`; `Ok(false)` when absent. `value` must hold the map's value size
/// (times the possible CPUs for per-CPU maps).
pub(crate) fn map_lookup_elem(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> SysResult<bool> {
    match map_elem(BPF_MAP_LOOKUP_ELEM, fd, key.as_ptr(), value.as_mut_ptr(), 0) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(SyscallError::new(Call::MapLookup, e)),
    }
}

pub(crate) fn map_update_elem(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> SysResult<()> {
    map_elem(BPF_MAP_UPDATE_ELEM, fd, key.as_ptr(), value.as_ptr(), flags)
        .map(drop)
        .map_err(|e| SyscallError::new(Call::MapUpdate, e))
}

/// Deletes `key`; `Ok(false)` when absent.
pub(crate) fn map_delete_elem(fd: BorrowedFd<'_>, key: &[u8]) -> SysResult<bool> {
    match map_elem(BPF_MAP_DELETE_ELEM, fd, key.as_ptr(), std::ptr::null(), 0) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(SyscallError::new(Call::MapDelete, e)),
    }
}

/// The key after `key` (the first key for `None`); `Ok(false)` at the end.
pub(crate) fn map_get_next_key(fd: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> SysResult<bool> {
    let k = key.map_or(std::ptr::null(), <[u8]>::as_ptr);
    match map_elem(BPF_MAP_GET_NEXT_KEY, fd, k, next.as_mut_ptr(), 0) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(SyscallError::new(Call::MapNextKey, e)),
    }
}

pub(crate) fn map_freeze(fd: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = MapFreezeAttr {
        map_fd: fd.as_raw_fd() as u32,
    };
    sys_bpf(BPF_MAP_FREEZE, &mut attr)
        .map(drop)
        .map_err(|e| SyscallError::new(Call::MapFreeze, e))
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type` (4.17).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// What `BPF_PROG_LOAD` needs.
pub(crate) struct ProgLoad<'a> {
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub insns: &'a [Insn],
    pub license: &'a CStr,
    pub name: &'a str,
}

/// Loads a program; `log` receives the verifier's output at `log_level`
/// (0 for none). The error is the raw errno, for the caller to pair with the log.
pub(crate) fn prog_load(p: &ProgLoad<'_>, log_level: u32, log: &mut [u8]) -> io::Result<OwnedFd> {
    let detail = || format!("{} type={} attach={}", p.name, p.prog_type, p.expected_attach_type);
    run_detailed(Call::ProgLoad, detail, || prog_load_now(p, log_level, log)).map_err(|e| e.source)
}

fn prog_load_now(p: &ProgLoad<'_>, log_level: u32, log: &mut [u8]) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type: p.prog_type,
        insn_cnt: p.insns.len() as u32,
        insns: p.insns.as_ptr() as u64,
        license: p.license.as_ptr() as u64,
        prog_name: obj_name(p.name),
        expected_attach_type: p.expected_attach_type,
        ..Default::default()
    };
    if log_level != 0 && !log.is_empty() {
        attr.log_level = log_level;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    fd_result(sys_bpf(BPF_PROG_LOAD, &mut attr))
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with `BPF_PERF_EVENT` (5.15).
#[repr(C)]
#[derive(Default)]
struct LinkCreatePerfEventAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    /// `perf_event.bpf_cookie`.
    bpf_cookie: u64,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with `BPF_TRACE_UPROBE_MULTI` or
/// `BPF_TRACE_UPROBE_SESSION` (6.6, 6.13): the `uprobe_multi` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateUprobeMultiAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    /// `uprobe_multi.flags` (`BPF_F_UPROBE_MULTI_RETURN`).
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

/// `BPF_LINK_CREATE` with `BPF_PERF_EVENT`: attaches `prog` to a perf event with a
/// cookie (5.15).
pub(crate) fn link_create_perf_event(prog: BorrowedFd<'_>, perf: RawFd, cookie: u64) -> SysResult<OwnedFd> {
    let mut attr = LinkCreatePerfEventAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: perf as u32,
        attach_type: BPF_PERF_EVENT,
        bpf_cookie: cookie,
        ..Default::default()
    };
    let detail = || format!("perf_event cookie={cookie}");
    run_detailed(Call::LinkCreate, detail, || {
        fd_result(sys_bpf(BPF_LINK_CREATE, &mut attr))
    })
}

/// One uprobe_multi link's request: every offset of one file.
pub(crate) struct UprobeMulti<'a> {
    /// `BPF_TRACE_UPROBE_MULTI` (6.6) or `BPF_TRACE_UPROBE_SESSION` (6.13).
    pub attach_type: u32,
    pub path: &'a CStr,
    pub offsets: &'a [u64],
    /// USDT semaphores, one per offset (0: none), or `None` for no semaphores.
    pub ref_ctr_offsets: Option<&'a [u64]>,
    pub cookies: &'a [u64],
    pub flags: u32,
    /// 0 for every process.
    pub pid: u32,
}

/// `BPF_LINK_CREATE` with a uprobe_multi attach type: one link for all offsets of
/// one file, with a cookie (and optionally a semaphore) each.
pub(crate) fn link_create_uprobe_multi(prog: BorrowedFd<'_>, m: &UprobeMulti<'_>) -> SysResult<OwnedFd> {
    let UprobeMulti {
        attach_type,
        path,
        offsets,
        ref_ctr_offsets,
        cookies,
        flags,
        pid,
    } = *m;
    debug_assert_eq!(offsets.len(), cookies.len());
    debug_assert!(ref_ctr_offsets.is_none_or(|r| r.len() == offsets.len()));
    let mut attr = LinkCreateUprobeMultiAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type,
        path: path.as_ptr() as u64,
        offsets: offsets.as_ptr() as u64,
        ref_ctr_offsets: ref_ctr_offsets.map_or(0, |r| r.as_ptr() as u64),
        cookies: cookies.as_ptr() as u64,
        cnt: offsets.len() as u32,
        multi_flags: flags,
        pid,
        ..Default::default()
    };
    let detail = || {
        format!(
            "uprobe_multi type={attach_type} {} offsets={offsets:x?} cookies={cookies:?} semaphores={ref_ctr_offsets:x?} flags={flags} pid={pid}",
            path.to_string_lossy()
        )
    };
    run_detailed(Call::LinkCreate, detail, || {
        fd_result(sys_bpf(BPF_LINK_CREATE, &mut attr))
    })
}
