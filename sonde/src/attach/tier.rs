//! The attach mechanisms, what each needs, and the options that steer the choice.

use std::fmt;

use crate::features::{Feature, Features};
use crate::spec::ProbeKind;

/// An attach mechanism, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// `BPF_TRACE_UPROBE_MULTI` link per binary, native cookies (Linux 6.6+).
    Multi,
    /// Perf event + `BPF_LINK_CREATE(BPF_PERF_EVENT)` per target, native cookies
    /// (Linux 5.15+).
    PerfLink,
    /// Perf event + `PERF_EVENT_IOC_SET_BPF` per target; the cookie is emulated by
    /// a copy of the program per distinct cookie (Linux 4.17+).
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

    pub(crate) fn uses_pmu(self) -> bool {
        matches!(self, Tier::PerfLink | Tier::Emulated)
    }

    /// Whether the tier can attach programs of this kind at all: every tier can
    /// (session programs are emulated where the kernel has no session link).
    pub fn supports(self, _kind: ProbeKind) -> bool {
        true
    }

    /// The features the tier needs for this kind of probe and scope.
    pub fn requires(self, kind: ProbeKind, scope: Scope) -> Vec<Feature> {
        let need = match self {
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
        };
        let _ = kind;
        need
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
    pub(crate) fn pid(self) -> Option<u32> {
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

    pub(crate) fn features(&self) -> Features {
        Features::current().without(&self.disabled_features)
    }
}
