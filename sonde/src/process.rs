//! Processes named by pid, checked before anything attaches: pid 0 means "every
//! process" to the uprobe_multi link and a kernel thread runs no user code, so
//! either would trace something other than what was asked.

use std::path::Path;

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags (`include/linux/sched.h`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// The largest pid Linux can give out (`PID_MAX_LIMIT` on 64-bit, 2^22).
pub const PID_MAX_LIMIT: u32 = 4_194_304;

/// Why a pid cannot be traced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Pid 0 (the multi link would read it as "all processes").
    #[error("pid 0 is not a process (pids start at 1): leave the pid out to trace every process")]
    Zero,
    /// Larger than any pid Linux gives out.
    #[error("pid {0} is out of range (Linux pids are at most {PID_MAX_LIMIT})")]
    OutOfRange(u64),
    /// No such process (or it exited).
    #[error("no process {0}: check the pid (`ps -p {0}`)")]
    NoSuchProcess(u32),
    /// A kernel thread: no user-space code to probe.
    #[error("pid {pid} is the kernel thread `{name}`, which runs no user-space code: give the pid of a user process")]
    KernelThread {
        /// The pid.
        pid: u32,
        /// Its name.
        name: String,
    },
}

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessStat {
    /// The command name (`comm`).
    pub name: String,
    /// The parent's pid (field 4).
    pub ppid: u32,
    /// `flags` (field 9).
    pub flags: u64,
    /// Start time in clock ticks after boot (field 22): with the pid, it names
    /// one process even after the pid is reused.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; `None` if there is no such process.
pub fn stat(pid: u32) -> Option<ProcessStat> {
    parse_stat(&std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?)
}

fn parse_stat(text: &str) -> Option<ProcessStat> {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so the
    // fields start after the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(ProcessStat {
        name,
        ppid: fields.get(1)?.parse().ok()?,
        flags: fields.get(6)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The live descendants of `pid` (children, their children, ...), from
/// `/proc/*/stat`: a snapshot, so take it after whatever follows new children
/// is in place.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat(p)?.ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == parent && child != pid && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// Checks that `pid` names a live user-space process.
pub fn check(pid: u64) -> Result<u32, ProcessError> {
    if pid == 0 {
        return Err(ProcessError::Zero);
    }
    let pid = u32::try_from(pid)
        .ok()
        .filter(|&p| p <= PID_MAX_LIMIT)
        .ok_or(ProcessError::OutOfRange(pid))?;
    let stat = stat(pid).ok_or(ProcessError::NoSuchProcess(pid))?;
    if stat.flags & PF_KTHREAD != 0 {
        return Err(ProcessError::KernelThread { pid, name: stat.name });
    }
    Ok(pid)
}

/// The start time of this process (see [`ProcessStat::start_time`]).
pub fn own_start_time() -> u64 {
    stat(std::process::id()).map_or(0, |s| s.start_time)
}

/// Reads up to `len` bytes at `addr` in process `pid` from outside it
/// (`process_vm_readv`: pages it has not touched yet are faulted in, which a
/// BPF program's read cannot do). Fewer bytes when the mapping ends first.
///
/// Kernel: 3.2+; needs the right to trace the process (root, or the same user
/// under the Yama scope).
pub fn read_memory(pid: u32, addr: u64, len: usize) -> Result<Vec<u8>, crate::sys::SyscallError> {
    let mut buf = vec![0u8; len];
    let n = crate::sys::procmem::read(pid, addr, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        let s = parse_stat("42 (a b) c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0").unwrap();
        assert_eq!(s.name, "a b) c)");
        assert_eq!(s.flags, 4194560);
        assert_eq!(s.start_time, 777);
    }

    #[test]
    fn pids_that_name_no_user_process() {
        assert_eq!(check(0), Err(ProcessError::Zero));
        assert_eq!(
            check(u64::from(u32::MAX)),
            Err(ProcessError::OutOfRange(u64::from(u32::MAX)))
        );
        assert!(
            matches!(check(2), Err(ProcessError::KernelThread { pid: 2, .. })),
            "kthreadd"
        );
        assert_eq!(check(u64::from(std::process::id())), Ok(std::process::id()));
        assert!(own_start_time() > 0);
    }
}
