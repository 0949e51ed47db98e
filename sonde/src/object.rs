//! An eBPF object in the kernel: maps and programs created when first needed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::maps::{Map, MapError, ObjectMaps};
use crate::object_file::{ProgramKind, SpecError, Unlinked};
use crate::programs::{ProgramError, TracePoint, UProbe};

/// Why an object did not load: the file, or a map size given for a map it
/// does not have. Maps are created, and programs loaded, when first needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The object file is malformed.
    #[error(transparent)]
    Object(#[from] SpecError),
    /// A size was given for a map the object does not have.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// An object whose maps exist in the kernel when first needed and whose
/// programs are linked when first asked for and loaded when first attached.
///
/// ```no_run
/// # fn main() -> Result<(), sonde::Error> {
/// let bytes = std::fs::read("probes.bpf.o").unwrap();
/// let mut object = sonde::Object::load(&bytes)?;
/// let probe = object.uprobe("generic_probe")?;
/// # Ok(()) }
/// ```
pub struct Object {
    maps: Arc<ObjectMaps>,
    /// The code and every program's entry; each program is linked from it
    /// when first asked for.
    code: Unlinked<'static>,
    /// Instructions linked so far (at most [`crate::object_file::MAX_OBJECT_INSNS`]).
    linked: usize,
    programs: HashMap<String, UProbe>,
    tracepoints: HashMap<String, TracePoint>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("maps", &self.maps)
            .field("programs", &self.program_names())
            .finish_non_exhaustive()
    }
}

impl Object {
    /// Parses `bytes` and prepares the maps and the programs. Only the code
    /// sections of `bytes` are kept (copied); a program is linked when first
    /// asked for ([`Object::uprobe`], [`Object::tracepoint`]), where a
    /// malformed one is refused, and loaded when first attached. A map is
    /// created when a program that uses it loads, or when asked for
    /// ([`Object::map`]): a map the object declares wrongly is refused then.
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
        Self::prepare(Unlinked::parse(bytes)?.into_owned(), max_entries)
    }

    /// [`Object::load`] for an object embedded in the program
    /// (`include_bytes!`): see [`Object::load_static_with`].
    pub fn load_static(bytes: &'static [u8]) -> Result<Object, LoadError> {
        Self::load_static_with(bytes, &[])
    }

    /// [`Object::load_with`] for an object embedded in the program
    /// (`include_bytes!`): its code is read where it is, never copied, and
    /// only the programs asked for are linked (an object of many programs
    /// costs what the ones used cost).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), sonde::Error> {
    /// # static PROBES: &[u8] = &[];
    /// // static PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));
    /// let mut object = sonde::Object::load_static_with(PROBES, &[("COUNTS", 5000)])?;
    /// let probe = object.uprobe("count")?;
    /// # Ok(()) }
    /// ```
    pub fn load_static_with(bytes: &'static [u8], max_entries: &[(&str, u32)]) -> Result<Object, LoadError> {
        Self::prepare(Unlinked::parse(bytes)?, max_entries)
    }

    fn prepare(mut code: Unlinked<'static>, max_entries: &[(&str, u32)]) -> Result<Object, LoadError> {
        for (name, n) in max_entries {
            let spec = code
                .maps
                .iter_mut()
                .find(|m| m.name == *name)
                .ok_or_else(|| MapError::NotFound(name.to_string()))?;
            spec.def.max_entries = *n;
        }
        // Nothing is created yet: descriptors are counted, and room made for
        // them, by the attach that loads a program (its maps included).
        crate::sys::lift_memlock();
        let maps = Arc::new(ObjectMaps::new(std::mem::take(&mut code.maps)));
        Ok(Object {
            maps,
            code,
            linked: 0,
            programs: HashMap::new(),
            tracepoints: HashMap::new(),
        })
    }

    /// Links the program `name` once, filed by its kind (a uprobe or a
    /// tracepoint); nothing when the object has no such program.
    fn link_named(&mut self, name: &str) -> Result<(), ProgramError> {
        if self.programs.contains_key(name) || self.tracepoints.contains_key(name) {
            return Ok(());
        }
        // Entries are kept sorted by name.
        let Ok(i) = self.code.entries.binary_search_by(|e| e.name.as_str().cmp(name)) else {
            return Ok(());
        };
        let p = self.code.link(&self.code.entries[i], &mut self.linked)?;
        let (license, maps) = (self.code.license.clone(), Arc::clone(&self.maps));
        match p.kind {
            ProgramKind::Probe(kind) => {
                let u = UProbe::new(p.name.clone(), kind, p.insns, license).with_maps(p.relocs, maps);
                self.programs.insert(p.name, u);
            }
            ProgramKind::Tracepoint { category, event } => {
                let t = TracePoint::new(p.name.clone(), category, event, p.insns, license).with_maps(p.relocs, maps);
                self.tracepoints.insert(p.name, t);
            }
        }
        Ok(())
    }

    /// The map `name` (a cheap handle; make a typed view from it), created
    /// now if no loaded program has needed it yet.
    pub fn map(&self, name: &str) -> Result<Map, MapError> {
        let i = self
            .maps
            .index(|n| n == name)
            .ok_or_else(|| MapError::NotFound(name.to_string()))?;
        self.maps.get(i)
    }

    /// The names of the object's maps (declared ones first, then global data).
    pub fn map_names(&self) -> impl Iterator<Item = &str> {
        self.maps.names()
    }

    /// The USDT spec array `#[usdt]` programs read (`sonde_ebpf::usdt::USDT_SPECS`,
    /// in the object when a program reads USDT arguments): write a site's spec
    /// (`UsdtProbe::spec`) at the index used as its attach cookie.
    pub fn usdt_specs(&self) -> Result<crate::maps::Array<sonde_abi::usdt::UsdtSpec>, MapError> {
        let i = self
            .maps
            .index(|n| n.ends_with("USDT_SPECS"))
            .ok_or_else(|| MapError::NotFound("USDT_SPECS".into()))?;
        crate::maps::Array::new(self.maps.get(i)?)
    }

    /// Every map, each created now if not yet.
    pub fn maps(&self) -> Result<Vec<Map>, MapError> {
        (0..self.maps.len()).map(|i| self.maps.get(i)).collect()
    }

    /// The uprobe or uretprobe program `name`, linked now if not yet.
    pub fn uprobe(&mut self, name: &str) -> Result<&mut UProbe, ProgramError> {
        self.link_named(name)?;
        self.programs
            .get_mut(name)
            .ok_or_else(|| ProgramError::NotFound(name.to_string()))
    }

    /// The tracepoint program `name` (Linux 4.7+), linked now if not yet.
    pub fn tracepoint(&mut self, name: &str) -> Result<&mut TracePoint, ProgramError> {
        self.link_named(name)?;
        self.tracepoints
            .get_mut(name)
            .ok_or_else(|| ProgramError::NotFound(name.to_string()))
    }

    /// Names of the programs (uprobe and tracepoint), sorted.
    pub fn program_names(&self) -> Vec<&str> {
        // Entries are kept sorted by name.
        self.code.entries.iter().map(|e| e.name.as_str()).collect()
    }
}
