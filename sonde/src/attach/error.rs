//! Why an attach failed, naming the target and the call.

use super::plan::describe_refusals;
use super::{Refusal, Tier};
use crate::programs::ProgramError;
use crate::resolve::ProbeSite;
use crate::sys::{Call, SyscallError};

/// Why an attach failed. Nothing stays attached after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No tier fits the kernel and the options.
    #[error("no attach mechanism fits: {}", describe_refusals(.refusals))]
    NoTier {
        /// Each tier and why it was passed over.
        refusals: Vec<(Tier, Refusal)>,
    },
    /// No targets were given.
    #[error("nothing to attach to: the target list is empty")]
    NoTargets,
    /// A return probe (uretprobe, or a session's return half) asked on a Go
    /// function whose returns sonde cannot probe at its return instructions
    /// (it never puts a uretprobe on Go): refused before anything loads.
    #[error(
        "cannot probe the returns of {function} in the Go program {binary}: {reason}. sonde probes a Go \
         function's return instructions, never its return address (the Go runtime copies and walks goroutine \
         stacks and would die of a rewritten one: `unexpected return pc`). Leave it out, or count its calls \
         (entry probes are safe)"
    )]
    GoReturnProbe {
        /// The Go binary.
        binary: std::path::PathBuf,
        /// The function (or site) refused.
        function: String,
        /// Why its returns cannot be found.
        reason: &'static str,
    },
    /// The kernel refused one target (bad offset, missing file, trap instruction,
    /// unknown pid): not a reason to try another tier.
    #[error("cannot attach to {target}: {source}{hint}")]
    Target {
        /// `path:0xoffset (symbol)`.
        target: String,
        /// The failed call.
        #[source]
        source: SyscallError,
        /// What to do about it.
        hint: &'static str,
    },
    /// Out of file descriptors for per-target probes.
    #[error(
        "out of file descriptors after {attached} of {wanted} probes (RLIMIT_NOFILE {limit}): \
         raise the hard limit (ulimit -Hn) or use a kernel with uprobe_multi (6.6+)"
    )]
    TooManyFiles {
        /// Probes attached before the failure.
        attached: usize,
        /// Probes asked for.
        wanted: usize,
        /// The soft limit in force.
        limit: u64,
    },
    /// The plan needs more descriptors than `RLIMIT_NOFILE`'s hard limit allows;
    /// found before anything was loaded.
    #[error(
        "tier {tier} needs about {needed} file descriptors for {targets} targets, more than \
         RLIMIT_NOFILE's hard limit ({hard_limit}) allows: raise it (`ulimit -Hn`, `LimitNOFILE=` in a \
         systemd unit), attach fewer functions, or use a kernel with uprobe_multi (6.6+)"
    )]
    FileLimit {
        /// The tier planned.
        tier: Tier,
        /// Targets.
        targets: usize,
        /// Descriptors the plan needs.
        needed: u64,
        /// The hard limit.
        hard_limit: u64,
    },
    /// A target did not resolve (nothing was loaded or attached).
    #[error(transparent)]
    Resolve(#[from] crate::resolve::TargetError),
    /// Loading the program failed.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The process to trace is not a user-space process (pid 0, a kernel
    /// thread, gone).
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// Another kernel call failed.
    #[error("{tier} attach failed: {source}")]
    Syscall {
        /// The tier being tried.
        tier: Tier,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
}

impl AttachError {
    /// `tier` found `feature` missing when it ran (the kernel lacks it).
    pub(crate) fn missing(tier: Tier, feature: crate::features::Feature) -> AttachError {
        AttachError::NoTier {
            refusals: vec![(tier, Refusal::Missing(vec![(feature, false)]))],
        }
    }

    /// A permission refusal from the uprobe PMU (try a tier that avoids it).
    pub(crate) fn is_pmu_permission(&self) -> bool {
        match self {
            AttachError::Syscall { source, .. } | AttachError::Target { source, .. } => {
                source.is_permission() && source.call == Call::PerfEventOpen
            }
            _ => false,
        }
    }
}

/// Names a target in errors: `path:0xoffset (symbol)`.
pub(crate) fn describe(t: &ProbeSite) -> String {
    match &t.symbol {
        Some(s) => format!("{}:{:#x} ({s})", t.path().display(), t.offset),
        None => format!("{}:{:#x}", t.path().display(), t.offset),
    }
}

/// Classifies a per-target failure: argument errors name the target.
pub(crate) fn target_error(
    tier: Tier,
    t: &ProbeSite,
    source: SyscallError,
    attached: usize,
    wanted: usize,
) -> AttachError {
    const ENOTSUPP: i32 = 524;
    let hint = match source.errno() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            return AttachError::TooManyFiles {
                attached,
                wanted,
                limit: crate::sys::fd_soft_limit(),
            }
        }
        Some(libc::ENOENT) => " (the file is gone: check the path)",
        Some(ENOTSUPP) => " (the instruction at this offset cannot be probed: pick another offset)",
        Some(libc::EILSEQ) | Some(libc::EINVAL) => " (is the offset on an instruction boundary inside the file?)",
        Some(libc::ESRCH) => " (no such process)",
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs root or CAP_SYS_ADMIN)",
        _ => return AttachError::Syscall { tier, source },
    };
    AttachError::Target {
        target: describe(t),
        source,
        hint,
    }
}
