//! Tier `emulated`: a uprobe perf event per site, the program set with
//! `PERF_EVENT_IOC_SET_BPF` (Linux 4.17+); the cookie is a constant baked into
//! a program copy per distinct cookie.

use std::os::fd::AsFd;
use std::time::Duration;

use super::mechanism::{Held, Mechanism, Part, Pass};
use super::{perf_event, AttachError, Scope, PER_TARGET_DETACH_COST};
use crate::features::Feature;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::perf;

pub(crate) struct Emulated;

impl Mechanism for Emulated {
    fn requires(&self, _scope: Scope) -> Vec<Feature> {
        vec![Feature::UprobePmu, Feature::PmuPermitted]
    }

    fn native_cookies(&self) -> bool {
        false
    }

    fn uses_pmu(&self) -> bool {
        true
    }

    fn per_target(&self) -> bool {
        true
    }

    fn load(&self, part: Part, site: &ProbeSite) -> Load {
        let mut load = Load::new(AttachType::PerfEvent, Cookie::Emulated(site.attach_cookie));
        load.session = part.half;
        load
    }

    fn descriptors(&self, _binaries: usize, sites: usize) -> u64 {
        sites as u64
    }

    fn detach_estimate(&self, _binaries: usize, sites: usize) -> Duration {
        PER_TARGET_DETACH_COST * sites as u32
    }

    fn link_type(&self) -> Option<u32> {
        None
    }

    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError> {
        perf_event::attach(self, pass, probe, |prog, perf, _site| {
            perf::set_bpf(perf.as_fd(), prog.as_fd()).map(|()| None)
        })
    }
}
