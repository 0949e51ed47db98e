//! An object's maps, created when first needed.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Mutex;

use sonde_abi::Insn;

use super::{Map, MapError};
use crate::object_file::{MapReloc, MapSource, MapSpec, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
use crate::sys::bpf;

/// An object's maps, each created in the kernel the first time it is needed:
/// when a program that references it loads, or when the caller asks for it
/// (global data initialised, `.rodata` frozen, at creation). An object holds
/// the maps of all its programs; a process that loads one of them creates
/// only that one's (measured: the `sonde` command's object, 24 maps, loads
/// its counting program with 9).
#[derive(Debug)]
pub(crate) struct ObjectMaps {
    specs: Vec<MapSpec>,
    created: Mutex<Vec<Option<Map>>>,
}

impl ObjectMaps {
    pub(crate) fn new(specs: Vec<MapSpec>) -> ObjectMaps {
        let created = Mutex::new(vec![None; specs.len()]);
        ObjectMaps { specs, created }
    }

    /// How many maps the object declares.
    pub(crate) fn len(&self) -> usize {
        self.specs.len()
    }

    /// Their names, in the object's order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().map(|s| s.name.as_str())
    }

    /// The first map whose name satisfies `name`.
    pub(crate) fn index(&self, name: impl Fn(&str) -> bool) -> Option<usize> {
        self.specs.iter().position(|s| name(&s.name))
    }

    /// Map `i`, created if it does not exist yet.
    pub(crate) fn get(&self, i: usize) -> Result<Map, MapError> {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let spec = self.specs.get(i).ok_or_else(|| MapError::NotFound(format!("#{i}")))?;
        match created.get_mut(i) {
            Some(Some(m)) => Ok(m.clone()),
            Some(slot) => Ok(slot.insert(create(spec)?).clone()),
            None => Err(MapError::NotFound(spec.name.clone())),
        }
    }

    /// How many distinct maps `relocs` reference that do not exist yet: the
    /// descriptors a load of their program will open for them.
    pub(crate) fn uncreated(&self, relocs: &[MapReloc]) -> u64 {
        let created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        // Every attach asks, and after the first load the answer is 0: the
        // list of maps counted is made only when a map is missing.
        let mut counted: Vec<bool> = Vec::new();
        let mut n = 0;
        for r in relocs {
            if let Some(None) = created.get(r.map) {
                if counted.is_empty() {
                    counted = vec![false; created.len()];
                }
                if let Some(seen) = counted.get_mut(r.map) {
                    n += u64::from(!std::mem::replace(seen, true));
                }
            }
        }
        n
    }

    /// `insns` with each reference of `relocs` pointing at its map (created
    /// now if needed).
    pub(crate) fn relocate(&self, insns: &mut [Insn], relocs: &[MapReloc]) -> Result<(), MapError> {
        for r in relocs {
            let map = self.get(r.map)?;
            let declared = self.specs[r.map].source == MapSource::Declared;
            let (Some(first), Some(second)) = (insns.get(r.insn), insns.get(r.insn + 1)) else {
                return Err(MapError::NotFound(format!(
                    "{} (a reference past the program)",
                    map.name()
                )));
            };
            let (mut first, mut second) = (*first, *second);
            first.set_src(if declared { PSEUDO_MAP_FD } else { PSEUDO_MAP_VALUE });
            first.imm = map.as_fd().as_raw_fd();
            second.imm = if declared { 0 } else { r.offset as i32 };
            insns[r.insn] = first;
            insns[r.insn + 1] = second;
        }
        Ok(())
    }
}

/// Creates the map of `spec` (global data initialised, `.rodata` frozen).
fn create(spec: &MapSpec) -> Result<Map, MapError> {
    let mut d = spec.def;
    // A perf event array declared without a size gets one slot per CPU.
    if d.map_type == super::BPF_MAP_TYPE_PERF_EVENT_ARRAY && d.max_entries == 0 {
        d.max_entries = u32::try_from(super::possible_cpus()).unwrap_or(u32::MAX);
    }
    let read_only = matches!(spec.source, MapSource::Data { read_only: true, .. });
    let flags = d.map_flags | if read_only { bpf::BPF_F_RDONLY_PROG } else { 0 };
    let err = |source| MapError::Syscall {
        name: spec.name.clone(),
        source,
    };
    let fd = bpf::map_create(d.map_type, d.key_size, d.value_size, d.max_entries, flags, &spec.name).map_err(err)?;
    let map = Map::new(fd, spec.name.clone(), d);
    if let MapSource::Data { init, read_only } = &spec.source {
        // `.bss` (no bytes): the kernel already zero-filled the value.
        if !init.is_empty() {
            bpf::map_update_elem(map.as_fd(), &0u32.to_ne_bytes(), init, 0).map_err(err)?;
        }
        if *read_only {
            bpf::map_freeze(map.as_fd()).map_err(err)?;
        }
    }
    Ok(map)
}
