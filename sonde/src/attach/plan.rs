//! The attach plan: which tier, why the better ones were passed over, and what
//! the attachment will cost, decided before anything is loaded.

use std::fmt;
use std::time::Duration;

use super::mechanism::passes;
use super::{AttachError, AttachOptions, SessionMode, Tier};
use crate::features::{Feature, Features};
use crate::object_file::ProbeKind;
use crate::programs::UProbe;
use crate::resolve::ProbeSite;

/// Detaching one per-target perf-event uprobe takes about this long on recent
/// kernels (an RCU-tasks-trace grace period under a global mutex; measured 108 ms
/// on 6.18). Used for the up-front estimate.
pub const PER_TARGET_DETACH_COST: Duration = Duration::from_millis(108);

/// Why a tier was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Features the kernel lacks; `true` where the feature was disabled on purpose.
    Missing(Vec<(Feature, bool)>),
    /// The tier emulates cookies and the options ask for native ones.
    EmulatesCookies,
    /// The uprobe PMU refused permission (EPERM/EACCES) at attach time.
    PmuPermission,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing(features) => {
                let list: Vec<String> = features
                    .iter()
                    .map(|(x, disabled)| match (disabled, x.since()) {
                        (true, _) => format!("{x} (disabled)"),
                        (false, Some((a, b))) => format!("{x} (Linux {a}.{b}+)"),
                        (false, None) => x.to_string(),
                    })
                    .collect();
                write!(f, "needs {}", list.join(", "))
            }
            Refusal::EmulatesCookies => f.write_str("emulates cookies, refused by require_native_cookies"),
            Refusal::PmuPermission => f.write_str("the uprobe PMU refused permission (EPERM/EACCES)"),
        }
    }
}

/// `tier: reason; tier: reason`.
pub(crate) fn describe_refusals(refusals: &[(Tier, Refusal)]) -> String {
    let parts: Vec<String> = refusals.iter().map(|(t, r)| format!("{t}: {r}")).collect();
    parts.join("; ")
}

/// What an attach will do, decided before anything is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachPlan {
    /// The tier chosen.
    pub tier: Tier,
    /// Why: the tiers passed over and what each lacked.
    pub passed_over: Vec<(Tier, Refusal)>,
    /// Probe sites.
    pub targets: usize,
    /// Distinct binaries (one multi link each).
    pub binaries: usize,
    /// Program loads the plan needs (one, or one per distinct cookie when emulated).
    pub program_loads: usize,
    /// Upper estimate of the time detaching will block (per-target tiers).
    pub detach_estimate: Duration,
    /// File descriptors the attachment holds: programs, links, perf events.
    pub descriptors: u64,
    /// For a session program: native, or emulated by an entry and a return copy.
    pub session: Option<SessionMode>,
    /// USDT sites probed on the 5-byte nop after their 1-byte nop, which the
    /// kernel turns into a call with no trap ([`Feature::UprobeNop5`], 6.18+).
    pub on_nop5: usize,
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
        if let Some(mode) = self.session {
            write!(f, ", {}", mode.name())?;
        }
        if self.on_nop5 > 0 {
            write!(f, ", {} USDT site(s) probed on their nop5 (no trap)", self.on_nop5)?;
        }
        if self.tier.per_target() && self.detach_estimate >= Duration::from_secs(1) {
            write!(
                f,
                "; detaching will take about {:.0?} (use Attachment::detach_in_background)",
                self.detach_estimate
            )?;
        }
        for (t, r) in &self.passed_over {
            write!(f, "; {t}: {r}")?;
        }
        Ok(())
    }
}

/// Picks the tier: the first one the options allow and the kernel supports.
pub(crate) fn choose(
    options: &AttachOptions,
    features: &Features,
    skip_pmu: bool,
) -> Result<(Tier, Vec<(Tier, Refusal)>), AttachError> {
    let candidates: Vec<Tier> = match options.tier {
        Some(t) => vec![t],
        None => Tier::ALL.to_vec(),
    };
    let mut passed_over = Vec::new();
    for t in candidates {
        let mechanism = t.mechanism();
        let refusal = if options.require_native_cookies && !mechanism.native_cookies() {
            Some(Refusal::EmulatesCookies)
        } else if skip_pmu && mechanism.uses_pmu() {
            Some(Refusal::PmuPermission)
        } else {
            let missing: Vec<(Feature, bool)> = mechanism
                .requires(options.scope)
                .into_iter()
                .filter(|f| !features.has(*f))
                .map(|f| (f, features.disabled().contains(&f)))
                .collect();
            (!missing.is_empty()).then_some(Refusal::Missing(missing))
        };
        match refusal {
            None => return Ok((t, passed_over)),
            Some(r) => passed_over.push((t, r)),
        }
    }
    Err(AttachError::NoTier { refusals: passed_over })
}

/// The plan for `probe` on `sites` with `tier`.
pub(crate) fn make(
    probe: &UProbe,
    sites: &[ProbeSite],
    tier: Tier,
    passed_over: Vec<(Tier, Refusal)>,
    features: &Features,
) -> AttachPlan {
    let mut binaries: Vec<(u64, u64)> = sites.iter().map(|s| s.binary.inode()).collect();
    binaries.sort_unstable();
    binaries.dedup();
    let mechanism = tier.mechanism();
    let (parts, session) = passes(probe.kind(), tier, features);
    // With native cookies a site's load does not depend on the site: one per pass.
    let distinct = if mechanism.native_cookies() {
        &sites[..1.min(sites.len())]
    } else {
        sites
    };
    let program_loads = probe.loads_needed(
        parts
            .iter()
            .flat_map(|&p| distinct.iter().map(move |s| mechanism.load(p, s))),
    );
    let passes = parts.len() as u64;
    let descriptors = program_loads as u64 + passes * mechanism.descriptors(binaries.len(), sites.len());
    AttachPlan {
        tier,
        passed_over,
        targets: sites.len(),
        binaries: binaries.len(),
        program_loads,
        detach_estimate: mechanism.detach_estimate(binaries.len(), sites.len()) * passes as u32,
        descriptors,
        session,
        on_nop5: sites.iter().filter(|s| s.nop5_offset == Some(s.offset)).count(),
    }
}

/// `sites` with each USDT site written `nop; nop5` moved to its nop5 when the
/// kernel optimises a uprobe there ([`Feature::UprobeNop5`]) and the probe is
/// an entry or USDT one; the others as they are. Asks for the feature (a
/// probe, once per process) only when some site has a nop5.
pub(crate) fn place_on_nop5(kind: ProbeKind, mut sites: Vec<ProbeSite>, features: &Features) -> Vec<ProbeSite> {
    let entry = matches!(kind, ProbeKind::Entry | ProbeKind::Usdt);
    if entry && sites.iter().any(|s| s.nop5_offset.is_some()) && features.has(Feature::UprobeNop5) {
        for s in &mut sites {
            if let Some(nop5) = s.nop5_offset {
                s.offset = nop5;
            }
        }
    }
    sites
}
