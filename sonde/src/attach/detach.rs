//! Detaching off the caller's thread, and off the caller's process.
//!
//! Per-target uprobes detach one at a time in the kernel (about 108 ms each on
//! 6.18: an RCU-tasks-trace grace period under a global mutex), and a process
//! that exits holding them waits that long in its exit. [`DetachHandle`] runs the
//! detach on a thread; [`Attachment::hand_off`] and [`DetachHandle::hand_off`]
//! give it to a background process, so the caller goes on (or exits) at once
//! while that process makes the kernel's waits, in the same total time.
//!
//! The hand-off works on descriptors, not Rust values: each link is written
//! down as raw steps (close this fd, remove that tracefs entry), which a forked
//! worker can carry out with async-signal-safe calls only.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Attachment, Link};
use crate::programs::TracepointLink;
use crate::sys::{handoff, SyscallError};

/// The steps of one link, in its drop order.
fn raw_steps(link: &Link) -> Vec<handoff::Step> {
    use handoff::Step;
    let mut steps: Vec<Step> = [&link.bpf_link, &link.perf]
        .into_iter()
        .flatten()
        .map(|fd| Step::Close(fd.as_raw_fd()))
        .collect();
    if let Some(entry) = &link.entry {
        let (path, line) = entry.removal_raw();
        steps.push(Step::Write { path, line });
    }
    steps
}

struct Progress {
    /// Links fully detached by the thread.
    done: AtomicUsize,
    /// Set when a worker process takes over: the thread closes its copies of
    /// the rest (cheap) and stops.
    handed_off: AtomicBool,
    /// The worker's `go` end, dropped by the thread once its copies are closed.
    go: std::sync::Mutex<Option<OwnedFd>>,
    /// How long the thread took, once it has finished.
    took: std::sync::OnceLock<std::time::Duration>,
}

/// A detach running on a background thread (see [`Attachment::detach_in_background`]).
#[derive(Debug)]
pub struct DetachHandle {
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
    /// Steps per link, written down before the thread started.
    steps: Arc<Vec<Vec<handoff::Step>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("done", &self.done.load(Ordering::Relaxed))
            .field("handed_off", &self.handed_off.load(Ordering::Relaxed))
            .finish()
    }
}

/// Gives the detach of `attachments` and `tracepoints` to one background
/// process and returns at once with its pid (`Ok(None)`: nothing to detach), as
/// [`Attachment::hand_off`] does for one attachment: uprobes first, in order,
/// then the tracepoints. On a `fork` failure everything is detached here, and
/// the error returned.
///
/// Any kernel.
pub fn hand_off_all(
    attachments: Vec<Attachment>,
    tracepoints: Vec<TracepointLink>,
) -> Result<Option<u32>, SyscallError> {
    let steps: Vec<handoff::Step> = attachments
        .iter()
        .flat_map(|a| a.links.iter().flat_map(raw_steps))
        .chain(tracepoints.iter().map(|t| handoff::Step::Close(t.raw_fd())))
        .collect();
    if steps.is_empty() {
        return Ok(None);
    }
    let worker = handoff::spawn(&steps)?;
    for Attachment { links, programs, .. } in attachments {
        links.into_iter().for_each(Link::release);
        drop(programs);
    }
    drop(tracepoints);
    drop(worker.go);
    Ok(Some(worker.pid))
}

impl DetachHandle {
    pub(super) fn start(attachment: Attachment) -> DetachHandle {
        let Attachment { links, programs, .. } = attachment;
        let steps: Arc<Vec<Vec<handoff::Step>>> = Arc::new(links.iter().map(raw_steps).collect());
        let progress = Arc::new(Progress {
            done: AtomicUsize::new(0),
            handed_off: AtomicBool::new(false),
            go: std::sync::Mutex::new(None),
            took: std::sync::OnceLock::new(),
        });
        let shared = Arc::clone(&progress);
        let started = std::time::Instant::now();
        let thread = std::thread::spawn(move || {
            let mut links = links.into_iter();
            for link in links.by_ref() {
                if shared.handed_off.load(Ordering::SeqCst) {
                    link.release();
                    break;
                }
                drop(link);
                shared.done.fetch_add(1, Ordering::SeqCst);
            }
            // The worker closes and removes the rest: this process's copies
            // close here (not the last references, so without a wait), tracefs
            // entries are left to the worker.
            links.for_each(Link::release);
            drop(programs);
            drop(shared.go.lock().map(|mut g| g.take()));
            let _ = shared.took.set(started.elapsed());
        });
        DetachHandle {
            thread: Some(thread),
            progress,
            steps,
        }
    }

    /// Whether the detach has finished.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// How long the detach took, once it has finished (`None` before, and
    /// after a hand-off: the rest was not timed here).
    pub fn took(&self) -> Option<std::time::Duration> {
        if self.progress.handed_off.load(Ordering::Relaxed) {
            return None;
        }
        self.progress.took.get().copied()
    }

    /// Links detached so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.progress.done.load(Ordering::Relaxed), self.steps.len())
    }

    /// Blocks until the detach has finished.
    pub fn wait(mut self) {
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }

    /// Hands the links not yet detached to a background process and returns
    /// its pid at once (see [`Attachment::hand_off`]); the thread closes this
    /// process's copies once the link it is detaching now is done. `Ok(None)`
    /// when nothing remained.
    pub fn hand_off(self) -> Result<Option<u32>, SyscallError> {
        // Links before `done` are detached; the one in progress (if any) is
        // redone by the worker, harmlessly (closing an fd the thread closed
        // before the fork is EBADF there; removing a removed entry fails).
        let done = self.progress.done.load(Ordering::SeqCst);
        let rest: Vec<handoff::Step> = self.steps[done.min(self.steps.len())..]
            .iter()
            .flatten()
            .cloned()
            .collect();
        if rest.is_empty() {
            return Ok(None);
        }
        let worker = handoff::spawn(&rest)?;
        if let Ok(mut go) = self.progress.go.lock() {
            *go = Some(worker.go);
        }
        // If the thread has ended already, `go` closes with the last reference
        // to `progress`, when this handle drops below.
        self.progress.handed_off.store(true, Ordering::SeqCst);
        // The thread stops at the next link; it is not waited for.
        Ok(Some(worker.pid))
    }
}
