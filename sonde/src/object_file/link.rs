//! Linking one program: its entry function, then every function it calls,
//! appended, with call offsets fixed and map references collected.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;

use object::SectionIndex;
use sonde_abi::Insn;

use super::{MapReloc, MapSpec, ProgramKind, ProgramSpec, SpecError, MAX_OBJECT_INSNS, MAX_PROGRAM_INSNS};

/// An object parsed but not linked: its maps, its code sections and the
/// entry of each program, linked one program at a time when asked for
/// ([`Unlinked::link`]). An object loaded from static bytes borrows its code;
/// otherwise the code sections alone are copied ([`Unlinked::into_owned`]).
pub(crate) struct Unlinked<'a> {
    /// The `license` section.
    pub(crate) license: CString,
    /// Maps, declared ones first.
    pub(crate) maps: Vec<MapSpec>,
    pub(super) code: HashMap<SectionIndex, CodeSection<'a>>,
    /// What relocations point at, one per symbol (code sections' `relocs`
    /// index it).
    pub(super) targets: Vec<Target<'a>>,
    /// The `maps` section and its maps by offset (local maps are reached
    /// through the section's symbol).
    pub(super) maps_at: (Option<SectionIndex>, HashMap<u64, usize>),
    /// Global-data maps by section.
    pub(super) data_maps: HashMap<SectionIndex, usize>,
    /// Programs by name.
    pub(crate) entries: Vec<ProgramEntry>,
}

/// Where a program starts: a function symbol in a program section.
pub(crate) struct ProgramEntry {
    /// Function name.
    pub(crate) name: String,
    pub(super) section: SectionIndex,
    /// Instruction index in the section.
    pub(super) start: usize,
    /// From the section name.
    pub(crate) kind: ProgramKind,
}

impl Unlinked<'_> {
    /// The same object owning its code sections (a copy of those alone).
    pub(crate) fn into_owned(self) -> Unlinked<'static> {
        let code = self
            .code
            .into_iter()
            .map(|(i, cs)| {
                let code = Cow::Owned(cs.code.into_owned());
                let name = Cow::Owned(cs.name.into_owned());
                (i, CodeSection { code, name, ..cs })
            })
            .collect();
        let targets = self
            .targets
            .into_iter()
            .map(|t| Target {
                name: Cow::Owned(t.name.into_owned()),
                ..t
            })
            .collect();
        Unlinked {
            code,
            targets,
            license: self.license,
            maps: self.maps,
            maps_at: self.maps_at,
            data_maps: self.data_maps,
            entries: self.entries,
        }
    }

    /// Links the program `entry`; `linked` counts the instructions linked so
    /// far, held to [`MAX_OBJECT_INSNS`].
    pub(crate) fn link(&self, entry: &ProgramEntry, linked: &mut usize) -> Result<ProgramSpec, SpecError> {
        let (insns, relocs) = link(self, entry.section, entry.start).map_err(|e| match e {
            LinkError::Obj(e) => e,
            LinkError::TooLarge => SpecError::ProgramTooLarge {
                program: entry.name.clone(),
                limit: MAX_PROGRAM_INSNS,
            },
        })?;
        *linked = linked.saturating_add(insns.len());
        if *linked > MAX_OBJECT_INSNS {
            return Err(SpecError::ObjectTooLarge {
                limit: MAX_OBJECT_INSNS,
            });
        }
        Ok(ProgramSpec {
            name: entry.name.clone(),
            section: self.code[&entry.section].name.to_string(),
            kind: entry.kind.clone(),
            insns,
            relocs,
        })
    }
}

/// A code section: its instructions (the object's own bytes, decoded as a
/// program is linked: only the code a program reaches is copied) and
/// relocations by instruction index.
pub(super) struct CodeSection<'a> {
    /// Borrowed from the object's bytes until [`Unlinked::into_owned`].
    pub(super) name: Cow<'a, str>,
    /// Whole instructions (checked when parsed).
    pub(super) code: Cow<'a, [u8]>,
    /// `(instruction, index in [`Unlinked::targets`])`, one per instruction,
    /// in instruction order: a function's are walked as one range beside its
    /// instructions (no lookup per instruction).
    pub(super) relocs: Vec<(usize, u32)>,
    /// Function start index to length, from the symbol table.
    pub(super) funcs: BTreeMap<usize, usize>,
}

impl CodeSection<'_> {
    /// Instructions in the section.
    pub(super) fn len(&self) -> usize {
        self.code.len() / 8
    }

    /// The instructions `range` (within the section).
    fn insns(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = Insn> + '_ {
        self.code[range.start * 8..range.end * 8]
            .chunks_exact(8)
            .map(|c| Insn::from_bytes(c.try_into().expect("chunks of 8")))
    }
}

/// What a relocation points at: a symbol.
pub(super) struct Target<'a> {
    pub(super) section: Option<SectionIndex>,
    pub(super) value: u64,
    /// The declared map the symbol names, if any.
    pub(super) map: Option<usize>,
    /// For error messages; borrowed until [`Unlinked::into_owned`].
    pub(super) name: Cow<'a, str>,
}

