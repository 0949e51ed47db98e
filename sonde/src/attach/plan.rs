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
    /// Go functions' returns: probed at this many return instructions (an
    /// entry probe each, the function's cookie), never by uretprobe. `None`
    /// when no Go function's returns are probed.
    pub go_return_sites: Option<usize>,
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
        if let Some(n) = self.go_return_sites {
            write!(f, ", returns: ret-sites ({n} return instruction(s) of Go functions)")?;
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
    let one;
    let candidates: &[Tier] = match options.tier {
        Some(t) => {
            one = [t];
            &one
        }
        None => &Tier::ALL,
    };
    let mut passed_over = Vec::new();
    for &t in candidates {
        let mechanism = t.mechanism();
        let refusal = if options.require_native_cookies && !mechanism.native_cookies() {
            Some(Refusal::EmulatesCookies)
        } else if skip_pmu && mechanism.uses_pmu() {
            Some(Refusal::PmuPermission)
        } else if mechanism.requires(options.scope).iter().all(|f| features.has(*f)) {
            None
        } else {
            let missing: Vec<(Feature, bool)> = mechanism
                .requires(options.scope)
                .iter()
                .copied()
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
    survey: Survey,
    returns: Option<&[ProbeSite]>,
    tier: Tier,
    passed_over: Vec<(Tier, Refusal)>,
    features: &Features,
) -> AttachPlan {
    let Survey { binaries, on_nop5, .. } = survey;
    let mechanism = tier.mechanism();
    let (parts, session) = passes(probe.kind(), tier, features, returns.is_some());
    let sites_of = |p: &super::mechanism::Part| match (returns, p.at_returns) {
        (Some(r), true) => r,
        _ => sites,
    };
    // With native cookies a site's load does not depend on the site: one per pass.
    let distinct = |s: &'_ [ProbeSite]| -> usize {
        if mechanism.native_cookies() {
            1.min(s.len())
        } else {
            s.len()
        }
    };
    let program_loads = probe.loads_needed(parts.iter().flat_map(|&p| {
        let s = sites_of(&p);
        s[..distinct(s)].iter().map(move |s| mechanism.load(p, s))
    }));
    let descriptors = program_loads as u64
        + parts
            .iter()
            .map(|p| mechanism.descriptors(binaries, sites_of(p).len()))
            .sum::<u64>();
    AttachPlan {
        tier,
        passed_over,
        targets: sites.len(),
        binaries,
        program_loads,
        detach_estimate: parts
            .iter()
            .map(|p| mechanism.detach_estimate(binaries, sites_of(p).len()))
            .sum(),
        descriptors,
        session,
        on_nop5,
        go_return_sites: returns.map(<[ProbeSite]>::len),
    }
}

/// What the plan counts of the sites, told in one walk over them (at n =
/// 10,000 a walk reads a megabyte): sorting only when they are in several
/// opened files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Survey {
    /// Distinct binaries (device and inode).
    binaries: usize,
    /// Sites probed on their nop5.
    on_nop5: usize,
    /// Whether some site has a nop5 to be moved to.
    pub(crate) nop5_sites: bool,
}

impl Survey {
    pub(crate) fn of(sites: &[ProbeSite]) -> Survey {
        let Some(first) = sites.first() else {
            return Survey {
                binaries: 0,
                on_nop5: 0,
                nop5_sites: false,
            };
        };
        let (mut single, mut on_nop5, mut nop5_sites) = (true, 0, false);
        for s in sites {
            single &= std::sync::Arc::ptr_eq(&s.binary, &first.binary);
            on_nop5 += usize::from(s.nop5_offset == Some(s.offset));
            nop5_sites |= s.nop5_offset.is_some();
        }
        let binaries = if single {
            1
        } else {
            let mut inodes: Vec<(u64, u64)> = sites.iter().map(|s| s.binary.inode()).collect();
            inodes.sort_unstable();
            inodes.dedup();
            inodes.len()
        };
        Survey {
            binaries,
            on_nop5,
            nop5_sites,
        }
    }
}

