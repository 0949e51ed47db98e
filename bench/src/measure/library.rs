//! Library figures: cookies against a program per function, tiers, per-hit cost, resolution.

use super::*;
use crate::opts::Opts;
use crate::probes::{Map, Program};
use crate::sites::*;
use crate::target::{self, Prologue, Running};
use crate::util::*;
use anyhow::{bail, Result};
use sonde::resolve::{cache, SymbolTable};
use sonde::{AttachOptions, AttachType, Cookie, Functions, Load, ProbeSite, Tier};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub(crate) fn cookie_side(all: &[ProbeSite], n: usize) -> Result<Side> {
    let fds0 = open_fds();
    let mut object = load_object(n)?;
    let counts_mem = memlock(Map::Counts.of(&object)?.as_fd().as_raw_fd());
    let probe = object.uprobe(Program::CountAll.name())?;
    let t = Instant::now();
    let prog = probe.load(Load::new(AttachType::UprobeMulti, Cookie::Native))?;
    let load_ms = ms(t.elapsed());
    let info = prog.info()?;
    let mem = memlock(prog.as_fd().as_raw_fd()) + counts_mem;
    drop(prog);
    let t = Instant::now();
    let att = probe.attach_sites(first_targets(all, n), &AttachOptions::default().tier(Tier::Multi))?;
    let attach_ms = ms(t.elapsed());
    let fds = open_fds() - fds0;
    let t = Instant::now();
    att.detach();
    Ok(Side {
        programs: 1,
        load_ms,
        verified_insns: info.verified_insns as u64,
        memlock_bytes: mem,
        attach_ms,
        detach_ms: ms(t.elapsed()),
        detach_extrapolated: false,
        attach_extrapolated: false,
        open_fds: fds,
    })
}

/// One program per function: the same logic with the function's id baked in
/// as a constant, one perf event per function (the pre-cookie way).
pub(crate) fn per_function_side(all: &[ProbeSite], n: usize, attach: bool) -> Result<Side> {
    let fds0 = open_fds();
    let mut object = load_object(n)?;
    let counts_mem = memlock(Map::Counts.of(&object)?.as_fd().as_raw_fd());
    let probe = object.uprobe(Program::CountAll.name())?;
    let mut side = Side {
        programs: n,
        memlock_bytes: counts_mem,
        ..Side::default()
    };
    let t = Instant::now();
    let mut progs = Vec::with_capacity(n);
    for i in 0..n {
        progs.push(probe.load(Load::new(AttachType::PerfEvent, Cookie::Emulated(i as u64)))?);
    }
    side.load_ms = ms(t.elapsed());
    for p in &progs {
        side.verified_insns += p.info()?.verified_insns as u64;
        side.memlock_bytes += memlock(p.as_fd().as_raw_fd());
    }
    drop(progs);
    if !attach {
        // Attaching N perf events means N detaches of ~0.1 s each afterwards:
        // the caller extrapolates both from a smaller N.
        side.attach_extrapolated = true;
        side.detach_extrapolated = true;
        side.open_fds = open_fds() - fds0 + n;
        return Ok(side);
    }
    let t = Instant::now();
    let att = probe.attach_sites(first_targets(all, n), &AttachOptions::default().tier(Tier::Emulated))?;
    side.attach_ms = ms(t.elapsed());
    side.open_fds = open_fds() - fds0;
    let t = Instant::now();
    att.detach();
    side.detach_ms = ms(t.elapsed());
    Ok(side)
}

pub(crate) fn cookies(opts: &Opts, all: &[ProbeSite]) -> Result<Vec<CookieRow>> {
    let ns: &[usize] = if opts.quick { &[1, 10] } else { &[1, 10, 100, 1000] };
    let mut rows = Vec::new();
    let mut per_target: Option<(f64, f64)> = None;
    for &n in ns {
        let runs = if opts.quick {
            1
        } else if n >= 1000 {
            3
        } else {
            5
        };
        let mut c = Vec::new();
        let mut p = Vec::new();
        for run in 0..runs {
            c.push(cookie_side(all, n)?);
            // Per-function attach + detach (~0.1 s per probe) measured once, N <= 100.
            if run == 0 || n > 100 {
                p.push(per_function_side(all, n, n <= 100)?);
            }
        }
        let mut cookies = median_side(&c);
        let mut per_function = median_side(&p);
        cookies.detach_ms = median(c.iter().map(|s| s.detach_ms).collect());
        if n <= 100 {
            per_function.detach_ms = p[0].detach_ms;
            per_function.attach_ms = p[0].attach_ms;
            per_target = Some((p[0].attach_ms / n as f64, p[0].detach_ms / n as f64));
        } else {
            let (a, d) = per_target.unwrap_or((1.0, 108.0));
            per_function.attach_ms = a * n as f64;
            per_function.detach_ms = d * n as f64;
            per_function.attach_extrapolated = true;
            per_function.detach_extrapolated = true;
        }
        eprintln!(
            "cookies n={n}: load {:.2} vs {:.2} ms, memlock {} vs {} B",
            cookies.load_ms, per_function.load_ms, cookies.memlock_bytes, per_function.memlock_bytes
        );
        rows.push(CookieRow {
            n,
            cookies,
            per_function,
        });
    }
    Ok(rows)
}

