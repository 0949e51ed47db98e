//! The uprobe program handle: instructions kept, loads made on demand.

use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::CString;
use std::sync::{Arc, OnceLock};

use super::{
    bake_cookie, bake_session, session_kfuncs, uses_cookie, uses_session_calls, AttachType, Cookie, Load,
    LoadedProgram, ProgramError, SessionHalf,
};
use crate::maps::ObjectMaps;
use crate::object_file::{MapReloc, ProbeKind};
use sonde_abi::Insn;

/// A uprobe program of an object (`sonde::Object`): entry, return, session or USDT.
///
/// Nothing is loaded until an attach (or [`UProbe::load`]) needs it; then the
/// [`Load`] the chosen mechanism needs is made once and cached. Attaching is
/// [`UProbe::attach`] (in [`crate::attach`]).
///
/// ```no_run
/// # fn main() -> Result<(), sonde::Error> {
/// use sonde::{AttachOptions, Object, Target};
/// let mut object = Object::load(&std::fs::read("probes.bpf.o").unwrap())?;
/// let probe = object.uprobe("generic_probe")?;
/// let attachment = probe.attach(
///     &[
///         Target::symbol("/usr/bin/demo", "function_a").cookie(1),
///         Target::symbol("/usr/bin/demo", "function_b").cookie(2),
///     ],
///     &AttachOptions::default(),
/// )?;
/// println!("attached with {}", attachment.tier());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UProbe {
    name: String,
    kind: ProbeKind,
    insns: Vec<Insn>,
    license: CString,
    /// Reads its cookie; found at the first question (an object prepares many
    /// programs and loads few).
    reads_cookie: OnceLock<bool>,
    /// Makes session calls (`#[uprobe_session]`): rewritten at every load.
    session_calls: OnceLock<bool>,
    /// Its map references, patched at load (the maps created then).
    relocs: Vec<MapReloc>,
    maps: Option<Arc<ObjectMaps>>,
    /// By load: a few keys, looked up at every attach (FxHash: a tenth of
    /// SipHash's instructions for a key this small).
    loaded: FxHashMap<Load, Arc<LoadedProgram>>,
}

impl UProbe {
    pub(crate) fn new(name: String, kind: ProbeKind, insns: Vec<Insn>, license: CString) -> Self {
        UProbe {
            reads_cookie: OnceLock::new(),
            session_calls: OnceLock::new(),
            relocs: Vec::new(),
            maps: None,
            name,
            kind,
            insns,
            license,
            loaded: FxHashMap::default(),
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

    /// Entry, return, session or USDT (from its section).
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Whether the program reads its cookie (if not, one load serves every target
    /// on every tier).
    pub fn reads_cookie(&self) -> bool {
        *self.reads_cookie.get_or_init(|| uses_cookie(&self.insns))
    }

    fn session_calls(&self) -> bool {
        *self.session_calls.get_or_init(|| uses_session_calls(&self.insns))
    }

    /// The instructions, callees linked in; map references are patched with
    /// the maps' descriptors at load.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// The load that serves `load`: a program that never reads its cookie needs
    /// no emulated copy.
    fn normalise(&self, mut load: Load) -> Load {
        // Goroutine frames only change a program that makes session calls.
        load.go_frames &= self.session_calls();
        match load.cookie {
            Cookie::Emulated(_) if !self.reads_cookie() => Load {
                cookie: Cookie::Native,
                ..load
            },
            _ => load,
        }
    }

    /// Maps this program references that no load has created yet (each a
    /// descriptor its first load opens).
    pub(crate) fn maps_to_create(&self) -> u64 {
        self.maps.as_ref().map_or(0, |m| m.uncreated(&self.relocs))
    }

    /// Loads (or returns the cached) program for `load`.
    pub fn load(&mut self, load: Load) -> Result<Arc<LoadedProgram>, ProgramError> {
        let load = self.normalise(load);
        if let Some(p) = self.loaded.get(&load) {
            return Ok(Arc::clone(p));
        }
        let mut insns = self.insns.clone();
        if let Some(maps) = &self.maps {
            maps.relocate(&mut insns, &self.relocs)?;
        }
        if let Cookie::Emulated(c) = load.cookie {
            insns = bake_cookie(&insns, c);
        }
        if self.session_calls() {
            let native = match load.attach_type {
                AttachType::UprobeSession => Some(session_kfuncs().map_err(|reason| ProgramError::Kfunc {
                    name: self.name.clone(),
                    reason,
                })?),
                _ => None,
            };
            insns = bake_session(
                &insns,
                native,
                load.session.unwrap_or(SessionHalf::Entry),
                load.go_frames,
            );
        }
        let prog = Arc::new(LoadedProgram::load(&self.name, &insns, &self.license, load)?);
        self.loaded.insert(load, Arc::clone(&prog));
        Ok(prog)
    }

    /// Loads one program per distinct load of `loads` (in order); returns them
    /// and, for each entry of `loads`, the index of its program.
    pub fn load_each(
        &mut self,
        loads: impl IntoIterator<Item = Load>,
    ) -> Result<(Vec<Arc<LoadedProgram>>, Vec<usize>), ProgramError> {
        let mut programs: Vec<Arc<LoadedProgram>> = Vec::new();
        let mut index = Vec::new();
        for load in loads {
            let p = self.load(load)?;
            let i = match programs.iter().position(|q| Arc::ptr_eq(q, &p)) {
                Some(i) => i,
                None => {
                    programs.push(p);
                    programs.len() - 1
                }
            };
            index.push(i);
        }
        Ok((programs, index))
    }

    /// How many programs `loads` need (distinct loads after normalising).
    pub fn loads_needed(&self, loads: impl IntoIterator<Item = Load>) -> usize {
        // Native cookies: one load per pass, the same for every site; the
        // first distinct load is kept aside, so the common attach allocates
        // nothing here, and an emulated one (a load per cookie) hashes.
        let mut first: Option<Load> = None;
        let mut others: FxHashSet<Load> = FxHashSet::default();
        for l in loads.into_iter().map(|l| self.normalise(l)) {
            match first {
                None => first = Some(l),
                Some(f) if f == l => {}
                Some(_) => {
                    others.insert(l);
                }
            }
        }
        usize::from(first.is_some()) + others.len()
    }

    /// Every program loaded so far.
    pub fn loaded(&self) -> impl Iterator<Item = &Arc<LoadedProgram>> {
        self.loaded.values()
    }

    /// Drops cached programs no attachment uses (they unload from the kernel).
    pub fn unload_unused(&mut self) {
        self.loaded.retain(|_, p| Arc::strong_count(p) > 1);
    }
}
