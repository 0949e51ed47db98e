//! Attaching one program to many targets, each with its cookie, through the best
//! mechanism the running kernel has.
//!
//! | tier | kernel | how | cookies |
//! | --- | --- | --- | --- |
//! | [`Tier::Multi`] | 6.6+ | one uprobe_multi link per binary | `cookies[]` |
//! | [`Tier::PerfLink`] | 5.15+ | a uprobe perf event + perf link per target | `bpf_cookie` |
//! | [`Tier::Emulated`] | 4.17+ | a uprobe perf event + `PERF_EVENT_IOC_SET_BPF` per target | baked in: one program per distinct cookie |
//! | [`Tier::Tracefs`] | any | a `uprobe_events` entry + tracepoint perf event per target | as emulated |
//!
//! The plan is chosen before loading: the kernel's cookie helper differs per link
//! type and a multi program must declare its attach type.

mod detach;
mod multi;
mod perf_event;
mod tracefs;

pub use detach::DetachHandle;
pub use tracefs::remove_stale_entries as remove_stale_tracefs_entries;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::features::{Feature, Features};
use crate::programs::{LoadedProgram, ProgramError, UProbe};
use crate::sys::SyscallError;
use crate::target::ResolvedTarget;

/// An attach mechanism, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// `BPF_TRACE_UPROBE_MULTI` link per binary, native cookies (Linux 6.6+).
    Multi,
    /// Perf event + `BPF_LINK_CREATE(BPF_PERF_EVENT)` per target, native cookies
    /// (Linux 5.15+).
    PerfLink,
    /// Perf event + `PERF_EVENT_IOC_SET_BPF` per target; the cookie is baked into a
    /// copy of the program per distinct cookie (Linux 4.17+).
    Emulated,
    /// tracefs `uprobe_events` entry + tracepoint perf event per target, cookies as
    /// in `Emulated` (any kernel with tracefs).
    Tracefs,
}

impl Tier {
    /// Every tier, in order of preference.
    pub const ALL: [Tier; 4] = [Tier::Multi, Tier::PerfLink, Tier::Emulated, Tier::Tracefs];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Multi => "multi",
            Tier::PerfLink => "perf-link",
            Tier::Emulated => "emulated",
            Tier::Tracefs => "tracefs",
        }
    }

    /// Parses a name of [`Tier::name`].
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the kernel supplies the cookie (no program copies).
    pub fn native_cookies(self) -> bool {
        matches!(self, Tier::Multi | Tier::PerfLink)
    }

    /// One kernel object per target (and a slow, serialised detach each).
    pub fn per_target(self) -> bool {
        self != Tier::Multi
    }

    fn uses_pmu(self) -> bool {
        matches!(self, Tier::PerfLink | Tier::Emulated)
    }

    /// The features the tier needs for this scope.
    pub fn requires(self, scope: Scope) -> Vec<Feature> {
        match self {
            // The multi link's cookies are read through the same helper.
            Tier::Multi => match scope {
                Scope::AllProcesses => vec![Feature::UprobeMulti, Feature::BpfCookie],
                Scope::Process(_) => vec![Feature::UprobeMulti, Feature::UprobeMultiPidFilter, Feature::BpfCookie],
            },
            Tier::PerfLink => vec![
                Feature::UprobePmu,
                Feature::PmuPermitted,
                Feature::PerfLink,
                Feature::BpfCookie,
            ],
            Tier::Emulated => vec![Feature::UprobePmu, Feature::PmuPermitted],
            Tier::Tracefs => vec![Feature::Tracefs],
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which processes the probes fire in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every process that maps the binary.
    #[default]
    AllProcesses,
    /// Only this process (thread group id).
    Process(u32),
}

impl Scope {
    fn pid(self) -> Option<u32> {
        match self {
            Scope::AllProcesses => None,
            Scope::Process(p) => Some(p),
        }
    }
}

/// How to attach. The default: all processes, best tier, emulation allowed.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Which processes.
    pub scope: Scope,
    /// Use exactly this tier (no fallback); `None` picks the best that works.
    pub tier: Option<Tier>,
    /// Refuse tiers that emulate cookies (fail rather than load a program copy per
    /// cookie).
    pub require_native_cookies: bool,
    /// Features to treat as absent for this attach (on top of
    /// `SONDE_DISABLE_FEATURES`).
    pub disabled_features: Vec<Feature>,
}

impl AttachOptions {
    /// Only in process `pid`.
    pub fn pid(mut self, pid: u32) -> Self {
        self.scope = Scope::Process(pid);
        self
    }

    /// Pin a tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Treat `feature` as absent.
    pub fn disable(mut self, feature: Feature) -> Self {
        self.disabled_features.push(feature);
        self
    }