pub(crate) fn median_side(v: &[Side]) -> Side {
    let m = |f: &dyn Fn(&Side) -> f64| median(v.iter().map(f).collect());
    Side {
        programs: v[0].programs,
        load_ms: m(&|s| s.load_ms),
        verified_insns: v[0].verified_insns,
        memlock_bytes: v[0].memlock_bytes,
        attach_ms: m(&|s| s.attach_ms),
        detach_ms: 0.0,
        detach_extrapolated: false,
        attach_extrapolated: false,
        open_fds: v[0].open_fds,
    }
}

pub(crate) fn tiers(opts: &Opts, exe: &Path) -> Result<Vec<TierRow>> {
    let mut rows = Vec::new();
    let multi_ns: &[usize] = if opts.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000, 10000]
    };
    for &n in multi_ns {
        let runs = if opts.quick { 1 } else { 5 };
        let (mut a, mut d) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let mut object = load_object(n)?;
            cache::clear();
            // Symbol resolution included: the binary's symbols read cold.
            let t = Instant::now();
            let all = resolve_numbered(exe)?;
            let att = object
                .uprobe(Program::CountAll.name())?
                .attach_sites(first_targets(&all, n), &AttachOptions::default().tier(Tier::Multi))?;
            a.push(ms(t.elapsed()));
            let t = Instant::now();
            att.detach();
            d.push(ms(t.elapsed()));
        }
        eprintln!(
            "tier multi n={n}: attach {:.2} ms, detach {:.2} ms",
            median(a.clone()),
            median(d.clone())
        );
        rows.push(TierRow {
            tier: "multi",
            n,
            attach_ms: median(a),
            detach_ms: median(d),
            extrapolated: false,
            runs,
        });
    }
    let all = resolve_numbered(exe)?;
    let per_ns: &[usize] = if opts.quick { &[2] } else { &[10, 100] };
    for tier in [Tier::PerfLink, Tier::Emulated, Tier::Tracefs] {
        let mut per_target = 0.0;
        for &n in per_ns {
            let runs = if n <= 10 && !opts.quick { 3 } else { 1 };
            let (mut a, mut d) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let mut object = load_object(n)?;
                let probe = object.uprobe(Program::CountAll.name())?;
                let t = Instant::now();
                let att = probe.attach_sites(first_targets(&all, n), &AttachOptions::default().tier(tier))?;
                a.push(ms(t.elapsed()));
                let t = Instant::now();
                att.detach();
                d.push(ms(t.elapsed()));
            }
            let (attach_ms, detach_ms) = (median(a), median(d));
            per_target = detach_ms / n as f64;
            eprintln!("tier {tier} n={n}: attach {attach_ms:.2} ms, detach {detach_ms:.2} ms");
            rows.push(TierRow {
                tier: tier.name(),
                n,
                attach_ms,
                detach_ms,
                extrapolated: false,
                runs,
            });
        }
        if !opts.quick {
            let last = rows.last().map_or(0.0, |r| r.attach_ms / r.n as f64);
            rows.push(TierRow {
                tier: tier.name(),
                n: 1000,
                attach_ms: last * 1000.0,
                detach_ms: per_target * 1000.0,
                extrapolated: true,
                runs: 0,
            });
        }
    }
    Ok(rows)
}

