//! Detaching off the caller's thread, and off the caller's process.
//!
//! Per-target uprobes detach one at a time in the kernel (about 108 ms each on
//! 6.18: an RCU-tasks-trace grace period under a global mutex), and a process
//! that exits holding them waits that long in its exit. [`DetachHandle`] runs the
//! detach on a thread; [`DetachHandle::hand_off`] gives what remains to a child
//! process, so the caller can exit at once while the child finishes the work.
//!
//! The hand-off works on descriptors, not Rust values: before the thread starts,
//! each link is written down as raw steps (close this fd, remove that tracefs
//! entry), which a forked child can carry out with async-signal-safe calls only.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Attachment, Link};
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
    /// Set when a child process takes over: the thread stops at the next link.
    handed_off: AtomicBool,
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

impl DetachHandle {
    pub(super) fn start(attachment: Attachment) -> DetachHandle {
        let Attachment { links, programs, .. } = attachment;
        let steps: Arc<Vec<Vec<handoff::Step>>> = Arc::new(links.iter().map(raw_steps).collect());
        let progress = Arc::new(Progress {
            done: AtomicUsize::new(0),
            handed_off: AtomicBool::new(false),
        });
        let shared = Arc::clone(&progress);
        let thread = std::thread::spawn(move || {
            let mut links = links.into_iter();
            for link in links.by_ref() {
                if shared.handed_off.load(Ordering::SeqCst) {
                    // The child closes and removes these: dropping them here
                    // would remove tracefs entries under its feet.
                    std::mem::forget(link);
                    break;
                }
                drop(link);
                shared.done.fetch_add(1, Ordering::SeqCst);
            }
            links.for_each(std::mem::forget);
            drop(programs);
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

    /// Hands the links not yet detached to a child process and returns at once
    /// with its pid, for a caller about to exit: the caller exits immediately
    /// (its copies of the descriptors close without cost), and the child, in
    /// its own session and without the caller's stdin, stdout and stderr, waits
    /// for that exit, then makes the last, slow closes and exits. `Ok(None)`
    /// when nothing remained.
    ///
    /// The probes stay attached until the child is done; while this process
    /// lives, the child waits.
    pub fn hand_off(self) -> Result<Option<u32>, SyscallError> {
        self.progress.handed_off.store(true, Ordering::SeqCst);
        // Links before `done` are detached; the one in progress (if any) is
        // redone by the child, harmlessly (closing an fd the parent closed
        // before the fork is EBADF in the child; removing a removed entry fails).
        let done = self.progress.done.load(Ordering::SeqCst);
        let rest: Vec<handoff::Step> = self.steps[done.min(self.steps.len())..]
            .iter()
            .flatten()
            .cloned()
            .collect();
        if rest.is_empty() {
            return Ok(None);
        }
        let pid = handoff::spawn(&rest)?;
        // The thread stops at the next link; it is not waited for.
        Ok(Some(pid))
    }
}
