//! inotify: a file's contents watched for writes, attribute changes, moves and
//! deletion (Linux 2.6.13+), non-blocking.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{cvt, run, Call, SysResult};

/// What a watch reports: any write or truncation, attribute change (the change
/// time), the file moved or deleted.
const MASK: u32 = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_CLOSE_WRITE | libc::IN_MOVE_SELF | libc::IN_DELETE_SELF;

/// A new inotify instance, watching nothing yet.
pub(crate) fn init() -> SysResult<OwnedFd> {
    run(Call::Inotify, || {
        // SAFETY: creates a descriptor nobody else owns.
        let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }.into())?;
        // SAFETY: a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    })
}

/// Adds `path` to the instance `fd`.
pub(crate) fn add(fd: &OwnedFd, path: &Path) -> SysResult<()> {
    run(Call::Inotify, || {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        cvt(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), MASK) }.into())?;
        Ok(())
    })
}

/// Reads every event queued on `fd`; whether there was any.
fn drain(fd: &OwnedFd) -> bool {
    let mut any = false;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a local buffer of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return any;
        }
        any = true;
    }
}

/// Waits up to `timeout_ms` for an event on `fd`, then reads every event
/// queued; whether there was any.
pub(crate) fn wait(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut p, 1, timeout_ms) } > 0;
    ready && drain(fd)
}
