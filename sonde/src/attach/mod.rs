//! Attaching one program to many probe sites, each with its cookie, through the
//! best mechanism the running kernel has.
//!
//! | tier | kernel | how | cookies |
//! | --- | --- | --- | --- |
//! | [`Tier::Multi`] | 6.6+ | one uprobe_multi link per binary | `cookies[]` |
//! | [`Tier::PerfLink`] | 5.15+ | a uprobe perf event + perf link per target | `bpf_cookie` |
//! | [`Tier::Emulated`] | 4.17+ | a uprobe perf event + `PERF_EVENT_IOC_SET_BPF` per target | emulated: one program per distinct cookie |
//! | [`Tier::Tracefs`] | any | a `uprobe_events` entry + tracepoint perf event per target | as emulated |
//!
//! Session programs run natively on `multi` with `uprobe_session` (6.13+) and
//! are emulated on every other tier and kernel: [`SessionMode`].
//!
//! The plan is chosen before loading: the kernel's cookie helper differs per link
//! type and a multi program must declare its attach type.
//!
//! | piece | file |
//! | --- | --- |
//! | tiers, scope, options | `tier` |
//! | choosing a tier, the plan and its costs, refusals | `plan` |
//! | errors | `error` |
//! | the attachment and its links | `link` |
//! | detaching off-thread and off-process | `detach` |
//! | one file per mechanism | `multi`, `perf_event`, `tracefs` |

mod detach;
mod error;
mod link;
mod multi;
mod perf_event;
mod plan;
mod tier;
mod tracefs;

use std::time::Duration;

pub use detach::DetachHandle;
pub use error::AttachError;
pub use link::Attachment;
pub(crate) use link::Link;
pub use plan::{AttachPlan, Refusal, PER_TARGET_DETACH_COST};
pub use tier::{AttachOptions, Scope, Tier};
pub use tracefs::remove_stale_entries as remove_stale_tracefs_entries;

use crate::features::{Feature, Features};
use crate::programs::{AttachType, Cookie, Load, SessionHalf, UProbe};
use crate::resolve::{self, ProbeSite, Target};
use crate::spec::ProbeKind;

impl UProbe {
    /// What [`UProbe::attach_sites`] would do with these sites and options,
    /// without loading or attaching anything.
    pub fn plan(&self, sites: &[ProbeSite], options: &AttachOptions) -> Result<AttachPlan, AttachError> {
        let features = options.features();
        let (tier, passed_over) = plan::choose(self.kind(), options, &features, false)?;
        Ok(plan::make(self, sites, tier, passed_over, &features))
    }

    /// Resolves `targets` and attaches this program to all of them, each with its
    /// cookie, through the best mechanism the kernel has (see [`Tier`]).
    pub fn attach(&mut self, targets: &[Target], options: &AttachOptions) -> Result<Attachment, crate::Error> {
        let sites = resolve::sites(targets)?;
        Ok(self.attach_sites(sites, options)?)
    }

    /// Attaches to probe sites already resolved ([`resolve::sites`],
    /// [`crate::FunctionSet::targets`]). Nothing stays attached on failure.
    pub fn attach_sites(&mut self, sites: Vec<ProbeSite>, options: &AttachOptions) -> Result<Attachment, AttachError> {
        attach(self, sites, options)
    }
}

/// How a session program (`#[uprobe_session]`) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// One program on one `BPF_TRACE_UPROBE_SESSION` link per binary, the
    /// per-call value kept by the kernel (Linux 6.13+, tier multi).
    Native,
    /// An entry copy and a return copy of the program on the chosen tier, the
    /// per-call value kept in the program's map by thread and stack pointer at entry.
    Emulated,
}

impl SessionMode {
    /// How a session program attached with `options` would run on this
    /// kernel (`None`: no tier would take it), decided as the attach decides.
    pub fn expected(options: &AttachOptions) -> Option<SessionMode> {
        let features = options.features();
        let (tier, _) = plan::choose(ProbeKind::Session, options, &features, false).ok()?;
        parts(ProbeKind::Session, tier, &features).1
    }

    /// `session native` / `session emulated`.
    pub fn name(self) -> &'static str {
        match self {
            SessionMode::Native => "session native",
            SessionMode::Emulated => "session emulated",
        }
    }

    /// `native` / `emulated` (JSON values, metric labels).
    pub fn short_name(self) -> &'static str {
        match self {
            SessionMode::Native => "native",
            SessionMode::Emulated => "emulated",
        }
    }
}

/// One attach pass: the kind the mechanism attaches as, and the session half
/// the program copy serves (emulated sessions take two passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub kind: ProbeKind,
    pub half: Option<SessionHalf>,
}

