//! Files opened inside another process's root (a container's) with
//! `openat2(RESOLVE_IN_ROOT)` (Linux 5.6+): absolute symlinks and `..` resolve
//! against that root, never against the host's.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{cvt, run, Call, SysResult};

/// Opens `relative` read-only (and non-blocking: a FIFO never waits) inside the
/// directory `root`, as if `root` were `/`. Magic links (`/proc/*/fd/*`) are
/// not followed. ENOSYS on a kernel without `openat2`: callers refuse rather
/// than resolve outside the root.
pub(crate) fn open_in_root(root: &Path, relative: &Path) -> SysResult<File> {
    run(Call::OpenInRoot, || {
        let dir = File::open(root)?;
        let path = std::ffi::CString::new(relative.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: an all-zero open_how is valid; its fields are set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: a valid directory descriptor, a NUL-terminated path and an
        // open_how of the size passed.
        let fd = cvt(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        })?;
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    })
}
