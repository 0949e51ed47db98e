//! A child process that finishes a detach after its parent has gone.
//!
//! Forked from a multi-threaded process, the child may only make
//! async-signal-safe calls: every byte it uses (descriptors, paths, lines) is
//! prepared before the fork, and it calls `setsid`, `close`, `open`, `write`,
//! `nanosleep`, `getppid` and `_exit`, nothing that allocates or locks.
//!
//! The child waits for its parent to exit before it closes anything: the last
//! close of a per-target uprobe is the slow one, and it must be the child's.

use std::ffi::CString;
use std::os::fd::RawFd;

use super::{Call, SyscallError};

/// One thing the child does.
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

/// Forks a child that carries out `steps` and exits; returns its pid.
pub(crate) fn spawn(steps: &[Step]) -> Result<u32, SyscallError> {
    let err = |e| SyscallError::new(Call::Fork, e);
    super::check_fault(Call::Fork).map_err(err)?;
    // Descriptors to keep in the child, sorted: every other one is closed there
    // (a pipe to a reader, a terminal) so nobody waits on the child.
    let mut keep: Vec<RawFd> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Close(fd) => Some(*fd),
            Step::Write { .. } => None,
        })
        .collect();
    keep.sort_unstable();
    keep.dedup();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork; the child below uses only async-signal-safe calls on memory
    // prepared before it (`steps`, `keep`), then `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    if pid > 0 {
        return Ok(pid as u32);
    }
    // SAFETY: the child, as above.
    unsafe {
        // Out of the terminal's process group: a second Ctrl-C does not reach it.
        libc::setsid();
        let mut from: RawFd = 0;
        for &fd in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
            if fd > from {
                close_range(from, fd - 1);
            }
            from = fd.saturating_add(1);
        }
        // The parent's copies must go first, or its exit would be the last
        // close and pay the detach: wait until it has exited (this child is
        // then reparented; exit_notify comes after the parent's files closed).
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        while libc::getppid() == parent {
            libc::nanosleep(&pause, std::ptr::null_mut());
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
