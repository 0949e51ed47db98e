//! Loading programs: the same instructions may be loaded several times, once per
//! [`Load`] the attach mechanisms need: the attach type it declares (perf event,
//! uprobe_multi, session) and where its cookie comes from (the kernel, or
//! emulated as a constant).

mod cookie;
mod session;
mod tracepoint;
mod uprobe;

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

pub(crate) use cookie::{bake_cookie, uses_cookie};
pub use session::SessionHalf;
pub(crate) use session::{bake_session, session_kfuncs, uses_session_calls};
pub use tracepoint::{TracePoint, TracepointError, TracepointLink};
pub use uprobe::UProbe;

use crate::sys::bpf::{self, ProgLoad};
use crate::sys::SyscallError;
use sonde_abi::Insn;

/// Why a program did not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// The kernel refused the program; `log` is the verifier's output.
    #[error("the kernel rejected program `{name}` ({source}); verifier log, last lines:\n{}", log_tail(.log, 25))]
    Rejected {
        /// Program name.
        name: String,
        /// The errno of `BPF_PROG_LOAD`.
        #[source]
        source: std::io::Error,
        /// The whole verifier log.
        log: String,
    },
    /// Reading program information failed.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// The object has no program of that name.
    #[error("no program named `{0}` in the object")]
    NotFound(String),
    /// The program could not be linked: the object is malformed where this
    /// program or a function it calls is (programs are linked when first
    /// asked for, [`crate::Object::uprobe`]).
    #[error(transparent)]
    Link(#[from] crate::object_file::SpecError),
    /// A map the program uses could not be created (maps are created when
    /// the first program that uses them loads).
    #[error(transparent)]
    Map(#[from] crate::maps::MapError),
    /// A native session load needs kernel functions this kernel's BTF lacks.
    #[error("session program `{name}` cannot load natively: {reason}; attach it with the uprobe_session feature disabled to emulate the session")]
    Kfunc {
        /// Program name.
        name: String,
        /// What is missing.
        reason: String,
    },
}

fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The kind of attachment a program is loaded for: the kernel implements
/// `bpf_get_attach_cookie` per link type, and a multi program must declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachType {
    /// A perf event (uprobe PMU or tracefs): perf link or `PERF_EVENT_IOC_SET_BPF`.
    PerfEvent,
    /// `expected_attach_type = BPF_TRACE_UPROBE_MULTI` (6.6+).
    UprobeMulti,
    /// `expected_attach_type = BPF_TRACE_UPROBE_SESSION` (6.13+).
    UprobeSession,
    /// A tracepoint program (`BPF_PROG_TYPE_TRACEPOINT`, 4.7+) on a tracepoint's
    /// perf event: [`TracePoint`].
    Tracepoint,
}

impl AttachType {
    fn expected_attach_type(self) -> u32 {
        use sonde_abi::program::{BPF_TRACE_UPROBE_MULTI, BPF_TRACE_UPROBE_SESSION};
        match self {
            AttachType::PerfEvent | AttachType::Tracepoint => 0,
            AttachType::UprobeMulti => BPF_TRACE_UPROBE_MULTI,
            AttachType::UprobeSession => BPF_TRACE_UPROBE_SESSION,
        }
    }
}

/// Where a program's cookie reads get their value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cookie {
    /// From the kernel: the attachment's cookie (5.15+), or unread.
    Native,
    /// Emulated: every `bpf_get_attach_cookie` call replaced by this constant
    /// (the `emulated` and `tracefs` tiers, kernels without cookies).
    Emulated(u64),
}

/// How a program is loaded: the attach type it declares, where its cookie
/// comes from and, for an emulated session, which half it is. One loaded
/// program per distinct `Load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Load {
    /// The attachment kind.
    pub attach_type: AttachType,
    /// The cookie source.
    pub cookie: Cookie,
    /// For a session program not loaded as a native session: the half this copy
    /// serves (`None` otherwise).
    pub session: Option<SessionHalf>,
    /// For a session half at a Go function (its entry, or a return
    /// instruction): the call is found again by goroutine frame (`g` and its
    /// depth in the goroutine's stack), not by thread.
    pub go_frames: bool,
}

impl Load {
    /// A load of `attach_type` with cookies from `cookie`, not a session half.
    pub const fn new(attach_type: AttachType, cookie: Cookie) -> Load {
        Load {
            attach_type,
            cookie,
            session: None,
            go_frames: false,
        }
    }
}

/// A program loaded in the kernel. Dropping the last handle (and every link using
/// it) unloads it.
#[derive(Debug)]
pub struct LoadedProgram {
    fd: OwnedFd,
    name: String,
    load: Load,
    load_time: Duration,
    stats_log: String,
}