enum LinkError {
    Obj(SpecError),
    TooLarge,
}

impl From<SpecError> for LinkError {
    fn from(e: SpecError) -> Self {
        LinkError::Obj(e)
    }
}

/// Builds one program: the entry function, then every function it calls
/// (transitively) appended, with call offsets fixed and map references collected.
/// Stops at [`MAX_PROGRAM_INSNS`].
fn link(
    object: &Unlinked<'_>,
    entry_sec: SectionIndex,
    entry_start: usize,
) -> Result<(Vec<Insn>, Vec<MapReloc>), LinkError> {
    let Unlinked {
        code,
        targets,
        maps_at,
        data_maps,
        ..
    } = object;
    let mut out: Vec<Insn> = Vec::new();
    let mut relocs = Vec::new();
    let mut placed: HashMap<(SectionIndex, usize), usize> = HashMap::new();
    let mut queue = vec![(entry_sec, entry_start)];
    // (position of the call in `out`, callee)
    let mut calls: Vec<(usize, (SectionIndex, usize))> = Vec::new();

    while let Some((sec, start)) = queue.pop() {
        if placed.contains_key(&(sec, start)) {
            continue;
        }
        let cs = &code[&sec];
        let bad = |insn: usize, reason: String| SpecError::BadRelocation {
            section: cs.name.to_string(),
            insn,
            reason,
        };
        let len = *cs
            .funcs
            .get(&start)
            .ok_or_else(|| bad(start, "call target is not the start of a function".into()))?;
        if start.checked_add(len).is_none_or(|end| end > cs.len()) || len == 0 {
            return Err(bad(start, "function extends past its section".into()).into());
        }
        if out.len() + len > MAX_PROGRAM_INSNS {
            return Err(LinkError::TooLarge);
        }
        let base = out.len();
        placed.insert((sec, start), base);
        out.reserve(len);
        let first = cs.relocs.partition_point(|&(at, _)| at < start);
        let mut in_function = cs.relocs[first..]
            .iter()
            .take_while(|&&(at, _)| at < start + len)
            .peekable();
        for (i, insn) in (start..start + len).zip(cs.insns(start..start + len)) {
            let pos = base + (i - start);
            let reloc = in_function
                .next_if(|&&(at, _)| at == i)
                .and_then(|&(_, t)| targets.get(t as usize));
            match (reloc, insn.is_ld_imm64(), insn.is_pseudo_call()) {
                (Some(t), true, _) => {
                    if i + 1 >= start + len {
                        return Err(bad(i, "ld_imm64 is missing its second half".into()).into());
                    }
                    // A map by its symbol; or a local one through the `maps`
                    // section's symbol, the map's offset in the instruction.
                    let local = (t.section.is_some() && t.section == maps_at.0)
                        .then(|| u64::try_from(i128::from(t.value) + i128::from(insn.imm)).ok())
                        .flatten()
                        .and_then(|at| maps_at.1.get(&at));
                    if let Some(map) = t.map.or(local.copied()) {
                        relocs.push(MapReloc {
                            insn: pos,
                            map,
                            offset: 0,
                        });
                    } else if let Some(&map) = t.section.and_then(|s| data_maps.get(&s)) {
                        let offset = i128::from(t.value) + i128::from(insn.imm);
                        let offset =
                            u32::try_from(offset).map_err(|_| bad(i, format!("offset {offset} into `{}`", t.name)))?;
                        relocs.push(MapReloc { insn: pos, map, offset });
                    } else {
                        return Err(bad(i, format!("`{}` is neither a map nor global data", t.name)).into());
                    }
                }
                (Some(t), false, true) => {
                    let tsec = t
                        .section
                        .filter(|s| code.contains_key(s))
                        .ok_or_else(|| bad(i, format!("call to `{}` outside any code section", t.name)))?;
                    let callee = i128::from(t.value / 8) + i128::from(insn.imm) + 1;
                    let callee = usize::try_from(callee).map_err(|_| bad(i, "negative call target".into()))?;
                    calls.push((pos, (tsec, callee)));
                    queue.push((tsec, callee));
                }
                (None, false, true) => {
                    let callee = i as i128 + i128::from(insn.imm) + 1;
                    let callee = usize::try_from(callee).map_err(|_| bad(i, "negative call target".into()))?;
                    calls.push((pos, (sec, callee)));
                    queue.push((sec, callee));
                }
                (Some(t), false, false) => {
                    return Err(bad(
                        i,
                        format!("relocation to `{}` on an instruction that takes none", t.name),
                    )
                    .into());
                }
                _ => {}
            }
            // One pass: copied as it is walked (`pos` is where it lands).
            out.push(insn);
        }
    }
    for (pos, callee) in calls {
        let Some(&target) = placed.get(&callee) else {
            continue; // unreachable: every queued callee was placed or failed
        };
        out[pos].imm = (target as i64 - pos as i64 - 1) as i32;
    }
    Ok((out, relocs))
}