/// The passes a program of `kind` needs on `tier`: the return half of an
/// emulated session first, so that no return runs without its entry's slot
/// having had the chance to be pushed.
pub(crate) fn parts(kind: ProbeKind, tier: Tier, features: &Features) -> (Vec<Part>, Option<SessionMode>) {
    if kind != ProbeKind::Session {
        return (vec![Part { kind, half: None }], None);
    }
    if tier == Tier::Multi && features.has(Feature::UprobeSession) && crate::programs::session_kfuncs().is_ok() {
        return (vec![Part { kind, half: None }], Some(SessionMode::Native));
    }
    let halves = vec![
        Part {
            kind: ProbeKind::Return,
            half: Some(SessionHalf::Return),
        },
        Part {
            kind: ProbeKind::Entry,
            half: Some(SessionHalf::Entry),
        },
    ];
    (halves, Some(SessionMode::Emulated))
}

/// The program load a tier needs for one site.
pub(crate) fn load_for(tier: Tier, part: Part, site: &ProbeSite) -> Load {
    let mut load = match tier {
        Tier::Multi => Load::new(
            if part.kind == ProbeKind::Session {
                AttachType::UprobeSession
            } else {
                AttachType::UprobeMulti
            },
            Cookie::Native,
        ),
        Tier::PerfLink => Load::new(AttachType::PerfEvent, Cookie::Native),
        Tier::Emulated | Tier::Tracefs => Load::new(AttachType::PerfEvent, Cookie::Emulated(site.attach_cookie)),
    };
    load.session = part.half;
    load
}

fn attach(probe: &mut UProbe, sites: Vec<ProbeSite>, options: &AttachOptions) -> Result<Attachment, AttachError> {
    if sites.is_empty() {
        return Err(AttachError::NoTargets);
    }
    // Go moves and walks goroutine stacks: a rewritten return address kills it.
    if matches!(probe.kind(), ProbeKind::Return | ProbeKind::Session) {
        if let Some(go) = sites.iter().find(|s| s.binary.is_go()) {
            return Err(AttachError::GoReturnProbe {
                binary: go.path().to_path_buf(),
            });
        }
    }
    if let Scope::Process(pid) = options.scope {
        crate::process::check(u64::from(pid))?;
    }
    let features = options.features();
    let mut skip_pmu = false;
    loop {
        let (tier, passed_over) = plan::choose(probe.kind(), options, &features, skip_pmu)?;
        let plan = plan::make(probe, &sites, tier, passed_over, &features);
        if tier.per_target() && plan.detach_estimate >= Duration::from_secs(1) {
            log::warn!("{plan}");
        }
        // Room for every descriptor first: a limit hit half-way would look like a
        // verifier or attach failure.
        crate::sys::reserve_fds(plan.descriptors).map_err(|hard_limit| AttachError::FileLimit {
            tier,
            targets: sites.len(),
            needed: plan.descriptors,
            hard_limit,
        })?;
        // A failed pass drops the links of the passes before it.
        let result = (|| {
            let (mut programs, mut links) = (Vec::new(), Vec::new());
            for part in parts(probe.kind(), tier, &features).0 {
                let (p, l) = match tier {
                    Tier::Multi => multi::attach(probe, &sites, options.scope, part),
                    Tier::PerfLink | Tier::Emulated => {
                        perf_event::attach(probe, &sites, options.scope, tier, part, &features)
                    }
                    Tier::Tracefs => tracefs::attach(probe, &sites, options.scope, part),
                }?;
                programs.extend(p);
                links.extend(l);
            }
            Ok::<_, AttachError>((programs, links))
        })();
        match result {
            Ok((programs, links)) => {
                return Ok(Attachment {
                    tier,
                    plan,
                    sites,
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
        let entry = ProbeKind::Entry;
        let pick = |f: &Features, o: &AttachOptions| plan::choose(entry, o, f, false).map(|x| x.0).ok();
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
        let err = plan::choose(entry, &o, &nothing, false).unwrap_err().to_string();
        assert!(err.contains("multi: needs uprobe_multi (disabled)"), "{err}");
        assert!(err.contains("tracefs: needs tracefs"), "{err}");
        // Session probes: every tier; native only on multi with the session link.
        let (_, mode) = parts(ProbeKind::Session, Tier::PerfLink, &f);
        assert_eq!(mode, Some(SessionMode::Emulated));
        let (halves, mode) = parts(ProbeKind::Session, Tier::Multi, &f.without(&[Feature::UprobeSession]));
        assert_eq!(mode, Some(SessionMode::Emulated));
        assert_eq!(halves.len(), 2);
        assert_eq!(halves[0].half, Some(SessionHalf::Return));
        if f.has(Feature::UprobeSession) {
            assert_eq!(parts(ProbeKind::Session, Tier::Multi, &f).1, Some(SessionMode::Native));
        }
    }

    #[test]
    fn pmu_refusal_moves_past_pmu_tiers() {
        let f = all_features().without(&[Feature::UprobeMulti]);
        if f.has(Feature::Tracefs) {
            let (t, why) = plan::choose(ProbeKind::Entry, &AttachOptions::default(), &f, true).unwrap();
            assert_eq!(t, Tier::Tracefs);
            assert!(why.iter().any(|(_, r)| *r == Refusal::PmuPermission));
        }
    }
}
