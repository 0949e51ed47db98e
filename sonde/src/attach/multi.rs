//! Tier `multi`: one `BPF_TRACE_UPROBE_MULTI` link per binary (Linux 6.6+), with
//! the offsets, cookies and semaphores of all its sites. Attaching and detaching
//! cost about the same for 10 or 10,000 functions; a session program runs on
//! one `BPF_TRACE_UPROBE_SESSION` link (6.13+).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use super::error::target_error;
use super::mechanism::{load, Held, Mechanism, Part, Pass};
use super::{AttachError, Link, Scope};
use crate::features::{Feature, Features};
use crate::object_file::ProbeKind;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::bpf;

/// `BPF_LINK_TYPE_UPROBE_MULTI`.
const LINK_TYPE: u32 = 12;

pub(crate) struct Multi;

impl Mechanism for Multi {
    fn requires(&self, scope: Scope) -> &'static [Feature] {
        // The multi link's cookies are read through the same helper.
        match scope {
            Scope::AllProcesses => &[Feature::UprobeMulti, Feature::BpfCookie],
            Scope::Process(_) => &[Feature::UprobeMulti, Feature::UprobeMultiPidFilter, Feature::BpfCookie],
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
        let pid = scope.pid().unwrap_or(0);
        // One link for the sites of one binary, `arrays` filled for them.
        let link = |arrays: &[u64], first: &ProbeSite, n: usize, semaphores: bool, made: usize| {
            let path = first.binary.kernel_name();
            let request = bpf::UprobeMulti {
                attach_type,
                path: path.as_c_str(),
                offsets: &arrays[..n],
                ref_ctr_offsets: semaphores.then(|| &arrays[2 * n..3 * n]),
                cookies: &arrays[n..2 * n],
                flags,
                pid,
            };
            let fd = bpf::link_create_uprobe_multi(prog.as_fd(), &request)
                // The kernel does not say which offset it refused: name the binary and
                // the first site.
                .map_err(|e| target_error(tier, first, e, made, sites.len()))?;
            Ok::<_, AttachError>(Link {
                bpf_link: Some(fd),
                ..Link::default()
            })
        };
        // Offsets and cookies, and room for semaphores: one allocation.
        let mut arrays = Vec::with_capacity(3 * sites.len());
        // Most attachments name one binary: its request is filled in the same
        // walk over the sites that finds out (at n = 10,000 a walk over the
        // sites reads a megabyte); otherwise the sites are grouped and each
        // group's request filled again.
        let (n, semaphores, one_file) = fill(sites.iter(), &mut arrays);
        let links = if one_file {
            vec![link(&arrays, &sites[0], n, semaphores, 0)?]
        } else {
            let mut links = Vec::new();
            for group in by_binary(sites) {
                let (n, semaphores, _) = fill(group.iter().copied(), &mut arrays);
                links.push(link(&arrays, group[0], n, semaphores, links.len())?);
            }
            links
        };
        Ok((vec![prog], links))
    }
}

/// Fills `arrays` with `group`'s offsets, then its cookies, then (when some
/// site has one) one semaphore per offset, 0 for none: one allocation for the
/// whole request, one walk over the sites (a second only for semaphores).
/// Returns how many sites, whether the semaphores are there, and whether
/// every site is in the first one's opened file (told in the same walk).
fn fill<'s>(group: impl ExactSizeIterator<Item = &'s ProbeSite> + Clone, arrays: &mut Vec<u64>) -> (usize, bool, bool) {
    let n = group.len();
    arrays.clear();
    arrays.resize(2 * n, 0);
    let (offsets, cookies) = arrays.split_at_mut(n);
    let (mut semaphores, mut one_file, mut first) = (false, true, None);
    for ((s, offset), cookie) in group.clone().zip(offsets).zip(cookies) {
        let first = first.get_or_insert(&s.binary);
        one_file &= Arc::ptr_eq(&s.binary, first);
        *offset = s.offset;
        *cookie = s.attach_cookie;
        semaphores |= s.ref_ctr_offset.is_some();
    }
    if semaphores {
        arrays.extend(group.map(|s| s.ref_ctr_offset.unwrap_or(0)));
    }
    (n, semaphores, one_file)
}

/// The sites grouped by binary (the file itself, not its name), in the caller's order.
fn by_binary(sites: &[ProbeSite]) -> Vec<Vec<&ProbeSite>> {
    let mut groups: Vec<Vec<&ProbeSite>> = Vec::new();
    for s in sites {
        match groups.iter_mut().find(|g| *g[0].binary == *s.binary) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    groups
}
