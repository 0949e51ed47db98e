//! `bpf(2)` commands that ask about objects: program and link info, the
//! kernel's id lists, run-time statistics.

use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{fd_result, sys_bpf};
use crate::sys::{run, Call, SysResult, SyscallError};

const BPF_PROG_GET_NEXT_ID: u32 = 11;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_GET_NEXT_ID: u32 = 31;
const BPF_ENABLE_STATS: u32 = 32;

/// `struct bpf_prog_info` up to `attach_btf_id` (fields past what the running
/// kernel knows stay zero).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct BpfProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
    pub jited_prog_len: u32,
    pub xlated_prog_len: u32,
    pub jited_prog_insns: u64,
    pub xlated_prog_insns: u64,
    pub load_time: u64,
    pub created_by_uid: u32,
    pub nr_map_ids: u32,
    pub map_ids: u64,
    pub name: [u8; 16],
    pub ifindex: u32,
    pub gpl_compatible: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub nr_jited_ksyms: u32,
    pub nr_jited_func_lens: u32,
    pub jited_ksyms: u64,
    pub jited_func_lens: u64,
    pub btf_id: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub nr_func_info: u32,
    pub nr_line_info: u32,
    pub line_info: u64,
    pub jited_line_info: u64,
    pub nr_jited_line_info: u32,
    pub line_info_rec_size: u32,
    pub jited_line_info_rec_size: u32,
    pub nr_prog_tags: u32,
    pub prog_tags: u64,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
    pub verified_insns: u32,
    pub attach_btf_obj_id: u32,
    pub attach_btf_id: u32,
}

/// `struct bpf_link_info`: the common head and room for the union.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct BpfLinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    _union: [u32; 25],
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD` (the `info` member).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info<T: Copy>(fd: BorrowedFd<'_>) -> SysResult<T> {
    // SAFETY: the info structs are plain integers; all-zero is valid.
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: &mut info as *mut T as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| SyscallError::new(Call::ObjInfo, e))?;
    Ok(info)
}

pub(crate) fn prog_info(fd: BorrowedFd<'_>) -> SysResult<BpfProgInfo> {
    obj_info(fd)
}

pub(crate) fn link_info(fd: BorrowedFd<'_>) -> SysResult<BpfLinkInfo> {
    obj_info(fd)
}

/// `union bpf_attr` for `BPF_*_GET_NEXT_ID` and `BPF_*_GET_FD_BY_ID`: `start_id`
/// is `prog_id`/`link_id` for the latter (one union in the kernel).
#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    start_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for `BPF_ENABLE_STATS` (5.8): the `enable_stats` member.
#[repr(C)]
#[derive(Default)]
struct EnableStatsAttr {
    type_: u32,
}

fn next_id(cmd: u32, id: u32) -> SysResult<Option<u32>> {
    let mut attr = GetIdAttr {
        start_id: id,
        ..Default::default()
    };
    match sys_bpf(cmd, &mut attr) {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(SyscallError::new(Call::ObjById, e)),
    }
}

fn fd_by_id(cmd: u32, id: u32) -> SysResult<Option<OwnedFd>> {
    let mut attr = GetIdAttr {
        start_id: id,
        ..Default::default()
    };
    match fd_result(sys_bpf(cmd, &mut attr)) {
        Ok(fd) => Ok(Some(fd)),
        // Gone between listing and opening.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(SyscallError::new(Call::ObjById, e)),
    }
}

pub(crate) fn link_get_next_id(id: u32) -> SysResult<Option<u32>> {
    next_id(BPF_LINK_GET_NEXT_ID, id)
}

pub(crate) fn link_get_fd_by_id(id: u32) -> SysResult<Option<OwnedFd>> {
    fd_by_id(BPF_LINK_GET_FD_BY_ID, id)
}

pub(crate) fn prog_get_next_id(id: u32) -> SysResult<Option<u32>> {
    next_id(BPF_PROG_GET_NEXT_ID, id)
}

pub(crate) fn prog_get_fd_by_id(id: u32) -> SysResult<Option<OwnedFd>> {
    fd_by_id(BPF_PROG_GET_FD_BY_ID, id)
}

/// `BPF_ENABLE_STATS(BPF_STATS_RUN_TIME)` (5.8): run-time statistics on while the
/// returned descriptor is open.
pub(crate) fn enable_stats() -> SysResult<OwnedFd> {
    // BPF_STATS_RUN_TIME is 0.
    let mut attr = EnableStatsAttr::default();
    run(Call::EnableStats, || fd_result(sys_bpf(BPF_ENABLE_STATS, &mut attr)))
}
