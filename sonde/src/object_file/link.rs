//! Linking one program: its entry function, then every function it calls,
//! appended, with call offsets fixed and map references collected.

use std::collections::{BTreeMap, HashMap};

use object::SectionIndex;
use sonde_abi::Insn;

use super::{MapReloc, SpecError, MAX_PROGRAM_INSNS};

/// A code section: its instructions and relocations by instruction index.
pub(super) struct CodeSection {
    pub(super) name: String,
    pub(super) insns: Vec<Insn>,
    /// In instruction order: a function's are walked as one range beside its
    /// instructions (no lookup per instruction).
    pub(super) relocs: BTreeMap<usize, Target>,
    /// Function start index to length, from the symbol table.
    pub(super) funcs: BTreeMap<usize, usize>,
}

/// What a relocation points at.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) section: Option<SectionIndex>,
    pub(super) value: u64,
    pub(super) name: String,
}

pub(super) enum LinkError {
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
pub(super) fn link(
    code: &HashMap<SectionIndex, CodeSection>,
    map_by_symbol: &HashMap<String, usize>,
    maps_at: (Option<SectionIndex>, &HashMap<u64, usize>),
    data_maps: &HashMap<SectionIndex, usize>,
    entry_sec: SectionIndex,
    entry_start: usize,
) -> Result<(Vec<Insn>, Vec<MapReloc>), LinkError> {
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
            section: cs.name.clone(),
            insn,
            reason,
        };
        let len = *cs
            .funcs
            .get(&start)
            .ok_or_else(|| bad(start, "call target is not the start of a function".into()))?;
        if start.checked_add(len).is_none_or(|end| end > cs.insns.len()) || len == 0 {
            return Err(bad(start, "function extends past its section".into()).into());
        }
        if out.len() + len > MAX_PROGRAM_INSNS {
            return Err(LinkError::TooLarge);
        }
        let base = out.len();
        placed.insert((sec, start), base);
        out.extend_from_slice(&cs.insns[start..start + len]);
        let mut in_function = cs.relocs.range(start..start + len).peekable();
        for i in start..start + len {
            let insn = cs.insns[i];
            let pos = base + (i - start);
            let reloc = in_function.next_if(|(at, _)| **at == i).map(|(_, t)| t);
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
                    if let Some(&map) = map_by_symbol.get(&t.name).or(local) {
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
