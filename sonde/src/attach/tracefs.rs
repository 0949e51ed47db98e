//! Tier `tracefs`: a `uprobe_events` entry per target, opened as a tracepoint perf
//! event, program set by ioctl (cookies baked in as in `emulated`). Works where the
//! uprobe PMU is missing or refused.
//!
//! Entries are named `sonde/sonde_<pid>_<start>_<n>`, `<start>` being the
//! process's start time (clock ticks after boot): short (tracefs names stay under
//! 64 bytes) and owned by one process even after its pid is reused, so entries
//! left by a process that died are told apart from a live one's and removed.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use super::error::target_error;
use super::mechanism::{load, Held, Mechanism, Part, Pass};
use super::{AttachError, Link, Scope};
use crate::features::Feature;
use crate::programs::{AttachType, Cookie, Load, UProbe};
use crate::resolve::ProbeSite;
use crate::sys::{perf, tracefs, SyscallError};

const GROUP: &str = "sonde";

/// A `uprobe_events` entry, removed on drop.
#[derive(Debug)]
pub(crate) struct TracefsEntry {
    root: &'static Path,
    name: String,
}

impl TracefsEntry {
    pub(crate) fn event_name(&self) -> String {
        format!("{GROUP}/{}", self.name)
    }

    /// The `uprobe_events` line that removes the entry.
    fn removal(&self) -> String {
        format!("-:{GROUP}/{}\n", self.name)
    }

    /// [`Self::removal`] and the file to write it to, as C strings (for a
    /// forked child that may not allocate).
    pub(crate) fn removal_raw(&self) -> (std::ffi::CString, std::ffi::CString) {
        let file = self.root.join("uprobe_events").into_os_string().into_encoded_bytes();
        (
            std::ffi::CString::new(file).unwrap_or_default(),
            std::ffi::CString::new(self.removal()).unwrap_or_default(),
        )
    }

    /// Leaves the entry in place (a worker process removes it).
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for TracefsEntry {
    fn drop(&mut self) {
        let line = self.removal();
        // The perf event closing just before may still hold the entry for a moment.
        for _ in 0..50 {
            match tracefs::write_uprobe_event(self.root, &line) {
                Ok(()) => return,
                Err(e) if e.errno() == Some(libc::EBUSY) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => {
                    log::warn!("removing tracefs uprobe {GROUP}/{}: {e}", self.name);
                    return;
                }
            }
        }
        log::warn!("tracefs uprobe {GROUP}/{} stayed busy; left in place", self.name);
    }
}

/// Whether the process that named an entry `sonde_<pid>_<start>_<n>` is gone
/// (pid free, or reused by a process that started at another time). Entries
/// of the older `sonde_<pid>_<n>` form are stale when the pid is free.
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("sonde_") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let Some(pid) = parts.first().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    match (crate::process::stat(pid), parts.len()) {
        (None, _) => true,
        (Some(live), 3) => parts[1].parse::<u64>().is_ok_and(|start| start != live.start_time),
        (Some(_), _) => false,
    }
}

/// Removes the `sonde/...` tracefs uprobes whose creating process is gone (it
/// was killed before it could remove them). Returns how many were removed.
/// Never mounts tracefs: with none mounted there is nothing to remove.
pub fn remove_stale_entries() -> usize {
    let Some(root) = tracefs::mounted_root() else {
        return 0;
    };
    let Ok(lines) = tracefs::list_uprobe_events(&root) else {
        return 0;
    };
    let mut removed = 0;
    for line in lines {
        // "p:sonde/sonde_1234_567_5 /path:0x..."
        let Some(name) = line
            .split_whitespace()
            .next()
            .and_then(|h| h.split_once(':'))
            .and_then(|(_, ev)| ev.strip_prefix("sonde/"))
        else {
            continue;
        };
        if is_stale(name) && tracefs::write_uprobe_event(&root, &format!("-:{GROUP}/{name}\n")).is_ok() {
            removed += 1;
        }
    }
    removed
}

pub(crate) struct Tracefs;

impl Mechanism for Tracefs {
    fn requires(&self, _scope: Scope) -> &'static [Feature] {
        &[Feature::Tracefs]
    }

    fn load(&self, part: Part, site: &ProbeSite) -> Load {
        load(AttachType::PerfEvent, Cookie::Emulated(site.attach_cookie), part)
    }

    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError> {
        static CLEANUP: Once = Once::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Pass {
            tier,
            sites,
            scope,
            part,
            ..
        } = *pass;
        let root = tracefs::root().ok_or_else(|| AttachError::missing(tier, Feature::Tracefs))?;
        if !crate::sys::faked() {
            CLEANUP.call_once(|| {
                remove_stale_entries();
            });
        }
        let start = crate::process::own_start_time();
        let (programs, which) = probe.load_each(sites.iter().map(|s| self.load(part, s)))?;
        let letter = if part.kind.at_return() { 'r' } else { 'p' };
        let mut links = Vec::with_capacity(sites.len());
        for (s, &pi) in sites.iter().zip(&which) {
            let fail = |e: SyscallError, n| target_error(tier, s, e, n, sites.len());
            let syscall = |source| AttachError::Syscall { tier, source };
            let name = format!(
                "sonde_{}_{start}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            // The kernel resolves `/proc/PID/fd/N` of this process: the file the
            // offset was computed from, and a name the line syntax always carries
            // (the real path may hold spaces or newlines). A USDT semaphore follows
            // the offset as `(0xREF)`.
            let path = s.binary.kernel_path();
            let semaphore = s.ref_ctr_offset.map_or(String::new(), |r| format!("({r:#x})"));
            let line = format!(
                "{letter}:{GROUP}/{name} {}:{:#x}{semaphore}\n",
                path.to_string_lossy(),
                s.offset
            );
            tracefs::write_uprobe_event(root, &line).map_err(|e| fail(e, links.len()))?;
            let entry = TracefsEntry { root, name };
            let id = tracefs::event_id(root, GROUP, &entry.name).map_err(syscall)?;
            let perf = perf::open_tracepoint(id, scope.pid()).map_err(|e| fail(e, links.len()))?;
            perf::set_bpf(perf.as_fd(), programs[pi].as_fd()).map_err(syscall)?;
            perf::enable(perf.as_fd()).map_err(syscall)?;
            links.push(Link {
                bpf_link: None,
                perf: Some(perf),
                entry: Some(entry),
            });
        }
        Ok((programs, links))
    }
}
