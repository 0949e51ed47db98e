//! An eBPF object in the kernel: maps created, programs ready to load on demand.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};

use crate::maps::{Map, MapError};
use crate::object_file::{MapSource, ObjectSpec, ProgramKind, SpecError, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
use crate::programs::{ProgramError, TracePoint, UProbe};
use crate::sys::bpf;

/// Why an object did not load: the file, a map, or the descriptors for its
/// maps. Programs load later, when attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The object file is malformed.
    #[error(transparent)]
    Object(#[from] SpecError),
    /// A map could not be created or initialised (or a size was given for a
    /// map the object does not have).
    #[error(transparent)]
    Map(#[from] MapError),
    /// The object's maps need more descriptors than `RLIMIT_NOFILE`'s hard
    /// limit allows; found before any map was created.
    #[error(
        "loading the object needs {needed} file descriptors for its maps, more than RLIMIT_NOFILE's \
         hard limit ({hard_limit}) allows next to those open: raise it (`ulimit -Hn`, `LimitNOFILE=` in a \
         systemd unit)"
    )]
    FileLimit {
        /// Descriptors the maps need.
        needed: u64,
        /// The hard limit.
        hard_limit: u64,
    },
}

/// An object whose maps exist in the kernel and whose programs load when first
/// attached.
///
/// ```no_run
/// # fn main() -> Result<(), sonde::Error> {
/// let bytes = std::fs::read("probes.bpf.o").unwrap();
/// let mut object = sonde::Object::load(&bytes)?;
/// let probe = object.uprobe("generic_probe")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Object {
    maps: Vec<Map>,
    programs: HashMap<String, UProbe>,
    tracepoints: HashMap<String, TracePoint>,
}

impl Object {
    /// Parses `bytes`, creates every map (global data initialised, `.rodata`
    /// frozen) and prepares the programs (relocated, not loaded).
    pub fn load(bytes: &[u8]) -> Result<Object, LoadError> {
        Self::load_with(bytes, &[])
    }

    /// [`Object::load`], with the `max_entries` of some maps set at run time
    /// (`(name, entries)`): an array indexed by cookie sized to the number of
    /// functions resolved, a ring buffer sized in bytes (a power-of-two multiple
    /// of the page size).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sonde::Error> {
    /// let bytes = std::fs::read("probes.bpf.o").unwrap();
    /// let object = sonde::Object::load_with(&bytes, &[("COUNTS", 5000)])?;
    /// # Ok(()) }
    /// ```
    pub fn load_with(bytes: &[u8], max_entries: &[(&str, u32)]) -> Result<Object, LoadError> {
        let mut file = ObjectSpec::parse(bytes)?;
        for (name, n) in max_entries {
            let spec = file
                .maps
                .iter_mut()
                .find(|m| m.name == *name)
                .ok_or_else(|| MapError::NotFound(name.to_string()))?;
            spec.def.max_entries = *n;
        }
        crate::sys::lift_memlock();
        // Room for every map first: a limit hit half-way would name one map.
        let needed = file.maps.len() as u64;
        crate::sys::reserve_fds(needed).map_err(|hard_limit| LoadError::FileLimit { needed, hard_limit })?;
        let mut maps = Vec::with_capacity(file.maps.len());
        for spec in &file.maps {
            let mut d = spec.def;
            // A perf event array declared without a size gets one slot per CPU.
            if d.map_type == crate::maps::BPF_MAP_TYPE_PERF_EVENT_ARRAY && d.max_entries == 0 {
                d.max_entries = u32::try_from(crate::maps::possible_cpus()).unwrap_or(u32::MAX);
            }
            let read_only = matches!(spec.source, MapSource::Data { read_only: true, .. });
            let flags = d.map_flags | if read_only { bpf::BPF_F_RDONLY_PROG } else { 0 };
            let fd = bpf::map_create(d.map_type, d.key_size, d.value_size, d.max_entries, flags, &spec.name).map_err(
                |source| MapError::Syscall {
                    name: spec.name.clone(),
                    source,
                },
            )?;
            let map = Map::new(fd, spec.name.clone(), d);
            if let MapSource::Data { init, read_only } = &spec.source {
                let err = |source| MapError::Syscall {
                    name: spec.name.clone(),
                    source,
                };
                // `.bss` (no bytes): the kernel already zero-filled the value.
                if !init.is_empty() {
                    bpf::map_update_elem(map.as_fd(), &0u32.to_ne_bytes(), init, 0).map_err(err)?;
                }
                if *read_only {
                    bpf::map_freeze(map.as_fd()).map_err(err)?;
                }
            }
            maps.push(map);
        }
        let mut programs = HashMap::new();
        let mut tracepoints = HashMap::new();
        for p in file.programs {
            let mut insns = p.insns;
            for r in &p.relocs {
                let map = &maps[r.map];
                let fd = map.as_fd().as_raw_fd();
                let declared = file.maps[r.map].source == MapSource::Declared;
                insns[r.insn].set_src(if declared { PSEUDO_MAP_FD } else { PSEUDO_MAP_VALUE });
                insns[r.insn].imm = fd;
                insns[r.insn + 1].imm = if declared { 0 } else { r.offset as i32 };
            }
            match p.kind {
                ProgramKind::Probe(kind) => {
                    programs.insert(p.name.clone(), UProbe::new(p.name, kind, insns, file.license.clone()));
                }
                ProgramKind::Tracepoint { category, event } => {
                    let t = TracePoint::new(p.name.clone(), category, event, insns, file.license.clone());
                    tracepoints.insert(p.name, t);
                }
            }
        }
        Ok(Object {
            maps,
            programs,
            tracepoints,
        })
    }

    /// The map `name` (a cheap handle; make a typed view from it).
    pub fn map(&self, name: &str) -> Result<Map, MapError> {
        self.maps
            .iter()
            .find(|m| m.name() == name)
            .cloned()
            .ok_or_else(|| MapError::NotFound(name.to_string()))
    }

    /// The USDT spec array `#[usdt]` programs read (`sonde_ebpf::usdt::USDT_SPECS`,
    /// in the object when a program reads USDT arguments): write a site's spec
    /// (`UsdtProbe::spec`) at the index used as its attach cookie.
    pub fn usdt_specs(&self) -> Result<crate::maps::Array<sonde_abi::usdt::UsdtSpec>, MapError> {
        let map = self
            .maps
            .iter()
            .find(|m| m.name().ends_with("USDT_SPECS"))
            .cloned()
            .ok_or_else(|| MapError::NotFound("USDT_SPECS".into()))?;
        crate::maps::Array::new(map)
    }

    /// Every map.
    pub fn maps(&self) -> &[Map] {
        &self.maps
    }

    /// The uprobe or uretprobe program `name`.
    pub fn uprobe(&mut self, name: &str) -> Result<&mut UProbe, ProgramError> {
        self.programs
            .get_mut(name)
            .ok_or_else(|| ProgramError::NotFound(name.to_string()))
    }

    /// The tracepoint program `name` (Linux 4.7+).
    pub fn tracepoint(&mut self, name: &str) -> Result<&mut TracePoint, ProgramError> {
        self.tracepoints
            .get_mut(name)
            .ok_or_else(|| ProgramError::NotFound(name.to_string()))
    }

    /// Names of the programs (uprobe and tracepoint), sorted.
    pub fn program_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .programs
            .keys()
            .chain(self.tracepoints.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v
    }
}
