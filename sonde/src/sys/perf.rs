//! `perf_event_open(2)` for uprobes and tracepoints, and the perf ioctls.

use std::ffi::CStr;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, run_detailed, run_unit, Call, SysResult};

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

/// `struct perf_event_attr` up to `sig_data` (PERF_ATTR_SIZE_VER7, 128 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    _reserved2: u16,
    aux_sample_size: u32,
    _reserved3: u32,
    sig_data: u64,
}

/// Bit 0 of the attr flags: start disabled, enabled once a program is attached.
const ATTR_DISABLED: u64 = 1;

fn open(attr: &mut PerfEventAttr, pid: Option<u32>, call: Call, detail: impl FnOnce() -> String) -> SysResult<OwnedFd> {
    attr.size = size_of::<PerfEventAttr>() as u32;
    attr.flags = ATTR_DISABLED;
    // A uprobe event with pid -1 must name a CPU; the BPF program still runs on all
    // CPUs (the filter applies to perf's own sampling, which we do not use).
    let (pid, cpu) = match pid {
        Some(p) => (p as libc::c_long, -1),
        None => (-1, 0),
    };
    run_detailed(call, detail, || {
        // SAFETY: `attr` is a valid perf_event_attr of the size it states.
        let fd = cvt(unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr as *mut PerfEventAttr,
                pid,
                cpu as libc::c_long,
                -1 as libc::c_long,
                PERF_FLAG_FD_CLOEXEC,
            )
        })?;
        // SAFETY: a new descriptor we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    })
}

/// A uprobe through the `uprobe` PMU (4.17): `path` at file `offset`; `retprobe_bit`
/// set for a uretprobe; a USDT semaphore at `ref_ctr_offset` (4.20: bits 63:32 of
/// `config`, the PMU's `ref_ctr_offset` format); `pid` `None` for every process.
pub(crate) fn open_uprobe(
    pmu_type: u32,
    retprobe_bit: Option<u32>,
    path: &CStr,
    offset: u64,
    ref_ctr_offset: Option<u64>,
    pid: Option<u32>,
) -> SysResult<OwnedFd> {
    let mut attr = PerfEventAttr {
        type_: pmu_type,
        config: retprobe_bit.map_or(0, |b| 1u64 << b) | (ref_ctr_offset.unwrap_or(0) << 32),
        config1: path.as_ptr() as u64,
        config2: offset,
        ..Default::default()
    };
    let detail = || {
        let ret = if retprobe_bit.is_some() { " return" } else { "" };
        let sem = ref_ctr_offset.map_or(String::new(), |r| format!(" semaphore={r:#x}"));
        format!(
            "{}:{offset:#x}{ret}{sem} pid={}",
            path.to_string_lossy(),
            pid.map_or(-1, i64::from)
        )
    };
    open(&mut attr, pid, Call::PerfEventOpen, detail)
}

/// A tracepoint event by its tracefs id (used for tracefs uprobes).
pub(crate) fn open_tracepoint(id: u64, pid: Option<u32>) -> SysResult<OwnedFd> {
    let mut attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        config: id,
        ..Default::default()
    };
    let detail = || format!("tracepoint {id} pid={}", pid.map_or(-1, i64::from));
    open(&mut attr, pid, Call::PerfEventOpenTracepoint, detail)
}

/// A `PERF_COUNT_SW_BPF_OUTPUT` event on `cpu` (4.4): the per-CPU buffer that
/// `bpf_perf_event_output` writes samples into; `wakeup` samples per wakeup.
pub(crate) fn open_bpf_output(cpu: u32) -> SysResult<OwnedFd> {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
    const PERF_SAMPLE_RAW: u64 = 1 << 10;
    let mut attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_BPF_OUTPUT,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        wakeup_events: 1,
        flags: ATTR_DISABLED,
        ..Default::default()
    };
    run_detailed(
        Call::PerfEventOpen,
        || format!("bpf output cpu {cpu}"),
        || {
            // SAFETY: `attr` is a valid perf_event_attr of the size it states.
            let fd = cvt(unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &mut attr as *mut PerfEventAttr,
                    -1 as libc::c_long,
                    cpu as libc::c_long,
                    -1 as libc::c_long,
                    PERF_FLAG_FD_CLOEXEC,
                )
            })?;
            // SAFETY: a new descriptor we now own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        },
    )
}

fn ioctl(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: libc::c_int, what: &str) -> SysResult<()> {
    run_unit(
        Call::PerfIoctl,
        || what.to_string(),
        || {
            // SAFETY: perf ioctls with an integer argument.
            let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
            cvt(ret as libc::c_long).map(drop)
        },
    )
}

/// `PERF_EVENT_IOC_SET_BPF` (4.3): runs `prog` on the event, cookie-less.
pub(crate) fn set_bpf(perf: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> SysResult<()> {
    ioctl(perf, PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd(), "SET_BPF")
}

/// `PERF_EVENT_IOC_ENABLE`.
pub(crate) fn enable(perf: BorrowedFd<'_>) -> SysResult<()> {
    ioctl(perf, PERF_EVENT_IOC_ENABLE, 0, "ENABLE")
}
