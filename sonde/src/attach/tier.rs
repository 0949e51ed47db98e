//! The tiers, best first: one row each in [`TIERS`], the mechanism behind it in
//! a file of its own.

use std::fmt;

use super::mechanism::Mechanism;
use super::{emulated, multi, perf_link, tracefs, Scope};
use crate::features::Feature;

/// An attach mechanism, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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

/// Every tier in order of preference: its name and its mechanism. A new tier
/// is a variant above, a row here and a file implementing [`Mechanism`].
pub(crate) const TIERS: [(Tier, &str, &dyn Mechanism); 4] = [
    (Tier::Multi, "multi", &multi::Multi),
    (Tier::PerfLink, "perf-link", &perf_link::PerfLink),
    (Tier::Emulated, "emulated", &emulated::Emulated),
    (Tier::Tracefs, "tracefs", &tracefs::Tracefs),
];

impl Tier {
    /// Every tier, in order of preference.
    pub const ALL: [Tier; TIERS.len()] = {
        let mut all = [Tier::Multi; TIERS.len()];
        let mut i = 0;
        while i < TIERS.len() {
            all[i] = TIERS[i].0;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static (Tier, &'static str, &'static dyn Mechanism) {
        // Every variant has its row (`every_tier_has_one_row`).
        TIERS.iter().find(|r| r.0 == self).unwrap_or(&TIERS[0])
    }

    pub(crate) fn mechanism(self) -> &'static dyn Mechanism {
        self.row().2
    }

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Parses a name of [`Tier::name`].
    pub fn from_name(name: &str) -> Option<Tier> {
        TIERS.iter().find(|r| r.1 == name).map(|r| r.0)
    }

    /// Whether the kernel supplies the cookie (no program copies).
    pub fn native_cookies(self) -> bool {
        self.mechanism().native_cookies()
    }

    /// One kernel object per target (and a slow, serialised detach each).
    pub fn per_target(self) -> bool {
        self.mechanism().per_target()
    }

    /// The features the tier needs for probes in `scope` (Linux versions:
    /// [`Feature::since`]).
    ///
    /// ```
    /// use sonde::{Feature, Scope, Tier};
    /// assert!(Tier::Multi.requires(Scope::Process(1)).contains(&Feature::UprobeMultiPidFilter));
    /// assert_eq!(Tier::Tracefs.requires(Scope::AllProcesses), vec![Feature::Tracefs]);
    /// ```
    pub fn requires(self, scope: Scope) -> Vec<Feature> {
        self.mechanism().requires(scope).to_vec()
    }

    /// The kernel's `bpf_link_info.type` of the links the tier makes (`None`:
    /// it makes no BPF links).
    pub fn link_type(self) -> Option<u32> {
        self.mechanism().link_type()
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tier_has_one_row() {
        for (i, t) in Tier::ALL.into_iter().enumerate() {
            assert_eq!(TIERS.iter().filter(|r| r.0 == t).count(), 1);
            assert_eq!(TIERS[i].0, t, "rows in order of preference");
            assert_eq!(Tier::from_name(t.name()), Some(t));
        }
    }
}
