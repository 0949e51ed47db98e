//! What tiers `perf-link` and `emulated` share: one uprobe perf event (the
//! `uprobe` PMU) per site, bound to its program the tier's way.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::error::target_error;
use super::mechanism::{Held, Mechanism, Pass};
use super::{AttachError, Link};
use crate::features::Feature;
use crate::programs::{LoadedProgram, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::{perf, SyscallError};

/// How a tier binds a program to a site's perf event: `Some(link)` when it
/// makes a BPF link.
pub(super) type Bind = fn(&LoadedProgram, &OwnedFd, &ProbeSite) -> Result<Option<OwnedFd>, SyscallError>;

/// Opens a PMU uprobe per site, binds its program with `bind`, enables it.
pub(super) fn attach(
    mechanism: &dyn Mechanism,
    pass: &Pass<'_>,
    probe: &mut UProbe,
    bind: Bind,
) -> Result<Held, AttachError> {
    let Pass {
        tier,
        sites,
        scope,
        part,
        features,
    } = *pass;
    let missing = |f| AttachError::missing(tier, f);
    let pmu = features.uprobe_pmu_type.ok_or_else(|| missing(Feature::UprobePmu))?;
    let retprobe_bit = if part.kind.at_return() {
        Some(features.retprobe_bit.ok_or_else(|| missing(Feature::UprobePmu))?)
    } else {
        None
    };
    let (programs, which) = probe.load_each(sites.iter().map(|s| mechanism.load(part, s)))?;
    let mut links = Vec::with_capacity(sites.len());
    for (s, &pi) in sites.iter().zip(&which) {
        let prog: &Arc<LoadedProgram> = &programs[pi];
        let path = s.binary.kernel_name();
        let path = path.as_c_str();
        let perf = perf::open_uprobe(pmu, retprobe_bit, path, s.offset, s.ref_ctr_offset, scope.pid())
            .map_err(|e| target_error(tier, s, e, links.len(), sites.len()))?;
        let syscall = |source| AttachError::Syscall { tier, source };
        let bpf_link = bind(prog, &perf, s).map_err(syscall)?;
        perf::enable(perf.as_fd()).map_err(syscall)?;
        links.push(Link {
            bpf_link,
            perf: Some(perf),
            entry: None,
        });
    }
    Ok((programs, links))
}
