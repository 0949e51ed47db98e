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
//! | the tiers, best first, one row each | `tier` |
//! | the trait each mechanism implements; its passes | `mechanism` |
//! | one file per mechanism | `multi`, `perf_link`, `emulated`, `tracefs` (`perf_event`: what the two PMU tiers share) |
//! | scope and options | `options` |
//! | choosing a tier, the plan and its costs, refusals | `plan` |
//! | errors | `error` |
//! | the attachment and its links | `link` |
//! | detaching off-thread and off-process | `detach` |
//!
//! A new tier is a file implementing `Mechanism` and a row in `tier::TIERS`
//! (with its `Tier` variant): the plan, the fallback loop, the attachment, its
//! detach and hand-off work on what the trait says.

mod detach;
mod emulated;
mod error;
mod link;
mod mechanism;
mod multi;
mod options;
mod perf_event;
mod perf_link;
mod plan;
mod tier;
mod tracefs;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use detach::{hand_off_all, DetachHandle};
pub use error::AttachError;
pub use link::Attachment;
pub(crate) use link::Link;
pub use options::{AttachOptions, Scope};
pub use plan::{AttachPlan, Refusal, PER_TARGET_DETACH_COST};
pub use tier::Tier;
pub use tracefs::remove_stale_entries as remove_stale_tracefs_entries;

use crate::features::Features;
use crate::object_file::ProbeKind;
use crate::programs::UProbe;
use crate::resolve::{self, ProbeSite, Target};
use mechanism::{passes, Pass};

impl UProbe {
    /// What [`UProbe::attach_sites`] would do with these sites and options,
    /// without loading or attaching anything.
    pub fn plan(&self, sites: &[ProbeSite], options: &AttachOptions) -> Result<AttachPlan, AttachError> {
        let features = options.features();
        let (tier, passed_over) = plan::choose(options, &features, false)?;
        let returns = plan::go_returns(self.kind(), sites)?;
        let survey = plan::Survey::of(sites);
        if survey.nop5_sites {
            let (placed, survey) = plan::place_on_nop5(self.kind(), sites.to_vec(), survey, &features);
            return Ok(plan::make(
                self,
                &placed,
                survey,
                returns.as_deref(),
                tier,
                passed_over,
                &features,
            ));
        }
        Ok(plan::make(
            self,
            sites,
            survey,
            returns.as_deref(),
            tier,
            passed_over,
            &features,
        ))
    }

    /// Resolves `targets` and attaches this program to all of them, each with its
    /// cookie, through the best mechanism the kernel has (see [`Tier`]).
    pub fn attach(&mut self, targets: &[Target], options: &AttachOptions) -> Result<Attachment, AttachError> {
        let sites = resolve::sites(targets)?;
        self.attach_sites(sites, options)
    }

    /// Attaches to probe sites already resolved ([`resolve::sites`],
    /// [`crate::resolve::FunctionSet::targets`]). Nothing stays attached on failure.
    pub fn attach_sites(&mut self, sites: Vec<ProbeSite>, options: &AttachOptions) -> Result<Attachment, AttachError> {
        attach(self, sites, options, &options.features())
    }
}

/// How a session program (`#[uprobe_session]`) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
        let (tier, _) = plan::choose(options, &features, false).ok()?;
        passes(ProbeKind::Session, tier, &features, false).1
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

/// `more` after `all`: moved whole when `all` is empty (one pass, most
/// attaches), not copied.
fn join<T>(all: &mut Vec<T>, more: Vec<T>) {
    if all.is_empty() {
        *all = more;
    } else {
        all.extend(more);
    }
}

/// Attaches `probe` to `sites` on the best tier `features` allow, falling
/// back past the PMU tiers when the PMU refuses permission.
fn attach(
    probe: &mut UProbe,
    sites: Vec<ProbeSite>,
    options: &AttachOptions,
    features: &Features,
) -> Result<Attachment, AttachError> {
    if sites.is_empty() {
        return Err(AttachError::NoTargets);
    }
    // Go moves and walks goroutine stacks: a rewritten return address kills
    // it. Its returns are probed at the return instructions instead.
    let returns = plan::go_returns(probe.kind(), &sites)?;
    if let Scope::Process(pid) = options.scope {
        crate::process::check(u64::from(pid))?;
    }
    // One walk over the sites for what the plan counts of them.
    let survey = plan::Survey::of(&sites);
    let (sites, survey) = plan::place_on_nop5(probe.kind(), sites, survey, features);
    let mut skip_pmu = false;
    loop {
        let (tier, passed_over) = plan::choose(options, features, skip_pmu)?;
        let plan = plan::make(probe, &sites, survey, returns.as_deref(), tier, passed_over, features);
        if tier.per_target() && plan.detach_estimate >= Duration::from_secs(1) {
            log::warn!("{plan}");
        }
        // Room for every descriptor first (the maps the program's first load
        // creates included): a limit hit half-way would look like a verifier or
        // attach failure.
        let needed = plan.descriptors + probe.maps_to_create();
        crate::sys::reserve_fds(needed).map_err(|hard_limit| AttachError::FileLimit {
            tier,
            targets: sites.len(),
            needed,
            hard_limit,
        })?;
        // A failed pass drops the links of the passes before it.
        let result = (|| {
            let (mut programs, mut links) = (Vec::new(), Vec::new());
            for &part in passes(probe.kind(), tier, features, returns.is_some()).0.iter() {
                let pass = Pass {
                    tier,
                    sites: match (&returns, part.at_returns) {
                        (Some(r), true) => r,
                        _ => &sites,
                    },
                    scope: options.scope,
                    part,
                    features,
                };
                let (p, l) = tier.mechanism().attach(&pass, probe)?;
                join(&mut programs, p);
                join(&mut links, l);
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
