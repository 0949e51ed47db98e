//! The uprobe program handle: instructions kept, variants loaded on demand.

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;

use super::{bake_cookie, uses_cookie, LoadVariant, LoadedProgram, ProgramError};
use crate::attach::{self, AttachError, AttachOptions, AttachPlan, Attachment};
use crate::obj::{Insn, ProbeKind};
use crate::target::{self, ResolvedTarget, Target};

/// A uprobe or uretprobe program of an [`crate::Object`].
///
/// Nothing is loaded until an attach (or [`UProbe::load`]) needs it; then the
/// variant the chosen mechanism needs is loaded once and cached.
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
    reads_cookie: bool,
    loaded: HashMap<LoadVariant, Arc<LoadedProgram>>,
}

impl UProbe {
    pub(crate) fn new(name: String, kind: ProbeKind, insns: Vec<Insn>, license: CString) -> Self {
        UProbe {
            reads_cookie: uses_cookie(&insns),
            name,
            kind,
            insns,
            license,
            loaded: HashMap::new(),
        }
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Entry (uprobe) or return (uretprobe).
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Whether the program reads its cookie (if not, one load serves every target
    /// on every tier).
    pub fn reads_cookie(&self) -> bool {
        self.reads_cookie
    }

    /// The instructions as loaded in their native form.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// Loads (or returns the cached) `variant` of this program.
    pub fn load(&mut self, variant: LoadVariant) -> Result<Arc<LoadedProgram>, ProgramError> {
        let variant = match variant {
            LoadVariant::Baked(_) if !self.reads_cookie => LoadVariant::CookieFree,
            v => v,
        };
        if let Some(p) = self.loaded.get(&variant) {
            return Ok(Arc::clone(p));
        }
        let insns = match variant {
            LoadVariant::Baked(c) => bake_cookie(&self.insns, c),
            _ => self.insns.clone(),
        };
        let prog = Arc::new(LoadedProgram::load(&self.name, &insns, &self.license, variant)?);
        self.loaded.insert(variant, Arc::clone(&prog));
        Ok(prog)
    }

    /// Every variant loaded so far.
    pub fn loaded(&self) -> impl Iterator<Item = &Arc<LoadedProgram>> {
        self.loaded.values()
    }

    /// Drops cached variants no attachment uses (they unload from the kernel).
    pub fn unload_unused(&mut self) {
        self.loaded.retain(|_, p| Arc::strong_count(p) > 1);
    }

    /// What [`UProbe::attach`] would do with these targets and options, without
    /// loading or attaching anything.
    pub fn plan(&self, targets: &[ResolvedTarget], options: &AttachOptions) -> Result<AttachPlan, AttachError> {
        attach::plan(self, targets, options)
    }

    /// Resolves `targets` and attaches this program to all of them, each with its
    /// cookie, through the best mechanism the kernel has (see [`crate::Tier`]).
    pub fn attach(&mut self, targets: &[Target], options: &AttachOptions) -> Result<Attachment, crate::Error> {
        let resolved = target::resolve(targets)?;
        Ok(self.attach_resolved(resolved, options)?)
    }

    /// Attaches to targets already resolved.
    pub fn attach_resolved(
        &mut self,
        targets: Vec<ResolvedTarget>,
        options: &AttachOptions,
    ) -> Result<Attachment, AttachError> {
        attach::attach(self, targets, options)
    }
}
