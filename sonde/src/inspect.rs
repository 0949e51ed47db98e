//! What the kernel lists: BPF links and programs system-wide. Tests use it to check
//! that nothing stays attached; tools to show what is.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::{bpf, SysResult, SyscallError};

/// A BPF link as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Link id.
    pub id: u32,
    /// `enum bpf_link_type` (7: perf event, 12: uprobe_multi).
    pub link_type: u32,
    /// The attached program's id.
    pub prog_id: u32,
}

/// Every BPF link in the system.
pub fn links() -> Result<Vec<LinkInfo>, SyscallError> {
    listed(bpf::link_get_next_id, bpf::link_get_fd_by_id, |_, fd| {
        let info = bpf::link_info(fd)?;
        Ok(LinkInfo {
            id: info.id,
            link_type: info.link_type,
            prog_id: info.prog_id,
        })
    })
}

/// Ids of every loaded BPF program in the system.
pub fn program_ids() -> Result<Vec<u32>, SyscallError> {
    listed(bpf::prog_get_next_id, bpf::prog_get_fd_by_id, |id, _| Ok(id))
}

/// The names of every loaded BPF program in the system, by id (the kernel
/// keeps a name's first 15 bytes). Any kernel with BPF (4.15+ for names).
///
/// ```no_run
/// for (id, name) in sonde::inspect::program_names()? {
///     println!("{id} {name}");
/// }
/// # Ok::<(), sonde::sys::SyscallError>(())
/// ```
pub fn program_names() -> Result<Vec<(u32, String)>, SyscallError> {
    listed(bpf::prog_get_next_id, bpf::prog_get_fd_by_id, |id, fd| {
        let info = bpf::prog_info(fd)?;
        let len = info.name.iter().position(|&b| b == 0).unwrap_or(info.name.len());
        Ok((id, String::from_utf8_lossy(&info.name[..len]).into_owned()))
    })
}

/// Every object the kernel lists by id (`next`), opened by `open` and read by
/// `read`; one gone since it was listed is skipped.
fn listed<T>(
    next: fn(u32) -> SysResult<Option<u32>>,
    open: fn(u32) -> SysResult<Option<OwnedFd>>,
    mut read: impl FnMut(u32, BorrowedFd<'_>) -> SysResult<T>,
) -> Result<Vec<T>, SyscallError> {
    let mut out = Vec::new();
    let mut id = 0;
    while let Some(n) = next(id)? {
        id = n;
        if let Some(fd) = open(id)? {
            out.push(read(id, fd.as_fd())?);
        }
    }
    Ok(out)
}

/// Lines of tracefs `uprobe_events` (empty if tracefs is not mounted).
pub fn tracefs_uprobes() -> Vec<String> {
    crate::sys::tracefs::root()
        .and_then(|r| crate::sys::tracefs::list_uprobe_events(r).ok())
        .unwrap_or_default()
}
