//! Tiers `perf-link` and `emulated`: one uprobe perf event (the `uprobe` PMU) per
//! target. `perf-link` attaches with `BPF_LINK_CREATE(BPF_PERF_EVENT)` and the
//! target's cookie (5.15+); `emulated` with `PERF_EVENT_IOC_SET_BPF` and a program
//! copy that returns the cookie as a constant (4.17+).

use std::os::fd::AsFd;
use std::sync::Arc;

use super::{load_variants, target_error, AttachError, Link, Scope, Tier};
use crate::features::Features;
use crate::obj::ProbeKind;
use crate::programs::{LoadedProgram, UProbe};
use crate::sys::{bpf, perf, raise_nofile};
use crate::target::ResolvedTarget;

pub(super) fn attach(
    probe: &mut UProbe,
    targets: &[ResolvedTarget],
    scope: Scope,
    tier: Tier,
    features: &Features,
) -> Result<(Vec<Arc<LoadedProgram>>, Vec<Link>), AttachError> {
    let pmu = features.uprobe_pmu_type.ok_or(AttachError::NoTier {
        reasons: vec![format!("{tier}: the uprobe PMU is missing")],
    })?;
    let retprobe_bit = match probe.kind() {
        ProbeKind::Entry => None,
        ProbeKind::Return => Some(features.retprobe_bit.ok_or(AttachError::NoTier {
            reasons: vec![format!("{tier}: the uprobe PMU has no retprobe bit")],
        })?),
    };
    let (programs, which) = load_variants(probe, tier, targets)?;
    raise_nofile(2 * targets.len() as u64);
    let mut links = Vec::with_capacity(targets.len());
    for (t, &pi) in targets.iter().zip(&which) {
        let fail = |e, n| target_error(tier, t, e, n, targets.len());
        let prog = &programs[pi];
        let perf = perf::open_uprobe(pmu, retprobe_bit, &t.binary.kernel_path(), t.offset, scope.pid())
            .map_err(|e| fail(e, links.len()))?;
        let link = if tier == Tier::PerfLink {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&perf);
            Some(
                bpf::link_create_perf_event(prog.as_fd(), fd, t.cookie)
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
