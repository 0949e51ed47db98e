//! Probed files watched for changes of their contents.
//!
//! A uprobe is planted at a file offset of an inode. A binary replaced by a new
//! file (rename, package upgrade) keeps its old inode and its probes stay right;
//! a binary **rewritten in place** (`cp new old`: same inode, new bytes) puts the
//! old offset inside some instruction of the new code, and every process that
//! maps it from then on runs a breakpoint there. [`Fingerprint`] tells the two
//! apart (inode for a replacement; size and change time for a rewrite) and
//! [`FileWatch`] wakes its owner at the first write (inotify), so probes are
//! detached within milliseconds.
//!
//! The window that remains: a process that maps the file between the write and
//! the detach (milliseconds) gets a breakpoint at the old offset.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use super::binary::Fingerprint;
use crate::sys;

/// How a probed file differs from the one that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Same inode, other contents (written in place): detach at once.
    Rewritten,
    /// The path names another file now (renamed over, upgraded): the probes on
    /// the old file are still right; attach to the new one.
    Replaced,
}

impl Fingerprint {
    /// How the file `path` names now differs from `self`, if it does; `None`
    /// also when nothing is there (mid-upgrade: the old inode is still probed).
    pub fn change_at(&self, path: &Path) -> Option<Change> {
        let now = Fingerprint::of_path(path).ok()?;
        if (now.dev, now.ino) != (self.dev, self.ino) {
            Some(Change::Replaced)
        } else if now != *self {
            Some(Change::Rewritten)
        } else {
            None
        }
    }
}

/// One inotify instance watching probed files; cheap to clone (the clones share
/// it). Where inotify is unavailable it wakes on nothing, and callers compare
/// fingerprints on their own schedule.
#[derive(Debug, Clone)]
pub struct FileWatch {
    fd: Option<Arc<OwnedFd>>,
}

impl Default for FileWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FileWatch {
    /// A watch of no file yet.
    pub fn new() -> FileWatch {
        let fd = sys::inotify::init()
            .map_err(|e| log::debug!("no inotify ({e}): rewritten binaries are noticed by polling"))
            .ok();
        FileWatch { fd: fd.map(Arc::new) }
    }

    /// Watches `path` (the inode it names now) besides what is watched.
    pub fn add(&self, path: &Path) {
        if let Some(fd) = &self.fd {
            if let Err(e) = sys::inotify::add(fd, path) {
                log::debug!("not watching {} for writes: {e}", path.display());
            }
        }
    }

    /// Waits up to `timeout` for a write, move or deletion of a watched file;
    /// whether one came (its events are consumed). `Duration::ZERO` only looks.
    pub fn wait(&self, timeout: Duration) -> bool {
        let Some(fd) = &self.fd else {
            std::thread::sleep(timeout);
            return false;
        };
        sys::inotify::wait(fd, i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
    }
}
