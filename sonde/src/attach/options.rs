//! Which processes, and the options that steer the choice of tier.

use super::Tier;
use crate::features::{Feature, Features};

/// Which processes the probes fire in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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
/// Built from [`AttachOptions::default`] and its methods (fields may be added).
///
/// ```
/// use sonde::{AttachOptions, Feature, Tier};
/// let options = AttachOptions::default().pid(1234).disable(Feature::UprobeMulti);
/// assert_eq!(options.tier, None);
/// let pinned = AttachOptions::default().tier(Tier::PerfLink).native_cookies_only();
/// assert!(pinned.require_native_cookies);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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

    /// In these processes.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
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

    /// The running kernel's features less those these options disable (no
    /// copy when they disable none).
    pub(crate) fn features(&self) -> std::borrow::Cow<'static, Features> {
        let current = Features::current();
        if self.disabled_features.is_empty() {
            std::borrow::Cow::Borrowed(current)
        } else {
            std::borrow::Cow::Owned(current.without(&self.disabled_features))
        }
    }
}
