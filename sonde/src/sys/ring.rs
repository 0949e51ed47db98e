//! What a ring-buffer consumer needs from the kernel: shared mappings of the
//! map's pages, and an epoll descriptor that wakes when records arrive.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{run, Call, SysResult};

/// A shared memory mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, read-only or read-write.
    pub(crate) fn shared(fd: BorrowedFd<'_>, len: usize, offset: usize, writable: bool) -> SysResult<Mapping> {
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        run(Call::Mmap, || {
            // SAFETY: a fresh shared mapping of a descriptor we borrow; the
            // result is checked before use.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if ptr == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(Mapping { ptr, len })
            }
        })
    }

    /// The first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are a live mapping we own.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// An epoll instance watching one descriptor for input.
pub(crate) fn epoll_watching(fd: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    run(Call::Epoll, || {
        // SAFETY: plain syscall; the returned fd is checked, then owned.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        add(epoll.as_fd(), fd)?;
        Ok(epoll)
    })
}

/// Also wakes `epoll` when `fd` becomes readable (a process's pidfd: at its exit).
pub(crate) fn epoll_add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> SysResult<()> {
    run(Call::Epoll, || add(epoll, fd))
}

fn add(epoll: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 0,
    };
    // SAFETY: valid descriptors and event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits on `epoll` up to `timeout` (`None`: forever); whether it signalled. An
/// interrupted wait is `Ok(false)`.
pub(crate) fn epoll_wait(epoll: BorrowedFd<'_>, timeout: Option<Duration>) -> SysResult<bool> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    run(Call::Epoll, || {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one event slot.
        let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut ev, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(n > 0)
    })
}