impl AsFd for LoadedProgram {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What the kernel reports of a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramInfo {
    /// Kernel program id.
    pub id: u32,
    /// Name as the kernel keeps it (15 bytes at most).
    pub name: String,
    /// Instructions the verifier processed (5.16+ from program info; on older
    /// kernels from the verifier's statistics line; 0 if neither).
    pub verified_insns: u32,
    /// Instructions after the kernel's rewrites (`xlated_prog_len / 8`).
    pub xlated_insns: u32,
    /// Times the program ran (only while BPF statistics are enabled).
    pub run_count: u64,
    /// Total run time in ns (only while BPF statistics are enabled).
    pub run_time_ns: u64,
    /// Kernel memory charged to the program (`memlock` of its fdinfo), bytes.
    pub memlock: u64,
    /// Runs the kernel skipped because a BPF program or a BPF map syscall
    /// already held this CPU (`recursion_misses`). Uprobe programs on the
    /// perf-event path (perf-link, emulated and tracefs tiers) are counted from
    /// Linux 6.7; older kernels skip such hits without counting them. The
    /// uprobe_multi path (6.6+) never skips them. See [`crate::Job::skipped_hits`].
    pub missed: u64,
}

impl LoadedProgram {
    /// Loads `insns` as a uprobe (kprobe-type) or tracepoint program.
    pub(crate) fn load(name: &str, insns: &[Insn], license: &CString, load: Load) -> Result<Self, ProgramError> {
        let expected_attach_type = load.attach_type.expected_attach_type();
        let req = ProgLoad {
            prog_type: match load.attach_type {
                AttachType::Tracepoint => sonde_abi::program::BPF_PROG_TYPE_TRACEPOINT,
                _ => bpf::BPF_PROG_TYPE_KPROBE,
            },
            expected_attach_type,
            insns,
            license,
            name,
        };
        // Level 4 (BPF_LOG_STATS, 5.2+) keeps the cheap statistics line even on
        // success; only a rejected program is loaded again for the full log.
        let mut stats = vec![0u8; 4096];
        let start = Instant::now();
        match bpf::prog_load(&req, 4, &mut stats) {
            Ok(fd) => Ok(LoadedProgram {
                fd,
                name: name.to_string(),
                load,
                load_time: start.elapsed(),
                stats_log: c_text(&stats),
            }),
            Err(_) => {
                let mut log = vec![0u8; 16 << 20];
                let source = match bpf::prog_load(&req, 1 | 4, &mut log) {
                    Err(e) => e,
                    // Loaded the second time (a transient failure): keep it.
                    Ok(fd) => {
                        return Ok(LoadedProgram {
                            fd,
                            name: name.to_string(),
                            load,
                            load_time: start.elapsed(),
                            stats_log: c_text(&log),
                        })
                    }
                };
                Err(ProgramError::Rejected {
                    name: name.to_string(),
                    source,
                    log: c_text(&log),
                })
            }
        }
    }

    /// The program's name in the object.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it was loaded.
    pub fn load_kind(&self) -> Load {
        self.load
    }

    /// Wall time of the `BPF_PROG_LOAD` call (verification included).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// The verifier's statistics for this load (`processed N insns ...`).
    pub fn verifier_stats(&self) -> &str {
        &self.stats_log
    }

    /// The kernel's view of the program.
    pub fn info(&self) -> Result<ProgramInfo, ProgramError> {
        let info = bpf::prog_info(self.fd.as_fd())?;
        let verified = if info.verified_insns > 0 {
            info.verified_insns
        } else {
            parse_processed(&self.stats_log).unwrap_or(0)
        };
        let name_len = info.name.iter().position(|&b| b == 0).unwrap_or(16);
        Ok(ProgramInfo {
            id: info.id,
            name: String::from_utf8_lossy(&info.name[..name_len]).into_owned(),
            verified_insns: verified,
            xlated_insns: info.xlated_prog_len / 8,
            run_count: info.run_cnt,
            run_time_ns: info.run_time_ns,
            memlock: fdinfo_memlock(self.fd.as_fd()).unwrap_or(0),
            missed: info.recursion_misses,
        })
    }
}

fn c_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `processed N insns` from the verifier's statistics.
fn parse_processed(log: &str) -> Option<u32> {
    let rest = log.split("processed ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The `memlock:` line of a BPF object's `/proc/self/fdinfo` entry.
pub(crate) fn fdinfo_memlock(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Turns on the kernel's BPF run-time statistics while the guard lives (5.8+).
/// [`ProgramInfo::run_count`] and [`ProgramInfo::run_time_ns`] count only meanwhile.
pub struct StatsGuard(#[allow(dead_code)] OwnedFd);

/// Enables BPF run-time statistics (`BPF_ENABLE_STATS`, 5.8+).
pub fn enable_stats() -> Result<StatsGuard, SyscallError> {
    bpf::enable_stats().map(StatsGuard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_count() {
        let log = "verification time 12 usec\nstack depth 8\nprocessed 23 insns (limit 1000000) max_states_per_insn 0";
        assert_eq!(parse_processed(log), Some(23));
        assert_eq!(parse_processed("nothing"), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(log_tail("a\nb\nc", 2), "b\nc");
        assert_eq!(log_tail("a", 5), "a");
    }
}
