//! The probes of the feature table: each a tiny program load, link, map or perf
//! call whose errno answers, with the reasoning beside it.

use std::ffi::CString;
use std::os::fd::AsFd;

use super::Probed;
use crate::sys::{bpf, perf, tracefs};
use sonde_abi::Insn;

/// An errno from a probe: EINVAL-like answers mean no; privilege and resource
/// errors say nothing about the kernel.
fn answer(result: Result<(), i32>, yes_errno: Option<i32>) -> Probed {
    match result {
        Ok(()) if yes_errno.is_none() => Probed::Yes,
        Ok(()) => Probed::Unknown("the probe unexpectedly succeeded".into()),
        Err(e) if Some(e) == yes_errno => Probed::Yes,
        Err(libc::EPERM | libc::EACCES) => Probed::Unknown("not permitted: run as root".into()),
        Err(e @ (libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => {
            Probed::Unknown(std::io::Error::from_raw_os_error(e).to_string())
        }
        Err(_) => Probed::No,
    }
}

pub(super) fn read_sysfs_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

const MOV_R0_0: Insn = Insn {
    code: 0xb7,
    regs: 0,
    off: 0,
    imm: 0,
};

fn load_probe_prog(insns: &[Insn], expected_attach_type: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    let license = CString::new("GPL").expect("no NUL");
    bpf::prog_load(
        &bpf::ProgLoad {
            prog_type: bpf::BPF_PROG_TYPE_KPROBE,
            expected_attach_type,
            insns,
            license: &license,
            name: "sonde_probe",
        },
        0,
        &mut [],
    )
}

fn errno(e: &crate::sys::SyscallError) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub(super) fn probe_uprobe_pmu() -> Probed {
    if read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type").is_some() {
        Probed::Yes
    } else {
        Probed::No
    }
}

/// A PMU uprobe on a path that does not exist: ENOENT means the kernel got past its
/// permission check (which comes first), EPERM/EACCES that it refused.
pub(super) fn probe_pmu_permitted() -> Probed {
    let Some(pmu_type) = read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type") else {
        return Probed::No;
    };
    let path = CString::new("/nonexistent/sonde-feature-probe").expect("no NUL");
    match perf::open_uprobe(pmu_type, None, &path, 0, None, None) {
        Ok(_) => Probed::Yes,
        Err(e) if e.is_permission() => Probed::No,
        Err(e) => answer(Err(errno(&e)), Some(libc::ENOENT)),
    }
}

/// `BPF_LINK_CREATE(BPF_PERF_EVENT)` with a bad perf fd: EBADF means the kernel
/// knows the attach type and looked for the event; EINVAL that it does not.
pub(super) fn probe_perf_link() -> Probed {
    let prog = match load_probe_prog(&[MOV_R0_0, Insn::exit()], 0) {
        Ok(p) => p,
        Err(e) => return answer(Err(io_errno(&e)), None),
    };
    let r = bpf::link_create_perf_event(prog.as_fd(), -1, 0)
        .map(drop)
        .map_err(|e| errno(&e));
    answer(r, Some(libc::EBADF))
}

/// A kprobe-type program calling `bpf_get_attach_cookie` loads only where the
/// helper exists (unknown helpers fail verification with EINVAL).
pub(super) fn probe_bpf_cookie() -> Probed {
    let call = Insn {
        code: sonde_abi::insn::CALL,
        regs: 0,
        off: 0,
        imm: sonde_abi::helper::GET_ATTACH_COOKIE as i32,
    };
    answer(
        load_probe_prog(&[call, MOV_R0_0, Insn::exit()], 0)
            .map(drop)
            .map_err(|e| io_errno(&e)),
        None,
    )
}

/// A uprobe_multi-style link of `attach_type` to "/" (not a regular file) with
/// `pid`: the errno answers.
fn multi_link_errno(attach_type: u32, pid: u32) -> Result<(), i32> {
    let prog = load_probe_prog(&[MOV_R0_0, Insn::exit()], attach_type).map_err(|e| io_errno(&e))?;
    let root = CString::new("/").expect("no NUL");
    let request = bpf::UprobeMulti {
        attach_type,
        path: &root,
        offsets: &[0],
        ref_ctr_offsets: None,
        cookies: &[0],
        flags: 0,
        pid,
    };
    bpf::link_create_uprobe_multi(prog.as_fd(), &request)
        .map(drop)
        .map_err(|e| errno(&e))
}

/// A uprobe_multi link to "/" fails with EBADF where the link type exists,
/// EINVAL (unknown attach type) where not.
pub(super) fn probe_uprobe_multi() -> Probed {
    answer(multi_link_errno(bpf::BPF_TRACE_UPROBE_MULTI, 0), Some(libc::EBADF))
}

/// With pid -1, a kernel with the pid-filter fix refuses with EINVAL before it
/// looks at the path (EBADF: no fix).
pub(super) fn probe_uprobe_multi_pid_filter() -> Probed {
    if probe_uprobe_multi() != Probed::Yes {
        return Probed::No;
    }
    answer(
        multi_link_errno(bpf::BPF_TRACE_UPROBE_MULTI, u32::MAX),
        Some(libc::EINVAL),
    )
}

/// A session link to "/" fails with EBADF where the attach type exists.
pub(super) fn probe_uprobe_session() -> Probed {
    answer(
        multi_link_errno(sonde_abi::program::BPF_TRACE_UPROBE_SESSION, 0),
        Some(libc::EBADF),
    )
}

pub(super) fn probe_ring_buf() -> Probed {
    let r = bpf::map_create(sonde_abi::MapType::RingBuf as u32, 0, 0, 4096, 0, "sonde_probe");
    answer(r.map(drop).map_err(|e| errno(&e)), None)
}

/// A writable `uprobe_events` where tracefs is mounted, or tracefs known to the
/// kernel and this process allowed to mount it (root). Never mounts.
pub(super) fn probe_tracefs() -> Probed {
    if let Some(root) = tracefs::mounted_root() {
        let Ok(path) = CString::new(root.join("uprobe_events").into_os_string().into_encoded_bytes()) else {
            return Probed::No;
        };
        // SAFETY: a valid C string.
        return if unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0 {
            Probed::Yes
        } else {
            Probed::Unknown("uprobe_events is not writable: run as root".into())
        };
    }
    let known = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| t.lines().any(|l| l.ends_with("\ttracefs")));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match (known, root) {
        (true, true) => Probed::Yes,
        (true, false) => Probed::Unknown("tracefs is not mounted and only root can mount it".into()),
        (false, _) => Probed::No,
    }
}

/// The `uprobe` syscall (x86-64 336) that optimised nop5 uprobes return
/// through: called from outside its trampoline it answers ENXIO (a kernel
/// without it ENOSYS). Asked in a forked child, as a pre-release form of the
/// syscall killed the caller with SIGILL instead (that too means it is there).
pub(super) fn probe_uprobe_nop5() -> Probed {
    match crate::sys::spawn::uprobe_syscall_answer() {
        Some(Ok(libc::ENXIO)) => Probed::Yes,
        Some(Err(status)) if status == 128 + libc::SIGILL => Probed::Yes,
        Some(_) => Probed::No,
        None => Probed::Unknown("cannot fork a process to ask".into()),
    }
}
