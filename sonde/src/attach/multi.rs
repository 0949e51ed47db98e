//! Tier `multi`: one `BPF_TRACE_UPROBE_MULTI` link per binary (Linux 6.6+), with
//! the offsets, cookies and semaphores of all its sites. Attaching and detaching
//! cost about the same for 10 or 10,000 functions; a session program runs on
//! one `BPF_TRACE_UPROBE_SESSION` link (6.13+).

use std::os::fd::AsFd;
use std::time::Duration;

use super::error::target_error;
use super::mechanism::{load, Held, Mechanism, Part, Pass};
use super::{AttachError, Link, Scope};
use crate::features::{Feature, Features};
use crate::object_file::ProbeKind;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::{BinaryFile, ProbeSite};
use crate::sys::bpf;

/// `BPF_LINK_TYPE_UPROBE_MULTI`.
const LINK_TYPE: u32 = 12;

pub(crate) struct Multi;

impl Mechanism for Multi {
    fn requires(&self, scope: Scope) -> Vec<Feature> {
        // The multi link's cookies are read through the same helper.
        match scope {
            Scope::AllProcesses => vec![Feature::UprobeMulti, Feature::BpfCookie],
            Scope::Process(_) => vec![Feature::UprobeMulti, Feature::UprobeMultiPidFilter, Feature::BpfCookie],
        }
    }

    fn native_cookies(&self) -> bool {
        true
    }

    fn uses_pmu(&self) -> bool {
        false
    }

    fn per_target(&self) -> bool {
        false
    }

    fn native_session(&self, features: &Features) -> bool {
        features.has(Feature::UprobeSession) && features.session_kfuncs()
    }

    fn load(&self, part: Part, _site: &ProbeSite) -> Load {
        let attach_type = if part.kind == ProbeKind::Session {
            AttachType::UprobeSession
        } else {
            AttachType::UprobeMulti
        };
        load(attach_type, Cookie::Native, part)
    }

    fn descriptors(&self, binaries: usize, _sites: usize) -> u64 {
        binaries as u64
    }

    fn detach_estimate(&self, binaries: usize, _sites: usize) -> Duration {
        Duration::from_millis(5) * binaries as u32
    }

    fn link_type(&self) -> Option<u32> {
        Some(LINK_TYPE)
    }

    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError> {
        let Pass {
            tier,
            sites,
            scope,
            part,
            ..
        } = *pass;
        let prog = probe.load(self.load(part, &sites[0]))?;
        let (attach_type, flags) = match part.kind {
            ProbeKind::Entry | ProbeKind::Usdt => (bpf::BPF_TRACE_UPROBE_MULTI, 0),
            ProbeKind::Return => (bpf::BPF_TRACE_UPROBE_MULTI, bpf::BPF_F_UPROBE_MULTI_RETURN),
            ProbeKind::Session => (sonde_abi::program::BPF_TRACE_UPROBE_SESSION, 0),
        };
        let mut links = Vec::new();
        let mut arrays = Vec::new();
        for (binary, group) in by_binary(sites) {
            let n = group.len();
            let semaphores = fill_arrays(&group, &mut arrays);
            let path = binary.kernel_path();
            let request = bpf::UprobeMulti {
                attach_type,
                path: path.as_c_str(),
                offsets: &arrays[..n],
                ref_ctr_offsets: semaphores.then(|| &arrays[2 * n..3 * n]),
                cookies: &arrays[n..2 * n],
                flags,
                pid: scope.pid().unwrap_or(0),
            };
            let link = bpf::link_create_uprobe_multi(prog.as_fd(), &request)
                // The kernel does not say which offset it refused: name the binary and
                // the first site.
                .map_err(|e| target_error(tier, group[0], e, links.len(), sites.len()))?;
            links.push(Link {
                bpf_link: Some(link),
                ..Link::default()
            });
        }
        Ok((vec![prog], links))
    }
}

/// Fills `arrays` with `group`'s offsets, then its cookies, then (when some
/// site has one) one semaphore per offset, 0 for none: one allocation for the
/// whole request. Returns whether the semaphores are there.
fn fill_arrays(group: &[&ProbeSite], arrays: &mut Vec<u64>) -> bool {
    let n = group.len();
    let semaphores = group.iter().any(|s| s.ref_ctr_offset.is_some());
    arrays.clear();
    arrays.reserve(if semaphores { 3 * n } else { 2 * n });
    arrays.extend(group.iter().map(|s| s.offset));
    arrays.extend(group.iter().map(|s| s.attach_cookie));
    if semaphores {
        arrays.extend(group.iter().map(|s| s.ref_ctr_offset.unwrap_or(0)));
    }
    semaphores
}

/// The sites grouped by binary (the file itself, not its name), in the caller's order.
fn by_binary(sites: &[ProbeSite]) -> Vec<(&BinaryFile, Vec<&ProbeSite>)> {
    // Most attachments name one binary: one group, sized once.
    if let Some(binary) = super::plan::single_binary(sites) {
        return vec![(binary, sites.iter().collect())];
    }
    let mut groups: Vec<(&BinaryFile, Vec<&ProbeSite>)> = Vec::new();
    for s in sites {
        match groups.iter_mut().find(|(b, _)| **b == *s.binary) {
            Some((_, g)) => g.push(s),
            None => groups.push((&s.binary, vec![s])),
        }
    }
    groups
}
