//! `process_vm_readv(2)`: another process's memory, read from outside (and
//! faulted in, unlike a BPF program's read).

use std::io;

use super::{run, Call, SysResult};

/// Reads up to `buf.len()` bytes at `addr` in process `pid`; returns how many.
pub(crate) fn read(pid: u32, addr: u64, buf: &mut [u8]) -> SysResult<usize> {
    run(Call::ProcessVmReadv, || {
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: one local iovec over `buf`, one remote iovec the kernel checks.
        let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}
