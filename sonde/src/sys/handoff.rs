//! A process that finishes a detach in the background.
//!
//! The last close of a per-target uprobe is the slow one (the kernel waits for
//! a grace period under a global mutex, ~0.1 s each). [`spawn`] forks a worker
//! holding copies of the descriptors; the caller then closes its own copies
//! (cheap: not the last reference) and drops the [`Worker`]'s `go` end, which
//! lets the worker make the last, slow closes. A caller about to exit can just
//! exit: its exit closes `go` too.
//!
//! The worker is a grandchild (the child in between exits at once and is
//! reaped here), so it is nobody's zombie: init, or the nearest subreaper,
//! reaps it. Forked from a multi-threaded process, the child and the worker
//! make only async-signal-safe calls, on memory prepared before the fork
//! (`setsid`, `prctl`, `close`, `close_range`, `open`, `read`, `write`, `nanosleep`, the
//! raw `clone` syscall and `_exit`), nothing that allocates or locks.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Call, SyscallError};

/// One thing the worker does.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Close a descriptor (the last reference: the kernel detaches then).
    Close(RawFd),
    /// Write `line` to the file `path` (a tracefs removal), retrying while the
    /// kernel answers EBUSY (a perf event closed just before may hold it).
    Write {
        /// The file.
        path: CString,
        /// The line.
        line: CString,
    },
}

/// The worker's process name (`comm`), `sonde-detach`.
pub const WORKER_NAME: &std::ffi::CStr = c"sonde-detach";

/// A worker started by [`spawn`].
#[derive(Debug)]
pub(crate) struct Worker {
    /// Its pid (a grandchild of this process, reparented at once).
    pub pid: u32,
    /// Dropping this lets it start: close this process's copies of the
    /// descriptors first, or this process's closes would be the last ones.
    pub go: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SyscallError> {
    let mut fds = [0; 2];
    // SAFETY: plain pipe creation into a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SyscallError::new(Call::Pipe, std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a worker that carries out `steps` once [`Worker::go`] is closed in
/// every process (this one's exit closes it too), then exits.
pub(crate) fn spawn(steps: &[Step]) -> Result<Worker, SyscallError> {
    let err = |e| SyscallError::new(Call::Fork, e);
    super::check_fault(Call::Fork).map_err(err)?;
    let (wait_r, go) = pipe()?;
    let (pid_r, pid_w) = pipe()?;
    // Descriptors the worker keeps, sorted: every other one is closed there
    // (a pipe to a reader, a terminal) so nobody waits on it.
    let mut keep: Vec<RawFd> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Close(fd) => Some(*fd),
            Step::Write { .. } => None,
        })
        .chain([wait_r.as_raw_fd()])
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let (wait_fd, pid_fd) = (wait_r.as_raw_fd(), pid_w.as_raw_fd());
    // SAFETY: fork; the child below uses only async-signal-safe calls on memory
    // prepared before it (`steps`, `keep`), then `_exit`s.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: the child, as above.
        unsafe { child_then_worker(steps, &keep, wait_fd, pid_fd) }
    }
    drop((wait_r, pid_w));
    let mut status = 0;
    // SAFETY: reaps the child in between, which exits at once.
    unsafe { libc::waitpid(child, &mut status, 0) };
    let mut pid = [0u8; 4];
    // SAFETY: reads at most 4 bytes into a local buffer.
    let n = unsafe { libc::read(pid_r.as_raw_fd(), pid.as_mut_ptr().cast(), 4) };
    if n != 4 {
        return Err(err(std::io::Error::other("the detach worker did not start")));
    }
    Ok(Worker {
        pid: u32::from_ne_bytes(pid),
        go,
    })
}

/// The forked child: starts the worker (a raw `clone`, no atfork handlers:
/// locks another thread held at the first fork stay held here), writes its pid
/// and exits; the worker runs the steps.
unsafe fn child_then_worker(steps: &[Step], keep: &[RawFd], wait_fd: RawFd, pid_fd: RawFd) -> ! {
    // SAFETY: async-signal-safe calls only (see the module), as the caller says.
    unsafe {
        // What `ps` shows while it works: named before its pid is known to
        // anyone, so whoever looks for it by name finds it.
        libc::prctl(libc::PR_SET_NAME, WORKER_NAME.as_ptr());
        let worker = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if worker != 0 {
            if worker > 0 {
                let pid = (worker as u32).to_ne_bytes();
                libc::write(pid_fd, pid.as_ptr().cast(), 4);
            }
            libc::_exit(0);
        }
        // Out of the terminal's process group: a Ctrl-C does not reach it.
        libc::setsid();
        let mut from: RawFd = 0;
        for &fd in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
            if fd > from {
                close_range(from, fd - 1);
            }
            from = fd.saturating_add(1);
        }
        // Wait until every `go` end is closed (EOF): the caller's copies of the
        // descriptors are closed by then, so these closes are the last.
        let mut byte = 0u8;
        while libc::read(wait_fd, (&raw mut byte).cast(), 1) != 0 {
            if *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        for step in steps {
            match step {
                Step::Close(fd) => {
                    libc::close(*fd);
                }
                Step::Write { path, line } => write_retrying(path, line),
            }
        }
        libc::_exit(0);
    }
}

/// Closes `first..=last` (close_range, Linux 5.9+; one by one up to 4096 where
/// it is missing).
unsafe fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: closing descriptors of this (child) process.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) != 0 {
            for fd in first..=last.min(4095) {
                libc::close(fd);
            }
        }
    }
}

unsafe fn write_retrying(path: &CString, line: &CString) {
    let bytes = line.as_bytes();
    for _ in 0..100 {
        // SAFETY: NUL-terminated path, a buffer of `bytes.len()` bytes.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC);
            if fd < 0 {
                return;
            }
            let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            let busy = n < 0 && *libc::__errno_location() == libc::EBUSY;
            libc::close(fd);
            if !busy {
                return;
            }
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}
