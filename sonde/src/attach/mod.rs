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

use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::{self, ProbeSite, Target};
use crate::spec::ProbeKind;

impl UProbe {
    /// What [`UProbe::attach_sites`] would do with these sites and options,
    /// without loading or attaching anything.
    pub fn plan(&self, sites: &[ProbeSite], options: &AttachOptions) -> Result<AttachPlan, AttachError> {
        let (tier, passed_over) = plan::choose(self.kind(), options, &options.features(), false)?;
        Ok(plan::make(self, sites, tier, passed_over))
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

/// The program load a tier needs for one site.
pub(crate) fn load_for(tier: Tier, kind: ProbeKind, site: &ProbeSite) -> Load {
    match tier {
        Tier::Multi => Load {
            attach_type: if kind == ProbeKind::Session {
                AttachType::UprobeSession
            } else {
                AttachType::UprobeMulti
            },
            cookie: Cookie::Native,
        },
        Tier::PerfLink => Load {
            attach_type: AttachType::PerfEvent,
            cookie: Cookie::Native,
        },
        Tier::Emulated | Tier::Tracefs => Load {
            attach_type: AttachType::PerfEvent,
            cookie: Cookie::Emulated(site.attach_cookie),
        },
    }
}

fn attach(probe: &mut UProbe, sites: Vec<ProbeSite>, options: &AttachOptions) -> Result<Attachment, AttachError> {
    if sites.is_empty() {
        return Err(AttachError::NoTargets);
    }
    if let Scope::Process(pid) = options.scope {
        crate::process::check(u64::from(pid))?;
    }
    let features = options.features();
    let mut skip_pmu = false;
    loop {
        let (tier, passed_over) = plan::choose(probe.kind(), options, &features, skip_pmu)?;
        let plan = plan::make(probe, &sites, tier, passed_over);
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
        let result = match tier {
            Tier::Multi => multi::attach(probe, &sites, options.scope),
            Tier::PerfLink | Tier::Emulated => perf_event::attach(probe, &sites, options.scope, tier, &features),
            Tier::Tracefs => tracefs::attach(probe, &sites, options.scope),
        };
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
    use crate::features::{Feature, Features};

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
        // Session probes: only the multi tier, and only with the session link.
        let err = plan::choose(ProbeKind::Session, &o, &f.without(&[Feature::UprobeSession]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("uprobe_session"), "{err}");
        assert!(err.contains("perf-link: cannot attach Session programs"), "{err}");
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
