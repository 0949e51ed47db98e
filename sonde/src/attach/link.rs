//! What an attach holds: kernel links, perf events and tracefs entries, and the
//! RAII handle that detaches them.

use std::sync::Arc;

use super::{tracefs, AttachPlan, DetachHandle, Tier};
use crate::programs::LoadedProgram;
use crate::resolve::ProbeSite;

/// One kernel attachment; dropping it detaches (fields drop in order). Most fields
/// are only held for their Drop.
#[derive(Debug)]
#[allow(clippy::enum_variant_names, dead_code)]
pub(crate) enum Link {
    /// A uprobe_multi link (all targets of one binary).
    Multi { link: std::os::fd::OwnedFd },
    /// A perf link, then the perf event it holds (the event is held for its Drop).
    PerfLink {
        link: std::os::fd::OwnedFd,
        perf: std::os::fd::OwnedFd,
    },
    /// A perf event with the program set by ioctl.
    Perf { perf: std::os::fd::OwnedFd },
    /// A tracepoint perf event, then its tracefs entry (both held for their Drop).
    Tracefs {
        perf: std::os::fd::OwnedFd,
        entry: tracefs::TracefsEntry,
    },
}

/// A program attached to its targets. Dropping it detaches everything.
///
/// Per-target tiers detach slowly on recent kernels (about 108 ms per target,
/// serialised in the kernel): [`Attachment::detach_in_background`] keeps that off
/// the caller's thread.
#[derive(Debug)]
pub struct Attachment {
    pub(super) tier: Tier,
    pub(super) plan: AttachPlan,
    pub(super) sites: Vec<ProbeSite>,
    pub(super) programs: Vec<Arc<LoadedProgram>>,
    pub(super) links: Vec<Link>,
}

impl Attachment {
    /// The tier that ran.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// For a session program, how the session ran (native or emulated).
    pub fn session(&self) -> Option<super::SessionMode> {
        self.plan.session
    }

    /// The plan it followed (after any fallback).
    pub fn plan(&self) -> &AttachPlan {
        &self.plan
    }

    /// The sites attached, with their cookies.
    pub fn sites(&self) -> &[ProbeSite] {
        &self.sites
    }

    /// The program variants in use.
    pub fn programs(&self) -> &[Arc<LoadedProgram>] {
        &self.programs
    }

    /// Kernel ids of the BPF links held (multi and perf-link tiers; the other tiers
    /// use no link objects).
    pub fn link_ids(&self) -> Vec<u32> {
        use std::os::fd::AsFd;
        self.links
            .iter()
            .filter_map(|l| match l {
                Link::Multi { link } | Link::PerfLink { link, .. } => {
                    crate::sys::bpf::link_info(link.as_fd()).ok().map(|i| i.id)
                }
                _ => None,
            })
            .collect()
    }

    /// Names of the tracefs `uprobe_events` entries held (`sonde/sonde_<pid>_<start>_<n>`;
    /// tracefs tier only).
    pub fn tracefs_events(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| match l {
                Link::Tracefs { entry, .. } => Some(entry.event_name()),
                _ => None,
            })
            .collect()
    }

    /// Kernel objects held: links plus perf events.
    pub fn kernel_objects(&self) -> usize {
        self.links
            .iter()
            .map(|l| match l {
                Link::Multi { .. } | Link::Perf { .. } => 1,
                Link::PerfLink { .. } | Link::Tracefs { .. } => 2,
            })
            .sum()
    }

    /// Detaches now, blocking until the kernel is done.
    pub fn detach(self) {
        drop(self);
    }

    /// Detaches on a background thread; the returned handle can wait for it, or
    /// hand what remains to a child process ([`DetachHandle::hand_off`]).
    pub fn detach_in_background(self) -> DetachHandle {
        DetachHandle::start(self)
    }
}
