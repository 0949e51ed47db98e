//! Tier `tracefs`: a `uprobe_events` entry per target, opened as a tracepoint perf
//! event, program set by ioctl (cookies baked in as in `emulated`). Works where the
//! uprobe PMU is missing or refused.
//!
//! Entries are named `sonde/sonde_<pid>_<n>`: short (tracefs names stay under 64
//! bytes) and owned, so entries left by a process that died can be removed.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use super::{load_variants, target_error, AttachError, Link, Scope, Tier};
use crate::obj::ProbeKind;
use crate::programs::{LoadedProgram, UProbe};
use crate::sys::{perf, raise_nofile, tracefs, SyscallError};
use crate::target::ResolvedTarget;

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
}

impl Drop for TracefsEntry {
    fn drop(&mut self) {
        let line = format!("-:{GROUP}/{}\n", self.name);
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

/// Removes `sonde/sonde_<pid>_*` entries whose process is gone.
pub(crate) fn cleanup_stale_entries(root: &Path) {
    let Ok(lines) = tracefs::list_uprobe_events(root) else {
        return;
    };
    for line in lines {
        // "p:sonde/sonde_1234_5 /path:0x..."
        let Some(name) = line
            .split_whitespace()
            .next()
            .and_then(|h| h.split_once(':'))
            .and_then(|(_, ev)| ev.strip_prefix("sonde/"))
        else {
            continue;
        };
        let Some(pid) = name.strip_prefix("sonde_").and_then(|r| r.split('_').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = tracefs::write_uprobe_event(root, &format!("-:{GROUP}/{name}\n"));
        }
    }
}

pub(super) fn attach(
    probe: &mut UProbe,
    targets: &[ResolvedTarget],
    scope: Scope,
) -> Result<(Vec<Arc<LoadedProgram>>, Vec<Link>), AttachError> {
    static CLEANUP: Once = Once::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tier = Tier::Tracefs;
    let root = tracefs::root().ok_or(AttachError::NoTier {
        reasons: vec!["tracefs: not mounted and cannot be mounted at /sys/kernel/tracing".into()],
    })?;
    CLEANUP.call_once(|| cleanup_stale_entries(root));
    let (programs, which) = load_variants(probe, tier, targets)?;
    raise_nofile(targets.len() as u64);
    let kind = match probe.kind() {
        ProbeKind::Entry => 'p',
        ProbeKind::Return => 'r',
    };
    let mut links = Vec::with_capacity(targets.len());
    for (t, &pi) in targets.iter().zip(&which) {
        let fail = |e: SyscallError, n| target_error(tier, t, e, n, targets.len());
        let name = format!("sonde_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        // The kernel resolves `/proc/self/fd/N` in this process: the file the
        // offset was computed from, and a name the line syntax always carries
        // (the real path may hold spaces or newlines).
        let path = t.binary.kernel_path();
        let line = format!("{kind}:{GROUP}/{name} {}:{:#x}\n", path.to_string_lossy(), t.offset);
        tracefs::write_uprobe_event(root, &line).map_err(|e| fail(e, links.len()))?;
        let entry = TracefsEntry { root, name };
        let id = tracefs::event_id(root, GROUP, &entry.name).map_err(|source| AttachError::Syscall { tier, source })?;
        let perf = perf::open_tracepoint(id, scope.pid()).map_err(|e| fail(e, links.len()))?;
        perf::set_bpf(perf.as_fd(), programs[pi].as_fd()).map_err(|source| AttachError::Syscall { tier, source })?;
        perf::enable(perf.as_fd()).map_err(|source| AttachError::Syscall { tier, source })?;
        links.push(Link::Tracefs { perf, entry });
    }
    Ok((programs, links))
}
