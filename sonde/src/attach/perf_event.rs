//! Tiers `perf-link` and `emulated`: one uprobe perf event (the `uprobe` PMU) per
//! site. `perf-link` attaches with `BPF_LINK_CREATE(BPF_PERF_EVENT)` and the
//! site's cookie (5.15+); `emulated` with `PERF_EVENT_IOC_SET_BPF` and a program
//! copy that returns the cookie as a constant (4.17+).

use std::os::fd::AsFd;
use std::sync::Arc;

use super::error::target_error;
use super::{load_for, AttachError, Link, Part, Refusal, Scope, Tier};
use crate::features::{Feature, Features};
use crate::programs::{LoadedProgram, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::{bpf, perf};

pub(super) fn attach(
    probe: &mut UProbe,
    sites: &[ProbeSite],
    scope: Scope,
    tier: Tier,
    part: Part,
    features: &Features,
) -> Result<(Vec<Arc<LoadedProgram>>, Vec<Link>), AttachError> {
    let missing = |f| AttachError::NoTier {
        refusals: vec![(tier, Refusal::Missing(vec![(f, false)]))],
    };
    let pmu = features.uprobe_pmu_type.ok_or_else(|| missing(Feature::UprobePmu))?;
    let retprobe_bit = if part.kind.at_return() {
        Some(features.retprobe_bit.ok_or_else(|| missing(Feature::UprobePmu))?)
    } else {
        None
    };
    let (programs, which) = probe.load_each(sites.iter().map(|s| load_for(tier, part, s)))?;
    let mut links = Vec::with_capacity(sites.len());
    for (s, &pi) in sites.iter().zip(&which) {
        let fail = |e, n| target_error(tier, s, e, n, sites.len());
        let prog = &programs[pi];
        let path = s.binary.kernel_path();
        let perf = perf::open_uprobe(pmu, retprobe_bit, &path, s.offset, s.ref_ctr_offset, scope.pid())
            .map_err(|e| fail(e, links.len()))?;
        let link = if tier == Tier::PerfLink {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&perf);
            Some(
                bpf::link_create_perf_event(prog.as_fd(), fd, s.attach_cookie)
                    .map_err(|source| AttachError::Syscall { tier, source })?,
            )
        } else {
            perf::set_bpf(perf.as_fd(), prog.as_fd()).map_err(|source| AttachError::Syscall { tier, source })?;
            None
        };
        perf::enable(perf.as_fd()).map_err(|source| AttachError::Syscall { tier, source })?;
        links.push(match link {
            Some(link) => Link::PerfLink { link, perf },
            None => Link::Perf { perf },
        });
    }
    Ok((programs, links))
}
