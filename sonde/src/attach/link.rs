//! What an attach holds: kernel links, perf events and tracefs entries, and the
//! RAII handle that detaches them.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::{tracefs, AttachPlan, DetachHandle, Tier};
use crate::programs::LoadedProgram;
use crate::resolve::ProbeSite;

/// One kernel attachment, whatever the tier: a BPF link, a perf event, a
/// tracefs entry, or several of them. Dropping it detaches; the fields drop in
/// the order the kernel needs (the link before the event it holds, the event
/// before the tracefs entry it opened).
#[derive(Debug, Default)]
pub(crate) struct Link {
    /// A BPF link (multi, perf-link): the kernel lists it by id.
    pub bpf_link: Option<OwnedFd>,
    /// A perf event (a PMU uprobe or a tracefs tracepoint).
    pub perf: Option<OwnedFd>,
    /// A tracefs `uprobe_events` entry, removed last.
    pub entry: Option<tracefs::TracefsEntry>,
}

impl Link {
    /// Kernel objects held.
    pub fn objects(&self) -> usize {
        usize::from(self.bpf_link.is_some()) + usize::from(self.perf.is_some())
    }

    /// Closes this process's descriptors and leaves the tracefs entry in
    /// place: for a link a worker process detaches (see `detach::hand_off`).
    pub fn release(mut self) {
        if let Some(entry) = self.entry.take() {
            entry.keep();
        }
    }
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
            .filter_map(|l| l.bpf_link.as_ref())
            .filter_map(|link| crate::sys::bpf::link_info(link.as_fd()).ok().map(|i| i.id))
            .collect()
    }

    /// Names of the tracefs `uprobe_events` entries held (`sonde/sonde_<pid>_<start>_<n>`;
    /// tracefs tier only).
    pub fn tracefs_events(&self) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| l.entry.as_ref().map(tracefs::TracefsEntry::event_name))
            .collect()
    }

    /// Kernel objects held: links plus perf events.
    pub fn kernel_objects(&self) -> usize {
        self.links.iter().map(Link::objects).sum()
    }

    /// Detaches now, blocking until the kernel is done.
    pub fn detach(self) {
        drop(self);
    }

    /// Detaches on a background thread; the returned handle can wait for it, or
    /// hand what remains to a background process ([`DetachHandle::hand_off`]).
    pub fn detach_in_background(self) -> DetachHandle {
        DetachHandle::start(self)
    }

    /// Gives the detach to a background process and returns at once with its
    /// pid (`Ok(None)`: nothing to detach). The caller goes on, or exits, without
    /// waiting; the process, in its own session and without the caller's
    /// terminal, makes the kernel's waits one after another and exits. The probes
    /// stay attached for as long as a [`detach`](Self::detach) here would have
    /// taken, no longer: per-target links wait for the kernel one at a time at
    /// their last close (~0.1 s each on 6.18), wherever that close happens.
    ///
    /// The process is a grandchild that this process does not wait for (it is
    /// reparented at once); watch it with `pidfd_open` or `/proc` if needed.
    /// A `fork` failure is returned with the attachment already detached here.
    ///
    /// Any kernel; worth it for per-target tiers (a multi link detaches in one wait).
    ///
    /// ```no_run
    /// # fn demo(attachment: sonde::Attachment) {
    /// match attachment.hand_off() {
    ///     Ok(Some(pid)) => eprintln!("detaching in process {pid}"),
    ///     Ok(None) => {}
    ///     Err(e) => eprintln!("detached here instead: {e}"),
    /// }
    /// # }
    /// ```
    pub fn hand_off(self) -> Result<Option<u32>, crate::sys::SyscallError> {
        super::detach::hand_off_all(vec![self], Vec::new())
    }
}