/// Loop of `calls` calls to f0, unprobed and probed by the cookie program (multi)
/// and by the baked-constant program (one perf event).
pub(crate) fn per_hit(opts: &Opts, dir: &Path) -> Result<Vec<HitRow>> {
    let calls: u64 = if opts.quick { 10_000 } else { 1_000_000 };
    let runs = if opts.quick { 1 } else { 3 };
    let _stats = sonde::programs::enable_stats()?;
    let mut rows = Vec::new();
    for prologue in Prologue::ALL {
        let exe = target::build(dir, 10, prologue)?;
        let all = resolve_numbered(&exe)?;
        let mut unprobed = Vec::new();
        let mut probed = [Vec::new(), Vec::new()];
        let mut prog = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            unprobed.push(Running::spawn(&exe, calls, 0, 0)?.go()? as f64 / calls as f64);
            for (k, tier) in [Tier::Multi, Tier::Emulated].into_iter().enumerate() {
                let mut object = load_object(10)?;
                let app = Running::spawn(&exe, calls, 0, 0)?;
                let att = object.uprobe(Program::CountAll.name())?.attach_sites(
                    first_targets(&all, 1),
                    &AttachOptions::default().tier(tier).pid(app.pid()),
                )?;
                let ns = app.go()?;
                probed[k].push(ns as f64 / calls as f64);
                let info = att.programs()[0].info()?;
                if info.run_count > 0 {
                    prog[k].push(info.run_time_ns as f64 / info.run_count as f64);
                }
                drop(att);
            }
        }
        let row = HitRow {
            prologue: prologue.name(),
            unprobed_ns: median(unprobed),
            cookie_probe_ns: median(probed[0].clone()),
            baked_probe_ns: median(probed[1].clone()),
            cookie_prog_ns: median(prog[0].clone()),
            baked_prog_ns: median(prog[1].clone()),
        };
        eprintln!(
            "per hit ({}): unprobed {:.1} ns, cookie {:.0} ns (program {:.1} ns), baked {:.0} ns (program {:.1} ns)",
            row.prologue,
            row.unprobed_ns,
            row.cookie_probe_ns,
            row.cookie_prog_ns,
            row.baked_probe_ns,
            row.baked_prog_ns
        );
        rows.push(row);
    }
    Ok(rows)
}

/// The largest ELF files with function symbols here, plus libc.
pub(crate) fn largest_binaries(limit: usize) -> Vec<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = [
        "/usr/lib",
        "/usr/bin",
        "/usr/libexec",
        "/usr/local",
        "/opt",
        "/root/.rustup/toolchains",
    ]
    .iter()
    .map(|d| (PathBuf::from(d), 0))
    .collect();
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && depth < 6 {
                stack.push((e.path(), depth + 1));
            } else if ft.is_file() {
                if let Ok(m) = e.metadata() {
                    if m.len() > 8 << 20 {
                        found.push((m.len(), e.path()));
                    }
                }
            }
        }
    }
    found.sort_by_key(|x| std::cmp::Reverse(x.0));
    found
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| {
            std::fs::File::open(p)
                .and_then(|mut f| {
                    let mut m = [0u8; 4];
                    f.read_exact(&mut m).map(|_| m)
                })
                .is_ok_and(|m| &m == b"\x7fELF")
        })
        .filter(|p| SymbolTable::read(p).is_ok_and(|t| t.functions().len() > 1000))
        .take(limit)
        .collect()
}

pub(crate) fn resolution(opts: &Opts) -> Result<Vec<ResolutionRow>> {
    let mut bins = largest_binaries(if opts.quick { 0 } else { 1 });
    bins.push(sonde::resolve::find_binary(Path::new("libc"), None)?);
    let mut rows = Vec::new();
    for bin in bins {
        let runs = if opts.quick { 1 } else { 5 };
        let mut cold = Vec::new();
        let mut table = None;
        for _ in 0..runs {
            cache::clear();
            let t = Instant::now();
            let set = Functions::in_binary(&bin).pattern("*").resolve()?;
            cold.push(ms(t.elapsed()));
            table = Some(set);
        }
        let Some(set) = table else { bail!("no run") };
        let glob = "*alloc*";
        let mut g = Vec::new();
        let mut matches = 0;
        for _ in 0..runs {
            let t = Instant::now();
            let s = Functions::in_binary(&bin).pattern(glob).resolve();
            g.push(ms(t.elapsed()));
            matches = s.map_or(0, |s| s.len());
        }
        let cold_ms = median(cold);
        let symbols = set.symbols().symbols_read();
        let row = ResolutionRow {
            binary: bin.display().to_string(),
            file_mb: std::fs::metadata(&bin).map_or(0.0, |m| m.len() as f64 / 1e6),
            symbols,
            functions: set.symbols().functions().len(),
            cold_ms,
            symbols_per_s: symbols as f64 / (cold_ms / 1e3),
            glob: glob.into(),
            glob_matches: matches,
            glob_ms: median(g),
        };
        eprintln!(
            "resolution {}: {} symbols in {:.1} ms; {glob} {:.1} ms",
            row.binary, row.symbols, row.cold_ms, row.glob_ms
        );
        rows.push(row);
    }
    Ok(rows)
}