    /// Fail rather than emulate cookies.
    pub fn native_cookies_only(mut self) -> Self {
        self.require_native_cookies = true;
        self
    }

    fn features(&self) -> Features {
        Features::current().without(&self.disabled_features)
    }
}

/// Detaching one per-target perf-event uprobe takes about this long on recent
/// kernels (an RCU-tasks-trace grace period under a global mutex; measured 108 ms
/// on 6.18). Used for the up-front estimate.
pub const PER_TARGET_DETACH_COST: Duration = Duration::from_millis(108);

/// What an attach will do, decided before anything is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachPlan {
    /// The tier chosen.
    pub tier: Tier,
    /// Why: the tiers passed over and what each lacked.
    pub passed_over: Vec<String>,
    /// Targets.
    pub targets: usize,
    /// Distinct binaries (one multi link each).
    pub binaries: usize,
    /// Program loads the plan needs (one, or one per distinct cookie when emulated).
    pub program_loads: usize,
    /// Upper estimate of the time detaching will block (per-target tiers).
    pub detach_estimate: Duration,
    /// File descriptors the attachment holds: programs, links, perf events.
    pub descriptors: u64,
}

impl fmt::Display for AttachPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tier {}: {} target(s) in {} binar{}, {} program load(s)",
            self.tier,
            self.targets,
            self.binaries,
            if self.binaries == 1 { "y" } else { "ies" },
            self.program_loads
        )?;
        if self.tier.per_target() && self.detach_estimate >= Duration::from_secs(1) {
            write!(
                f,
                "; detaching will take about {:.0?} (use Attachment::detach_in_background)",
                self.detach_estimate
            )?;
        }
        for p in &self.passed_over {
            write!(f, "; {p}")?;
        }
        Ok(())
    }
}

/// Why an attach failed. Nothing stays attached after any of these.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No tier fits the kernel and the options.
    #[error("no attach mechanism fits: {}", .reasons.join("; "))]
    NoTier {
        /// Each tier and what it lacked.
        reasons: Vec<String>,
    },
    /// No targets were given.
    #[error("nothing to attach to: the target list is empty")]
    NoTargets,
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
    /// Loading the program failed.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The process to trace is not a user-space process (pid 0, a kernel
    /// thread, gone).
    #[error(transparent)]
    Process(#[from] crate::ProcessError),
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
    /// A permission refusal from the uprobe PMU (try a tier that avoids it).
    fn is_pmu_permission(&self) -> bool {
        match self {
            AttachError::Syscall { source, .. } | AttachError::Target { source, .. } => {
                source.is_permission() && source.call.starts_with("perf_event_open(uprobe)")
            }
            _ => false,
        }
    }
}

/// Names a target in errors: `path:0xoffset (symbol)`.
pub(crate) fn describe(t: &ResolvedTarget) -> String {
    match &t.symbol {
        Some(s) => format!("{}:{:#x} ({s})", t.path.display(), t.offset),
        None => format!("{}:{:#x}", t.path.display(), t.offset),
    }
}

