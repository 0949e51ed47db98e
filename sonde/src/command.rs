//! A command started held before its first instruction, so probes can be
//! attached with its pid before it runs anything (what `sonde ... -- COMMAND`
//! does), and a process watched for its exit.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let bytes: Vec<u8> = Vec::new();
//! use sonde::command::HeldCommand;
//! use sonde::{AttachOptions, Functions, Object};
//! let mut cmd = HeldCommand::spawn(["./app", "--serve"])?;
//! let set = Functions::in_binary("./app").pid(cmd.pid()).pattern("handle_*").resolve()?;
//! let mut object = Object::load(&bytes)?;
//! let _attachment = object
//!     .uprobe("count")?
//!     .attach_sites(set.targets(), &AttachOptions::default().pid(cmd.pid()))?;
//! cmd.release()?; // exec: traced from its first instruction
//! let status = cmd.wait();
//! # let _ = status;
//! # Ok(()) }
//! ```

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use crate::sys::spawn::{self, Held};
use crate::sys::SyscallError;

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No command given.
    #[error("no command given")]
    Empty,
    /// An argument with a NUL byte cannot be passed to `exec`.
    #[error("a command argument contains a NUL byte")]
    Nul,
    /// `fork` or `pipe2` failed.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// `exec` failed (no such command, not executable).
    #[error("cannot run the command `{command}`: {source} (is it on PATH?)")]
    Exec {
        /// The command.
        command: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

/// A command forked and held before `exec` until [`HeldCommand::release`].
/// Dropped unreleased, it exits without running anything and is reaped.
#[derive(Debug)]
pub struct HeldCommand {
    held: Option<Held>,
    command: String,
    status: Option<i32>,
}

impl HeldCommand {
    /// Forks `args` (`args[0]` looked up on PATH), held before `exec`.
    pub fn spawn<I, S>(args: I) -> Result<HeldCommand, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_with(args, false)
    }

    /// [`HeldCommand::spawn`], the command's stdout sent to this process's
    /// stderr when `stdout_to_stderr` (so a report on stdout stays clean).
    pub fn spawn_with<I, S>(args: I, stdout_to_stderr: bool) -> Result<HeldCommand, CommandError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a.as_ref().as_bytes()).map_err(|_| CommandError::Nul))
            .collect::<Result<_, _>>()?;
        let command = argv.first().ok_or(CommandError::Empty)?.to_string_lossy().into_owned();
        Ok(HeldCommand {
            held: Some(spawn::spawn_held(&argv, stdout_to_stderr)?),
            command,
            status: None,
        })
    }

    /// Its pid (attach with `AttachOptions::pid` before releasing it).
    pub fn pid(&self) -> u32 {
        self.held.as_ref().map_or(0, |h| h.pid as u32)
    }

    /// Lets it `exec`; an exec failure is an error (and the child is reaped).
    pub fn release(&mut self) -> Result<(), CommandError> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        spawn::release(held).map_err(|errno| CommandError::Exec {
            command: self.command.clone(),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }

    /// Its exit status if it has ended (128 + signal after a signal).
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = self.held.as_ref().and_then(|h| spawn::wait(h.pid, false));
        }
        self.status
    }

    /// Waits for it to end; its exit status.
    pub fn wait(&mut self) -> i32 {
        if let (None, Some(h)) = (self.status, &self.held) {
            self.status = spawn::wait(h.pid, true);
        }
        self.status.unwrap_or(127)
    }
}

impl Drop for HeldCommand {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let pid = held.pid;
            // Closing the gate unwritten makes a held child exit; a released one
            // is not waited for here.
            drop(held);
            if self.status.is_none() {
                let _ = spawn::wait(pid, false);
            }
        }
    }
}

/// A process watched for its exit through a pidfd (Linux 5.3+), immune to pid
/// reuse; where pidfds are missing, through `/proc/PID`.
#[derive(Debug)]
pub struct ProcessWatch {
    pid: u32,
    fd: Option<std::os::fd::OwnedFd>,
}

impl ProcessWatch {
    /// Watches `pid`.
    pub fn new(pid: u32) -> ProcessWatch {
        ProcessWatch {
            pid,
            fd: spawn::pidfd_open(pid),
        }
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its pidfd (readable once it exits), where the kernel has pidfds.
    pub(crate) fn pidfd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// Whether it has exited.
    pub fn exited(&self) -> bool {
        match &self.fd {
            Some(fd) => spawn::readable(fd.as_fd()),
            None => crate::process::stat(self.pid).is_none(),
        }
    }
}
