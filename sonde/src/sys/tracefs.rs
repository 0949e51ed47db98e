//! tracefs: where it is, and writes to `uprobe_events`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{run, run_detailed, run_unit, Call, SysResult};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount that has `uprobe_events`, if one is mounted (never mounts).
pub(crate) fn mounted_root() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("uprobe_events").exists())
}

/// The tracefs mount that has `uprobe_events`, mounting tracefs at
/// `/sys/kernel/tracing` if none is mounted and the process may (cached).
pub(crate) fn root() -> Option<&'static Path> {
    if super::faked() {
        return Some(Path::new("/fake/tracing"));
    }
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let found = mounted_root;
        found().or_else(|| {
            let target = c"/sys/kernel/tracing";
            let mounted = run(Call::Mount, || {
                // SAFETY: static NUL-terminated strings.
                let rc = unsafe {
                    libc::mount(
                        c"tracefs".as_ptr(),
                        target.as_ptr(),
                        c"tracefs".as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                };
                super::cvt(rc.into())
            });
            match mounted {
                Ok(_) => log::info!("mounted tracefs at /sys/kernel/tracing"),
                Err(e) => log::info!("{e}"),
            }
            found()
        })
    })
    .as_deref()
}

/// Appends one line to `uprobe_events` (`p:GRP/NAME PATH:0xOFF`, `-:GRP/NAME`, ...).
pub(crate) fn write_uprobe_event(root: &Path, line: &str) -> SysResult<()> {
    run_unit(
        Call::TracefsWrite,
        || line.trim_end().to_string(),
        || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(root.join("uprobe_events"))?
                .write_all(line.as_bytes())
        },
    )
}

/// The perf tracepoint id of `GRP/NAME`.
pub(crate) fn event_id(root: &Path, group: &str, name: &str) -> SysResult<u64> {
    run_detailed(
        Call::TracefsRead,
        || format!("{group}/{name}"),
        || {
            let text = std::fs::read_to_string(root.join("events").join(group).join(name).join("id"))?;
            text.trim()
                .parse()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
        },
    )
}

/// The current `uprobe_events` lines.
pub(crate) fn list_uprobe_events(root: &Path) -> io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(root.join("uprobe_events"))?
        .lines()
        .map(str::to_owned)
        .collect())
}