/// Classifies a per-target failure: argument errors name the target.
pub(crate) fn target_error(
    tier: Tier,
    t: &ResolvedTarget,
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
                limit: crate::sys::raise_nofile(0),
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

/// One kernel attachment; dropping it detaches (fields drop in order). Most fields
/// are only held for their Drop.
#[derive(Debug)]
#[allow(clippy::enum_variant_names, dead_code)]
pub(crate) enum Link {
    /// A uprobe_multi link (all targets of one binary).
    Multi { link: std::os::fd::OwnedFd },
    /// A perf link, then the perf event it holds (the event is held for its Drop).
    PerfLink {
        link: std::os::fd::OwnedFd,
        perf: std::os::fd::OwnedFd,
    },
    /// A perf event with the program set by ioctl.
    Perf { perf: std::os::fd::OwnedFd },
    /// A tracepoint perf event, then its tracefs entry (both held for their Drop).
    Tracefs {
        perf: std::os::fd::OwnedFd,
        entry: tracefs::TracefsEntry,
    },
}

/// A program attached to its targets. Dropping it detaches everything.
///
/// Per-target tiers detach slowly on recent kernels (about 108 ms per target,
/// serialised in the kernel): [`Attachment::detach_in_background`] keeps that off
/// the caller's thread.
#[derive(Debug)]
pub struct Attachment {
    tier: Tier,
    plan: AttachPlan,
    targets: Vec<ResolvedTarget>,
    programs: Vec<Arc<LoadedProgram>>,
    links: Vec<Link>,
}

impl Attachment {
    /// The tier that ran.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The plan it followed (after any fallback).
    pub fn plan(&self) -> &AttachPlan {
        &self.plan
    }

    /// The targets attached, with their cookies.
    pub fn targets(&self) -> &[ResolvedTarget] {
        &self.targets
    }

    /// The program variants in use.
    pub fn programs(&self) -> &[Arc<LoadedProgram>] {
        &self.programs
    }

    /// Kernel ids of the BPF links held (multi and perf-link tiers; the other tiers
    /// use no link objects).
    pub fn link_ids(&self) -> Vec<u32> {
        use std::os::fd::AsFd;
        self.links
            .iter()
            .filter_map(|l| match l {
                Link::Multi { link } | Link::PerfLink { link, .. } => {
                    crate::sys::bpf::link_info(link.as_fd()).ok().map(|i| i.id)
                }
                _ => None,
            })
            .collect()
    }

    /// Names of the tracefs `uprobe_events` entries held (`sonde/sonde_<pid>_<start>_<n>`;
    /// tracefs tier only).
    pub fn tracefs_events(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| match l {
                Link::Tracefs { entry, .. } => Some(entry.event_name()),
                _ => None,
            })
            .collect()
    }

    /// Kernel objects held: links plus perf events.
    pub fn kernel_objects(&self) -> usize {
        self.links
            .iter()
            .map(|l| match l {
                Link::Multi { .. } | Link::Perf { .. } => 1,
                Link::PerfLink { .. } | Link::Tracefs { .. } => 2,
            })
            .sum()
    }

    /// Detaches now, blocking until the kernel is done.
    pub fn detach(self) {
        drop(self);
    }

    /// Detaches on a background thread; the returned handle can wait for it, or
    /// hand what remains to a child process ([`DetachHandle::hand_off`]).
    pub fn detach_in_background(self) -> DetachHandle {
        DetachHandle::start(self)
    }
}

/// Picks the tier: the first one the options allow and the kernel supports.
fn choose(options: &AttachOptions, features: &Features, skip_pmu: bool) -> Result<(Tier, Vec<String>), AttachError> {
    let candidates: Vec<Tier> = match options.tier {
        Some(t) => vec![t],
        None => Tier::ALL.to_vec(),
    };
    let mut passed_over = Vec::new();
    for t in candidates {
        if options.require_native_cookies && !t.native_cookies() {
            passed_over.push(format!("{t}: emulates cookies, refused by require_native_cookies"));
            continue;
        }
        if skip_pmu && t.uses_pmu() {
            passed_over.push(format!("{t}: the uprobe PMU refused permission (EPERM/EACCES)"));
            continue;
        }
        let missing: Vec<String> = t
            .requires(options.scope)
            .into_iter()
            .filter(|f| !features.has(*f))
            .map(|f| match (features.disabled().contains(&f), f.since()) {
                (true, _) => format!("{f} (disabled)"),
                (false, Some((a, b))) => format!("{f} (Linux {a}.{b}+)"),
                (false, None) => f.to_string(),
            })
            .collect();
        if missing.is_empty() {
            return Ok((t, passed_over));
        }
        passed_over.push(format!("{t}: needs {}", missing.join(", ")));
    }
    Err(AttachError::NoTier { reasons: passed_over })
}

fn make_plan(probe: &UProbe, targets: &[ResolvedTarget], tier: Tier, passed_over: Vec<String>) -> AttachPlan {
    let mut binaries: Vec<(u64, u64)> = targets.iter().map(|t| t.binary.inode()).collect();
    binaries.sort_unstable();
    binaries.dedup();
    let program_loads = if tier.native_cookies() || !probe.reads_cookie() {
        1
    } else {
        let mut cookies: Vec<u64> = targets.iter().map(|t| t.cookie).collect();
        cookies.sort_unstable();
        cookies.dedup();
        cookies.len()
    };
    let per_target = match tier {
        Tier::Multi => 0,
        Tier::PerfLink => 2,
        Tier::Emulated | Tier::Tracefs => 1,
    };
    let links = if tier == Tier::Multi { binaries.len() } else { 0 };
    let descriptors = (program_loads + links + per_target * targets.len()) as u64;
    let detach_estimate = if tier.per_target() {
        PER_TARGET_DETACH_COST * targets.len() as u32
    } else {
        Duration::from_millis(5) * binaries.len() as u32
    };
    AttachPlan {
        tier,
        passed_over,
        targets: targets.len(),
        binaries: binaries.len(),
        program_loads,
        detach_estimate,
        descriptors,
    }
}

pub(crate) fn plan(
    probe: &UProbe,
    targets: &[ResolvedTarget],
    options: &AttachOptions,
) -> Result<AttachPlan, AttachError> {
    let (tier, passed_over) = choose(options, &options.features(), false)?;
    Ok(make_plan(probe, targets, tier, passed_over))
}

