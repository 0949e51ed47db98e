//! The cost of one probe hit, side by side.

use super::*;
use crate::probes::Program;
use crate::sites::*;
use crate::target::{self, Prologue, Running};
use anyhow::{anyhow, Context, Result};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use sonde::{AttachOptions, Tier};
use std::path::Path;

/// ns per call of f0 with each library's program attached (multi, this process
/// only), minus nothing: the unprobed loop is its own row.
pub(crate) fn per_hit(runs: usize, calls: u64, dir: &Path) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for prologue in Prologue::ALL {
        // A single-stepped entry costs ~10 µs a hit in a VM: fewer calls.
        let calls = if prologue.single_stepped() { calls / 10 } else { calls }.max(1000);
        let exe = target::build(dir, 10, prologue)?;
        let f0 = crate::sites::resolve_numbered(&exe)?.into_iter().next().context("f0")?;
        // The peers probe the symbol's address, as they do when given a name;
        // sonde where it places the probe (past an endbr64: checked here).
        let entry = sonde::Functions::in_binary(&exe)
            .pattern("f0")
            .resolve()?
            .iter()
            .next()
            .context("f0")?
            .file_offset;
        let skip = if prologue == Prologue::Endbr64 { 4 } else { 0 };
        if f0.offset != entry + skip {
            return Err(anyhow!(
                "{}: sonde probes f0 at {:#x}, not {:#x} ({}): refusing to report a per-hit figure",
                exe.display(),
                f0.offset,
                entry + skip,
                prologue.name()
            ));
        }
        let mut unprobed = Vec::new();
        let s = interleaved(runs, |lib| {
            unprobed.push(Running::spawn(&exe, calls, 0, 0)?.go()? as f64 / calls as f64);
            let app = Running::spawn(&exe, calls, 0, 0)?;
            let pid = app.pid();
            let ns = match lib {
                Lib::Sonde => {
                    let mut o = sonde_object(1)?;
                    let att = o
                        .uprobe(Program::CountAll.name())?
                        .attach_sites(vec![f0.clone()], &AttachOptions::default().tier(Tier::Multi).pid(pid))?;
                    let ns = app.go()?;
                    drop(att);
                    ns
                }
                Lib::Libbpf => {
                    let obj = libbpf_object(1, "count_multi")?;
                    let p = libbpf_prog(&obj, "count_multi")?;
                    let opts = libbpf_rs::UprobeMultiOpts {
                        offsets: vec![entry as usize],
                        cookies: vec![0],
                        ..Default::default()
                    };
                    let link = p.attach_uprobe_multi_with_opts(pid as i32, &exe, "", opts)?;
                    let ns = app.go()?;
                    drop(link);
                    ns
                }
                Lib::Aya => {
                    let mut ebpf = aya_object(1)?;
                    let p = aya_prog(&mut ebpf)?;
                    let point = UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(entry),
                        cookie: Some(0),
                    };
                    let scope =
                        UProbeScope::OneProcess(std::num::NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
                    let id = p.attach(point, &exe, scope)?;
                    let ns = app.go()?;
                    p.detach(id)?;
                    ns
                }
            };
            Ok(Some(ns as f64 / calls as f64))
        })?;
        let name = format!("per hit, {} entry (probed call)", prologue.name());
        out.push(figure(&name, calls as usize, "ns", s));
        let u = Stat::of(unprobed);
        out.push(figure(
            &format!("per hit, {} entry (unprobed call)", prologue.name()),
            calls as usize,
            "ns",
            [u, u, u],
        ));
    }
    Ok(out)
}
