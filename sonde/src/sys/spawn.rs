//! Processes: a command forked and held before `exec` on a pipe, and pidfds.
//!
//! The child of the fork only calls async-signal-safe functions (`read`,
//! `write`, `close`, `execvp`, `_exit`) on memory prepared before the fork.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, run, Call, SysResult};

fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    run(Call::Pipe, || {
        let mut fds = [0; 2];
        // SAFETY: plain pipe creation into a local array.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
        // SAFETY: two fresh descriptors nobody else owns.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    })
}

/// A forked child waiting to `exec`.
#[derive(Debug)]
pub(crate) struct Held {
    pub pid: libc::pid_t,
    /// Writing a byte lets the child exec; closing it unwritten makes it exit.
    pub gate: OwnedFd,
    /// Carries the errno of a failed exec; end-of-file on success (CLOEXEC).
    pub exec_status: OwnedFd,
}

/// Forks a child that waits on a pipe, then runs `argv` (looked up on PATH),
/// with its stdout on this process's stderr when `stdout_to_stderr`.
pub(crate) fn spawn_held(argv: &[CString], stdout_to_stderr: bool) -> SysResult<Held> {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (gate_r, gate_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let pid = run(Call::Fork, || {
        // SAFETY: the child below calls only async-signal-safe functions on
        // memory prepared before the fork, then execs or `_exit`s.
        let pid = unsafe { libc::fork() };
        cvt(pid.into()).map(|p| p as libc::pid_t)
    })?;
    if pid == 0 {
        // SAFETY: the child, as above. Only the read end of the gate and the
        // write end of the status pipe are used; the others are its copies.
        unsafe {
            libc::close(gate_w.as_raw_fd());
            libc::close(status_r.as_raw_fd());
            let mut b = 0u8;
            libc::read(gate_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            if b == 1 {
                if stdout_to_stderr {
                    libc::dup2(2, 1);
                }
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let err = *libc::__errno_location();
                libc::write(status_w.as_raw_fd(), (&err as *const i32).cast(), 4);
            }
            libc::_exit(127);
        }
    }
    Ok(Held {
        pid,
        gate: gate_w,
        exec_status: status_r,
    })
}

/// Lets a held child exec; `Err(errno)` of a failed exec.
pub(crate) fn release(held: &Held) -> Result<(), i32> {
    let go = 1u8;
    let mut err = 0i32;
    // SAFETY: writes one byte, then reads the exec-status pipe, which closes on
    // a successful exec (CLOEXEC) and so returns 0 bytes.
    let n = unsafe {
        libc::write(held.gate.as_raw_fd(), (&go as *const u8).cast(), 1);
        libc::read(held.exec_status.as_raw_fd(), (&mut err as *mut i32).cast(), 4)
    };
    if n == 4 {
        Err(err)
    } else {
        Ok(())
    }
}

/// The exit status of child `pid` if it has ended (128 + signal for a signal),
/// without blocking, or blocking when `block`.
pub(crate) fn wait(pid: libc::pid_t, block: bool) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, if block { 0 } else { libc::WNOHANG }) };
    (r == pid).then(|| {
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    })
}

/// `pidfd_open` (Linux 5.3): a descriptor readable once `pid` has exited.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a new descriptor nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is readable now (no wait).
pub(crate) fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

/// How the kernel answers the x86-64 `uprobe` syscall (336, Linux 6.18) called
/// from outside its trampoline: in a forked child, since a kernel could answer
/// with SIGILL. `Ok(errno)` (0: it returned without error), `Err(128 + signal)`
/// when the child was killed, `None` where the child could not be forked.
pub(crate) fn uprobe_syscall_answer() -> Option<Result<i32, i32>> {
    let Some(number) = crate::arch::host::UPROBE_SYSCALL else {
        return Some(Ok(libc::ENOSYS));
    };
    // SAFETY: the child makes one raw syscall and `_exit`s (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let r = libc::syscall(number);
            let e = if r < 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(e.clamp(0, 127));
        }
    }
    let status = wait(pid, true)?;
    Some(if status > 128 { Err(status) } else { Ok(status) })
}