pub(crate) fn attach(
    probe: &mut UProbe,
    targets: Vec<ResolvedTarget>,
    options: &AttachOptions,
) -> Result<Attachment, AttachError> {
    if targets.is_empty() {
        return Err(AttachError::NoTargets);
    }
    if let Scope::Process(pid) = options.scope {
        crate::process::check(u64::from(pid))?;
    }
    let features = options.features();
    let mut skip_pmu = false;
    loop {
        let (tier, passed_over) = choose(options, &features, skip_pmu)?;
        let plan = make_plan(probe, &targets, tier, passed_over);
        if tier.per_target() && plan.detach_estimate >= Duration::from_secs(1) {
            log::warn!("{plan}");
        }
        // Room for every descriptor first: a limit hit half-way would look like a
        // verifier or attach failure.
        crate::sys::reserve_fds(plan.descriptors).map_err(|hard_limit| AttachError::FileLimit {
            tier,
            targets: targets.len(),
            needed: plan.descriptors,
            hard_limit,
        })?;
        let result = match tier {
            Tier::Multi => multi::attach(probe, &targets, options.scope),
            Tier::PerfLink | Tier::Emulated => perf_event::attach(probe, &targets, options.scope, tier, &features),
            Tier::Tracefs => tracefs::attach(probe, &targets, options.scope),
        };
        match result {
            Ok((programs, links)) => {
                return Ok(Attachment {
                    tier,
                    plan,
                    targets,
                    programs,
                    links,
                })
            }
            Err(e) if e.is_pmu_permission() && options.tier.is_none() && !skip_pmu => {
                log::info!("{tier}: {e}; trying a tier without the uprobe PMU");
                skip_pmu = true;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The program variant a per-target tier needs for one cookie.
pub(crate) fn variant_for(tier: Tier, cookie: u64) -> crate::programs::LoadVariant {
    use crate::programs::LoadVariant;
    match tier {
        Tier::Multi => LoadVariant::Multi,
        Tier::PerfLink => LoadVariant::Native,
        Tier::Emulated | Tier::Tracefs => LoadVariant::Baked(cookie),
    }
}

/// Loads the variants `targets` need, once per distinct variant.
pub(crate) fn load_variants(
    probe: &mut UProbe,
    tier: Tier,
    targets: &[ResolvedTarget],
) -> Result<(Vec<Arc<LoadedProgram>>, Vec<usize>), AttachError> {
    let mut programs: Vec<Arc<LoadedProgram>> = Vec::new();
    let mut index = Vec::with_capacity(targets.len());
    for t in targets {
        let p = probe.load(variant_for(tier, t.cookie))?;
        let i = match programs.iter().position(|q| Arc::ptr_eq(q, &p)) {
            Some(i) => i,
            None => {
                programs.push(p);
                programs.len() - 1
            }
        };
        index.push(i);
    }
    Ok((programs, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_features() -> Features {
        Features::current().clone()
    }

    #[test]
    fn tier_names_round_trip() {
        for t in Tier::ALL {
            assert_eq!(Tier::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn choice_follows_features() {
        let f = all_features();
        let o = AttachOptions::default();
        let pick = |f: &Features, o: &AttachOptions| choose(o, f, false).map(|x| x.0).ok();
        let base = pick(&f, &o);
        if f.has(Feature::UprobeMulti) {
            assert_eq!(base, Some(Tier::Multi));
        }
        let no_multi = f.without(&[Feature::UprobeMulti]);
        if no_multi.has(Feature::PerfLink) && no_multi.has(Feature::BpfCookie) && no_multi.has(Feature::PmuPermitted) {
            assert_eq!(pick(&no_multi, &o), Some(Tier::PerfLink));
        }
        let no_cookie = f.without(&[Feature::UprobeMulti, Feature::BpfCookie]);
        if no_cookie.has(Feature::PmuPermitted) {
            assert_eq!(pick(&no_cookie, &o), Some(Tier::Emulated));
            assert_eq!(pick(&no_cookie, &o.clone().native_cookies_only()), None);
        }
        let nothing = f.without(&Feature::ALL);
        let err = choose(&o, &nothing, false).unwrap_err().to_string();
        assert!(err.contains("multi: needs uprobe_multi (disabled)"), "{err}");
        assert!(err.contains("tracefs: needs tracefs"), "{err}");
    }

    #[test]
    fn pmu_refusal_moves_past_pmu_tiers() {
        let f = all_features().without(&[Feature::UprobeMulti]);
        if f.has(Feature::Tracefs) {
            let (t, why) = choose(&AttachOptions::default(), &f, true).unwrap();
            assert_eq!(t, Tier::Tracefs);
            assert!(why.iter().any(|w| w.contains("refused permission")));
        }
    }
}
