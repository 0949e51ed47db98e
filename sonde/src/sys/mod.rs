//! Every system call sonde makes, one function per kernel command.
//!
//! Errors name the call and keep the `io::Error` (errno). All calls pass through
//! `fault` (with the `fault-injection` feature) so tests can make any of them fail
//! without a kernel that does.

pub(crate) mod bpf;
pub(crate) mod files;
pub(crate) mod handoff;
pub(crate) mod inotify;
pub(crate) mod perf;
pub(crate) mod procmem;
pub(crate) mod ring;
pub(crate) mod spawn;
pub(crate) mod tracefs;

#[cfg(any(test, feature = "fault-injection"))]
pub mod fake;
#[cfg(not(any(test, feature = "fault-injection")))]
mod fake;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;

use std::io;

/// A system call that failed: which one, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SyscallError {
    /// The call.
    pub call: Call,
    /// The errno, as an `io::Error`.
    #[source]
    pub source: io::Error,
}

impl SyscallError {
    pub(crate) fn new(call: Call, source: io::Error) -> Self {
        SyscallError { call, source }
    }

    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// EPERM or EACCES: a privilege the kernel wants and the caller lacks.
    pub fn is_permission(&self) -> bool {
        matches!(self.errno(), Some(libc::EPERM) | Some(libc::EACCES))
    }
}

pub(crate) type SysResult<T> = Result<T, SyscallError>;

/// Every kernel call sonde makes: errors name it, tests make it fail (`fault`, with the `fault-injection` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Call {
    /// `bpf(BPF_MAP_CREATE)`.
    MapCreate,
    /// `bpf(BPF_MAP_LOOKUP_ELEM)`.
    MapLookup,
    /// `bpf(BPF_MAP_UPDATE_ELEM)`.
    MapUpdate,
    /// `bpf(BPF_MAP_DELETE_ELEM)`.
    MapDelete,
    /// `bpf(BPF_MAP_GET_NEXT_KEY)`.
    MapNextKey,
    /// `bpf(BPF_MAP_FREEZE)`.
    MapFreeze,
    /// `bpf(BPF_PROG_LOAD)`.
    ProgLoad,
    /// `bpf(BPF_LINK_CREATE)` (perf link or uprobe_multi link).
    LinkCreate,
    /// `bpf(BPF_OBJ_GET_INFO_BY_FD)`.
    ObjInfo,
    /// `bpf(BPF_*_GET_NEXT_ID)` / `bpf(BPF_*_GET_FD_BY_ID)`.
    ObjById,
    /// `bpf(BPF_ENABLE_STATS)`.
    EnableStats,
    /// `perf_event_open` of a uprobe (the uprobe PMU). A fault injected here also
    /// fails [`Call::PerfEventOpenTracepoint`]: both are `perf_event_open`.
    PerfEventOpen,
    /// `perf_event_open` of a tracefs tracepoint.
    PerfEventOpenTracepoint,
    /// `ioctl` on a perf event (`SET_BPF`, `ENABLE`).
    PerfIoctl,
    /// A write to tracefs `uprobe_events`.
    TracefsWrite,
    /// A read of a tracefs event id.
    TracefsRead,
    /// `mount` of tracefs.
    Mount,
    /// `mmap` of a ring buffer.
    Mmap,
    /// `epoll_create1` / `epoll_ctl` / `epoll_wait`.
    Epoll,
    /// `pipe2`.
    Pipe,
    /// `fork` (the detach hand-off child, a command held before `exec`).
    Fork,
    /// `inotify_init1` / `inotify_add_watch` (a probed file watched for writes).
    Inotify,
    /// `openat2(RESOLVE_IN_ROOT)`: a file inside a container's root.
    OpenInRoot,
    /// `process_vm_readv`: another process's memory.
    ProcessVmReadv,
}

impl Call {
    /// What a fault injected for this call is registered under.
    #[cfg_attr(not(any(test, feature = "fault-injection")), allow(dead_code))]
    fn fault_kind(self) -> Call {
        match self {
            Call::PerfEventOpenTracepoint => Call::PerfEventOpen,
            c => c,
        }
    }

    /// The call as errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Call::MapCreate => "bpf(BPF_MAP_CREATE)",
            Call::MapLookup => "bpf(BPF_MAP_LOOKUP_ELEM)",
            Call::MapUpdate => "bpf(BPF_MAP_UPDATE_ELEM)",
            Call::MapDelete => "bpf(BPF_MAP_DELETE_ELEM)",
            Call::MapNextKey => "bpf(BPF_MAP_GET_NEXT_KEY)",
            Call::MapFreeze => "bpf(BPF_MAP_FREEZE)",
            Call::ProgLoad => "bpf(BPF_PROG_LOAD)",
            Call::LinkCreate => "bpf(BPF_LINK_CREATE)",
            Call::ObjInfo => "bpf(BPF_OBJ_GET_INFO_BY_FD)",
            Call::ObjById => "bpf(BPF_*_GET_NEXT_ID / GET_FD_BY_ID)",
            Call::EnableStats => "bpf(BPF_ENABLE_STATS)",
            Call::PerfEventOpen => "perf_event_open(uprobe)",
            Call::PerfEventOpenTracepoint => "perf_event_open(tracepoint)",
            Call::PerfIoctl => "ioctl(perf event)",
            Call::TracefsWrite => "write(tracefs uprobe_events)",
            Call::TracefsRead => "read(tracefs event id)",
            Call::Mount => "mount(tracefs)",
            Call::Mmap => "mmap(ring buffer)",
            Call::Epoll => "epoll",
            Call::Pipe => "pipe2",
            Call::Fork => "fork",
            Call::Inotify => "inotify",
            Call::OpenInRoot => "openat2(RESOLVE_IN_ROOT)",
            Call::ProcessVmReadv => "process_vm_readv",
        }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Runs `op` as `call`: an injected fault fails it first, an installed fake
