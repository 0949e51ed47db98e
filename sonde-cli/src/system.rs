//! What a run needs of the system before it starts: privileges, and a flag the
//! stop signals set.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::CliError;

/// Sets the stop flag on SIGINT and SIGTERM.
pub fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::new(format!("signal handler: {e}")))?;
    }
    Ok(stop)
}

/// Refuses early, with the fix, when the process cannot use BPF; `what` is
/// what needs them ("to load eBPF programs and attach uprobes").
pub fn require_privileges(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    // CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
    if has(21) || (has(38) && has(39)) {
        return Ok(());
    }
    Err(CliError::new(format!(
        "sonde needs root (or CAP_BPF and CAP_PERFMON) {what}: run it with sudo"
    )))
}
