//! Processes sonde runs or watches: a command forked and held before `exec` until
//! the probes are attached (so it is traced from its first instruction), and a
//! `-p` process watched for its exit.

use std::ffi::CString;

use crate::CliError;

/// A command forked and held before `exec` until the probes are attached.
pub struct Child {
    pub pid: libc::pid_t,
    gate: libc::c_int,
    exec_status: libc::c_int,
}

/// A process traced with `-p`, watched through a pidfd (Linux 5.3+): readable
/// once the process has exited, and immune to pid reuse.
pub struct Watched {
    pub pid: u32,
    /// `None` where pidfd_open failed (gone already, or a kernel without it):
    /// then `/proc/PID` is looked at.
    fd: Option<std::os::fd::OwnedFd>,
}

impl Watched {
    pub fn open(pid: u32) -> Option<Watched> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags; the returned fd is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0);
        // SAFETY: a new descriptor nobody else owns.
        let fd = fd.map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        Some(Watched { pid, fd })
    }

    pub fn exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else {
            return sonde::process::stat(self.pid).is_none();
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
    }
}

/// Forks `cmd`, held before exec until [`Child::release`]: the probes are
/// attached with its pid first, so it is traced from its first instruction.
pub fn spawn_gated(cmd: &[String]) -> Result<Child, CliError> {
    let args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| CliError::new("a command argument contains a NUL byte")))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut gate = [0; 2];
    let mut status = [0; 2];
    // SAFETY: plain pipe creation into local arrays.
    if unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        || unsafe { libc::pipe2(status.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(CliError::new(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: the child only calls async-signal-safe functions (read, write,
    // execvp, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CliError::new(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        unsafe {
            // Only the read end of the gate and the write end of the status pipe
            // stay open here, or the gate never reads end-of-file.
            libc::close(gate[1]);
            libc::close(status[0]);
            let mut b = 0u8;
            libc::read(gate[0], (&mut b as *mut u8).cast(), 1);
            if b == 1 {
                libc::execvp(argv[0], argv.as_ptr());
                let err = *libc::__errno_location();
                libc::write(status[1], (&err as *const i32).cast(), 4);
            }
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copies of the child's ends.
    unsafe {
        libc::close(gate[0]);
        libc::close(status[1]);
    }
    Ok(Child {
        pid,
        gate: gate[1],
        exec_status: status[0],
    })
}

impl Child {
    /// Lets the command exec; an exec failure (no such command) is an error.
    pub fn release(&self) -> Result<(), CliError> {
        let go = 1u8;
        let mut err = 0i32;
        // SAFETY: writes one byte, then reads the exec error pipe, which closes
        // on a successful exec (CLOEXEC) and so returns 0 bytes.
        let n = unsafe {
            libc::write(self.gate, (&go as *const u8).cast(), 1);
            libc::read(self.exec_status, (&mut err as *mut i32).cast(), 4)
        };
        if n == 4 {
            return Err(CliError::new(format!(
                "cannot run the command: {} (is it on PATH?)",
                std::io::Error::from_raw_os_error(err)
            )));
        }
        Ok(())
    }

    pub fn try_wait(&mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        (r == self.pid).then(|| {
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            }
        })
    }

    pub fn kill(mut self) {
        // SAFETY: closing the gate makes the child exit without exec; reap it.
        unsafe {
            libc::close(self.gate);
            self.gate = -1;
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own pipe ends, each closed once.
        unsafe {
            if self.gate >= 0 {
                libc::close(self.gate);
            }
            libc::close(self.exec_status);
        }
    }
}