/// kernel answers it; its error is named.
pub(crate) fn run<T: fake::Answer>(call: Call, op: impl FnOnce() -> io::Result<T>) -> SysResult<T> {
    run_detailed(call, String::new, op)
}

/// [`run`], telling a fake kernel what the call asks (`detail` is only
/// formatted when one is installed).
pub(crate) fn run_detailed<T: fake::Answer>(
    call: Call,
    detail: impl FnOnce() -> String,
    op: impl FnOnce() -> io::Result<T>,
) -> SysResult<T> {
    #[cfg(any(test, feature = "fault-injection"))]
    if let fault::Outcome::Fail(e) = fault::outcome(call.fault_kind(), false) {
        let _ = fake::answer::<()>(call, detail);
        return Err(SyscallError::new(call, e));
    }
    fake_or_run(call, detail, op)
}

/// [`run_detailed`] for a call that returns nothing: a test may also fake its
/// success (`fault::inject_success`), skipping `op`.
pub(crate) fn run_unit(
    call: Call,
    detail: impl FnOnce() -> String,
    op: impl FnOnce() -> io::Result<()>,
) -> SysResult<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    match fault::outcome(call.fault_kind(), true) {
        fault::Outcome::Run => {}
        fault::Outcome::Fail(e) => {
            let _ = fake::answer::<()>(call, detail);
            return Err(SyscallError::new(call, e));
        }
        fault::Outcome::Succeed => return Ok(()),
    }
    fake_or_run(call, detail, op)
}

/// The fake kernel's answer if one is installed on this thread, else `op`.
fn fake_or_run<T: fake::Answer>(
    call: Call,
    detail: impl FnOnce() -> String,
    op: impl FnOnce() -> io::Result<T>,
) -> SysResult<T> {
    #[cfg(any(test, feature = "fault-injection"))]
    if let Some(answer) = fake::answer(call, detail) {
        return answer.map_err(|e| SyscallError::new(call, e));
    }
    #[cfg(not(any(test, feature = "fault-injection")))]
    let _ = detail;
    op().map_err(|e| SyscallError::new(call, e))
}

/// Fails with the injected errno if a test asked for it (no-op without the
/// `fault-injection` feature).
#[inline]
pub(crate) fn check_fault(call: Call) -> io::Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    {
        fault::check(call.fault_kind())
    }
    #[cfg(not(any(test, feature = "fault-injection")))]
    {
        let _ = call;
        Ok(())
    }
}

/// Whether a fake kernel answers this thread's calls.
pub(crate) fn faked() -> bool {
    fake::active()
}

/// Converts a `-1`-on-error return into `io::Result`.
pub(crate) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The `RLIMIT_NOFILE` in force, if it can be read.
fn nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Raises the soft limit of `lim` to `want` (capped at the hard limit) if it is
/// lower; returns the soft limit now in force.
fn raise_soft(lim: libc::rlimit, want: u64) -> u64 {
    let want = want.min(lim.rlim_max);
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: valid in-pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        want
    } else {
        lim.rlim_cur
    }
}

/// Raises `RLIMIT_NOFILE`'s soft limit to the hard limit (at most 2^20), as
/// tracers that hold a descriptor per probe do at start: with the common soft
/// limit of 1024, even probing the kernel's features can run out. Returns the
/// soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    nofile().map_or(0, |lim| raise_soft(lim, 1 << 20))
}

/// The soft `RLIMIT_NOFILE` in force (0 if unknown).
pub(crate) fn fd_soft_limit() -> u64 {
    nofile().map_or(0, |lim| lim.rlim_cur)
}

/// Reservations up to this many descriptors are not counted ahead.
const FEW_FDS: u64 = 4;

/// Makes room for `needed` more descriptors: raises `RLIMIT_NOFILE`'s soft limit
/// (up to the hard limit) before anything is opened, counting the descriptors
/// open once. `Err(hard limit)` when even the hard limit cannot hold them with
/// those already open.
pub(crate) fn reserve_fds(needed: u64) -> Result<(), u64> {
    // A handful (a multi plan: one program, one link per binary) is not worth
    // listing /proc/self/fd for: were the table full, the first call would fail
    // with EMFILE, before anything half-done.
    if needed <= FEW_FDS {
        return Ok(());
    }
    let Some(lim) = nofile() else {
        return Ok(()); // cannot tell: let the calls say
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64);
    if open.saturating_add(needed).saturating_add(16) > lim.rlim_max {
        return Err(lim.rlim_max);
    }
    raise_soft(lim, open.saturating_add(needed).saturating_add(64));
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`: lift it (best
/// effort), once per process (an agent loading objects again pays nothing).
pub(crate) fn lift_memlock() {
    static LIFTED: std::sync::Once = std::sync::Once::new();
    LIFTED.call_once(|| {
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: valid in-pointer; failure leaves the limit as it was.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf) };
    });
}
