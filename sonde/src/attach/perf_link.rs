//! Tier `perf-link`: a uprobe perf event per site, attached with
//! `BPF_LINK_CREATE(BPF_PERF_EVENT)` and the site's cookie (Linux 5.15+).

use std::os::fd::{AsFd, AsRawFd};

use super::mechanism::{load, Held, Mechanism, Part, Pass};
use super::{perf_event, AttachError, Scope};
use crate::features::Feature;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::bpf;

/// `BPF_LINK_TYPE_PERF_EVENT`.
const LINK_TYPE: u32 = 7;

pub(crate) struct PerfLink;

impl Mechanism for PerfLink {
    fn requires(&self, _scope: Scope) -> &'static [Feature] {
        &[
            Feature::UprobePmu,
            Feature::PmuPermitted,
            Feature::PerfLink,
            Feature::BpfCookie,
        ]
    }

    fn native_cookies(&self) -> bool {
        true
    }

    fn uses_pmu(&self) -> bool {
        true
    }

    fn load(&self, part: Part, _site: &ProbeSite) -> Load {
        load(AttachType::PerfEvent, Cookie::Native, part)
    }

    fn descriptors(&self, _binaries: usize, sites: usize) -> u64 {
        2 * sites as u64
    }

    fn link_type(&self) -> Option<u32> {
        Some(LINK_TYPE)
    }

    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError> {
        perf_event::attach(self, pass, probe, |prog, perf, site| {
            bpf::link_create_perf_event(prog.as_fd(), perf.as_raw_fd(), site.attach_cookie).map(Some)
        })
    }
}
