//! Kernel tracepoint programs (`#[tracepoint]`, section
//! `tracepoint/CATEGORY/EVENT`): what a uprobe job needs from the kernel's side,
//! e.g. following the processes a traced command forks.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use super::{AttachType, Cookie, Load, LoadedProgram, ProgramError};
use crate::maps::ObjectMaps;
use crate::object_file::MapReloc;
use crate::sys::{perf, tracefs, SyscallError};
use sonde_abi::Insn;

/// Why a tracepoint program could not be attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TracepointError {
    /// The program did not load.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// tracefs is not mounted and could not be: its `events/` directory gives
    /// tracepoint ids and record layouts.
    #[error("tracefs is not mounted (tracepoint {0}): mount it with `mount -t tracefs nodev /sys/kernel/tracing`")]
    NoTracefs(String),
    /// The kernel has no such tracepoint, or its description is unreadable.
    #[error("tracepoint {name}: {reason}")]
    Unknown {
        /// `category/event`.
        name: String,
        /// What was missing.
        reason: String,
    },
    /// `perf_event_open` or an ioctl failed.
    #[error("tracepoint {name}: {source}")]
    Syscall {
        /// `category/event`.
        name: String,
        /// The failed call.
        #[source]
        source: SyscallError,
    },
}

/// A tracepoint program of an object (`sonde::Object`). Needs Linux 4.7.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut object = sonde::Object::load(&std::fs::read("probes.bpf.o")?)?;
/// // `#[tracepoint(category = "sched", event = "sched_process_fork")] fn on_fork(...)`
/// let offset = sonde::TracePoint::field_offset("sched", "sched_process_fork", "child_pid")?;
/// let link = object.tracepoint("on_fork")?.attach()?;
/// # drop((offset, link)); Ok(()) }
/// ```
#[derive(Debug)]
pub struct TracePoint {
    name: String,
    category: String,
    event: String,
    insns: Vec<Insn>,
    license: CString,
    /// Its map references, patched at load (the maps created then).
    relocs: Vec<MapReloc>,
    maps: Option<Arc<ObjectMaps>>,
    loaded: Option<Arc<LoadedProgram>>,
}

/// A tracepoint program attached: detached when dropped.
#[derive(Debug)]
pub struct TracepointLink {
    _perf: OwnedFd,
    program: Arc<LoadedProgram>,
}

impl TracepointLink {
    /// The perf event's descriptor (for a detach handed off).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self._perf)
    }

    /// The program as loaded.
    pub fn program(&self) -> &LoadedProgram {
        &self.program
    }
}

impl TracePoint {
    pub(crate) fn new(name: String, category: String, event: String, insns: Vec<Insn>, license: CString) -> Self {
        TracePoint {
            name,
            category,
            event,
            insns,
            license,
            relocs: Vec::new(),
            maps: None,
            loaded: None,
        }
    }

    /// The program with its map references, resolved against `maps` at load.
    pub(crate) fn with_maps(mut self, relocs: Vec<MapReloc>, maps: Arc<ObjectMaps>) -> Self {
        self.relocs = relocs;
        self.maps = Some(maps);
        self
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `category/event`, as tracefs names it.
    pub fn tracepoint(&self) -> String {
        format!("{}/{}", self.category, self.event)
    }

    /// Loads the program (once) and attaches it to its tracepoint: one perf event
    /// (the program runs on every CPU), `PERF_EVENT_IOC_SET_BPF`.
    pub fn attach(&mut self) -> Result<TracepointLink, TracepointError> {
        let name = self.tracepoint();
        let id_path = events_dir(&name)?.join("id");
        let id: u64 = std::fs::read_to_string(&id_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| TracepointError::Unknown {
                name: name.clone(),
                reason: format!("no such tracepoint ({} unreadable)", id_path.display()),
            })?;
        let program = match &self.loaded {
            Some(p) => Arc::clone(p),
            None => {
                let load = Load::new(AttachType::Tracepoint, Cookie::Native);
                let mut insns = self.insns.clone();
                if let Some(maps) = &self.maps {
                    maps.relocate(&mut insns, &self.relocs).map_err(ProgramError::from)?;
                }
                let p = Arc::new(LoadedProgram::load(&self.name, &insns, &self.license, load)?);
                self.loaded = Some(Arc::clone(&p));
                p
            }
        };
        let syscall = |source| TracepointError::Syscall {
            name: name.clone(),
            source,
        };
        let perf = perf::open_tracepoint(id, None).map_err(syscall)?;
        perf::set_bpf(perf.as_fd(), program.as_fd()).map_err(syscall)?;
        perf::enable(perf.as_fd()).map_err(syscall)?;
        Ok(TracepointLink { _perf: perf, program })
    }

    /// The byte offset of `field` in the record of tracepoint `category/event`,
    /// from its tracefs `format` (layouts differ between kernels: read it, never
    /// assume it).
    pub fn field_offset(category: &str, event: &str, field: &str) -> Result<u32, TracepointError> {
        let name = format!("{category}/{event}");
        let path = events_dir(&name)?.join("format");
        let text = std::fs::read_to_string(&path).map_err(|e| TracepointError::Unknown {
            name: name.clone(),
            reason: format!("{}: {e}", path.display()),
        })?;
        parse_field_offset(&text, field).ok_or_else(|| TracepointError::Unknown {
            name,
            reason: format!("no field `{field}` in {}", path.display()),
        })
    }
}

/// tracefs `events/CATEGORY/EVENT`.
fn events_dir(name: &str) -> Result<PathBuf, TracepointError> {
    let root = tracefs::root().ok_or_else(|| TracepointError::NoTracefs(name.to_string()))?;
    Ok(root.join("events").join(name))
}

/// `offset:N` of the line `field:TYPE NAME;` of a tracefs format.
fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        // The name is the last word of the declaration, before any `[N]`.
        let last = decl.rsplit(' ').next()?;
        let declared = last.split('[').next()?;
        if declared != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    #[test]
    fn offsets_from_a_format() {
        let f = "name: sched_process_fork\nID: 300\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
                 \tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                 \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(parse_field_offset(f, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(f, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(f, "pid"), None);
    }
}
