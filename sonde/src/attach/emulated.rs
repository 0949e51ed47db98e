//! Tier `emulated`: a uprobe perf event per site, the program set with
//! `PERF_EVENT_IOC_SET_BPF` (Linux 4.17+); the cookie is a constant baked into
//! a program copy per distinct cookie.

use std::os::fd::AsFd;

use super::mechanism::{load, Held, Mechanism, Part, Pass};
use super::{perf_event, AttachError, Scope};
use crate::features::Feature;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::perf;

pub(crate) struct Emulated;

impl Mechanism for Emulated {
    fn requires(&self, _scope: Scope) -> &'static [Feature] {
        &[Feature::UprobePmu, Feature::PmuPermitted]
    }

    fn uses_pmu(&self) -> bool {
        true
    }

    fn load(&self, part: Part, site: &ProbeSite) -> Load {
        load(AttachType::PerfEvent, Cookie::Emulated(site.attach_cookie), part)
    }

    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError> {
        perf_event::attach(self, pass, probe, |prog, perf, _site| {
            perf::set_bpf(perf.as_fd(), prog.as_fd()).map(|()| None)
        })
    }
}