/// `sites` with each USDT site written `nop; nop5` moved to its nop5 when the
/// kernel optimises a uprobe there ([`Feature::UprobeNop5`]) and the probe is
/// an entry or USDT one; the others as they are. Asks for the feature (a
/// probe, once per process) only when some site has a nop5 (`survey`, of
/// `sites`); returns the survey of the sites returned.
pub(crate) fn place_on_nop5(
    kind: ProbeKind,
    mut sites: Vec<ProbeSite>,
    survey: Survey,
    features: &Features,
) -> (Vec<ProbeSite>, Survey) {
    let entry = matches!(kind, ProbeKind::Entry | ProbeKind::Usdt);
    if !(entry && survey.nop5_sites && features.has(Feature::UprobeNop5)) {
        return (sites, survey);
    }
    for s in &mut sites {
        if let Some(nop5) = s.nop5_offset {
            s.offset = nop5;
        }
    }
    let survey = Survey::of(&sites);
    (sites, survey)
}

/// For a return or session probe on Go functions: the sites at each of their
/// return instructions (the function's cookie on each), where the return
/// program goes as an entry probe. `None` when no site is in a Go program or
/// the probe has no return half. Refused, before anything loads, when some
/// site's returns cannot be found (`resolve::boundary::go_return_sites_x86_64`
/// says why) or when Go and other functions share the probe.
pub(crate) fn go_returns(kind: ProbeKind, sites: &[ProbeSite]) -> Result<Option<Vec<ProbeSite>>, AttachError> {
    if !matches!(kind, ProbeKind::Return | ProbeKind::Session) || !sites.iter().any(|s| s.binary.is_go()) {
        return Ok(None);
    }
    let refuse = |s: &ProbeSite, reason: &'static str| AttachError::GoReturnProbe {
        binary: s.path().to_path_buf(),
        function: s
            .symbol
            .as_deref()
            .map_or_else(|| format!("offset {:#x}", s.offset), str::to_string),
        reason,
    };
    if let Some(other) = sites.iter().find(|s| !s.binary.is_go()) {
        let go = sites.iter().find(|s| s.binary.is_go()).unwrap_or(other);
        return Err(refuse(
            go,
            "the same probe names functions of a program that is not Go: attach those separately",
        ));
    }
    let mut out = Vec::new();
    let mut mapped: Option<(std::sync::Arc<crate::resolve::BinaryFile>, memmap2::Mmap)> = None;
    for s in sites {
        if s.symbol.as_deref().is_some_and(|n| n.ends_with(".abi0")) {
            return Err(refuse(s, "it is assembly (ABI0): its goroutine is not in R14"));
        }
        let Some((start, size)) = s.function else {
            return Err(refuse(
                s,
                "its extent is unknown (name it by function: sonde::resolve::Functions)",
            ));
        };
        if !matches!(&mapped, Some((b, _)) if std::sync::Arc::ptr_eq(b, &s.binary)) {
            let map = s.binary.map().map_err(|_| refuse(s, "its file cannot be read"))?;
            mapped = Some((std::sync::Arc::clone(&s.binary), map));
        }
        let Some((_, map)) = &mapped else { continue };
        let code = usize::try_from(start)
            .ok()
            .zip(usize::try_from(start.saturating_add(size)).ok())
            .and_then(|(a, b)| map.get(a..b))
            .ok_or_else(|| refuse(s, "its bytes are outside the file"))?;
        let offsets = crate::resolve::go_return_sites(code, start).map_err(|reason| refuse(s, reason))?;
        out.extend(offsets.into_iter().map(|offset| ProbeSite {
            offset,
            ref_ctr_offset: None,
            nop5_offset: None,
            ..s.clone()
        }));
    }
    Ok(Some(out))
}
