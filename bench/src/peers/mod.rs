//! sonde beside libbpf (libbpf-rs, its vendored libbpf) and aya, in one run, on
//! the same targets with the same eBPF logic: a per-CPU counter indexed by the
//! attach cookie (sonde's `count_all`; `peer/count.bpf.c` for the peers, compiled by
//! clang). Runs are interleaved, each library first in turn, and each figure
//! keeps the median with min and max.

use crate::opts::Opts;
use crate::probes::Program;
use anyhow::{Context, Result};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use serde::Serialize;
use sonde::{AttachOptions, AttachType, Cookie, Functions, Load, ProbeSite};
use std::path::Path;
use std::time::{Duration, Instant};

mod attach;
mod hits;

use crate::sites::*;
use crate::util::*;
use attach::*;
use hits::*;

/// The peers' program (`count_multi` and `count_single`), for libbpf.
/// The peers' counter map (`peer/count.bpf.c`).
const PEER_COUNTS: &str = "COUNTS";

pub(crate) const PEER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/peer-count.bpf.o"));

/// `count_single` alone, for aya (0.14 has no uprobe_multi).
pub(crate) const PEER_SINGLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/peer-count-single.bpf.o"));

/// One figure's runs of one library: median, min, max.
#[derive(Serialize, Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    fn of(mut v: Vec<f64>) -> Option<Stat> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stat {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One figure: sonde and each peer (`None` where the peer cannot do it).
#[derive(Serialize, Clone, Debug)]
pub(crate) struct Figure {
    pub figure: String,
    pub n: usize,
    pub unit: &'static str,
    pub sonde: Option<Stat>,
    pub libbpf: Option<Stat>,
    pub aya: Option<Stat>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Lib {
    Sonde,
    Libbpf,
    Aya,
}

/// In the order of the per-library arrays (`lib as usize` indexes them).
pub(crate) const LIBS: [Lib; 3] = [Lib::Sonde, Lib::Libbpf, Lib::Aya];

/// Lets the kernel's uprobe registration go quiet before a timed attach: the
/// first registration after a quiet period waits for an RCU grace period
/// (~10-40 ms here), so every library starts from the same state and pays it
/// alike instead of whichever runs first.
pub(crate) fn quiet() {
    std::thread::sleep(Duration::from_millis(150));
}

/// This thread's CPU time (user + system, the kernel's work for our syscalls
/// included; sleeping in a kernel wait excluded).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of one timed step.
#[derive(Clone, Copy)]
pub(crate) struct Timed {
    wall: Duration,
    cpu: Duration,
}

/// Starts timing: call [`Started::stop`] at the end of the step.
pub(crate) struct Started(Instant, Duration);

impl Started {
    fn now() -> Started {
        Started(Instant::now(), thread_cpu())
    }
    fn stop(&self) -> Timed {
        Timed {
            wall: self.0.elapsed(),
            cpu: thread_cpu().saturating_sub(self.1),
        }
    }
}

/// Runs `f` for each library `runs` times, interleaved; `None` from `f` means
/// the library cannot do it.
pub(crate) fn interleaved(runs: usize, mut f: impl FnMut(Lib) -> Result<Option<f64>>) -> Result<[Option<Stat>; 3]> {
    let mut v: [Vec<f64>; 3] = Default::default();
    let mut can = [true; 3];
    for run in 0..runs {
        // Each library goes first in turn: no library always follows the same
        // one's detach.
        for k in 0..LIBS.len() {
            let i = (run + k) % LIBS.len();
            let lib = LIBS[i];
            if !can[i] {
                continue;
            }
            match f(lib)? {
                Some(x) => v[i].push(x),
                None => can[i] = false,
            }
        }
    }
    let [a, b, c] = v;
    Ok([Stat::of(a), Stat::of(b), Stat::of(c)])
}

/// Statistics of each library's samples.
pub(crate) fn stats(v: [Vec<f64>; 3]) -> [Option<Stat>; 3] {
    let [a, b, c] = v;
    [Stat::of(a), Stat::of(b), Stat::of(c)]
}

/// The name of `figure`'s CPU-time companion.
pub(crate) fn cpu_name(figure: &str) -> String {
    format!("{figure}, CPU time")
}

pub(crate) fn figure(figure: &str, n: usize, unit: &'static str, s: [Option<Stat>; 3]) -> Figure {
    let [sonde, libbpf, aya] = s;
    let f = Figure {
        figure: figure.to_string(),
        n,
        unit,
        sonde,
        libbpf,
        aya,
    };
    let show = |s: Option<Stat>| s.map_or("–".to_string(), |s| format!("{:.3}", s.median));
    eprintln!(
        "peers: {figure} n={n}: sonde {} libbpf {} aya {} {unit}",
        show(f.sonde),
        show(f.libbpf),
        show(f.aya)
    );
    f
}

pub(crate) const MULTI: Load = Load::new(AttachType::UprobeMulti, Cookie::Native);

/// libbpf's side: the object opened from memory, COUNTS sized, only `prog` loaded.
pub(crate) fn libbpf_object(n: usize, prog: &str) -> Result<libbpf_rs::Object> {
    let mut open = libbpf_rs::ObjectBuilder::default().open_memory(PEER_OBJECT)?;
    for mut m in open.maps_mut() {
        if m.name() == PEER_COUNTS {
            m.set_max_entries(n.max(1) as u32)?;
        }
    }
    for mut p in open.progs_mut() {
        p.set_autoload(p.name() == prog);
    }
    Ok(open.load()?)
}

pub(crate) fn libbpf_prog<'a>(obj: &'a libbpf_rs::Object, name: &str) -> Result<libbpf_rs::ProgramMut<'a>> {
    obj.progs_mut().find(|p| p.name() == name).context("peer program")
}

/// aya's side: the object with COUNTS sized, `count_single` loaded.
pub(crate) fn aya_object(n: usize) -> Result<aya::Ebpf> {
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries(PEER_COUNTS, n.max(1) as u32)
        .load(PEER_SINGLE)?;
    let p: &mut aya::programs::UProbe = ebpf.program_mut("count_single").context("peer program")?.try_into()?;
    p.load()?;
    Ok(ebpf)
}

/// Attaches aya's program to each point (one perf link each), cookies set.
pub(crate) fn aya_attach_each(
    p: &mut aya::programs::UProbe,
    points: Vec<UProbeAttachPoint<'_>>,
    exe: &Path,
    scope: UProbeScope,
) -> Result<Vec<aya::programs::uprobe::UProbeLinkId>> {
    points.into_iter().map(|pt| Ok(p.attach(pt, exe, scope)?)).collect()
}

pub(crate) fn aya_prog(ebpf: &mut aya::Ebpf) -> Result<&mut aya::programs::UProbe> {
    Ok(ebpf.program_mut("count_single").context("peer program")?.try_into()?)
}

/// The child side of [`first_attach`]: loads and attaches to `f0..f9` of `exe`
/// with `lib`, printing the milliseconds from the first library call: wall
/// time, then this thread's CPU time (`probe`: wall time only).
pub fn first_attach_child(lib: &str, exe: &Path) -> Result<()> {
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let t = Started::now();
    let report = |t: &Started| {
        let d = t.stop();
        println!("{:.3} {:.3}", ms(d.wall), ms(d.cpu));
    };
    match lib {
        "probe" => {
            let f = sonde::Features::current();
            let plan_needs = [sonde::Feature::UprobeMulti, sonde::Feature::BpfCookie];
            let all = plan_needs.iter().all(|x| f.has(*x));
            println!("{:.3}", ms(t.stop().wall));
            std::hint::black_box(all);
        }
        "sonde" => {
            let mut o = sonde_object(10)?;
            let set = Functions::in_binary(exe).patterns(names).resolve()?;
            let att = o
                .uprobe(Program::CountAll.name())?
                .attach_sites(set.targets(), &AttachOptions::default())?;
            report(&t);
            drop(att);
        }
        "libbpf" => {
            let obj = libbpf_object(10, "count_multi")?;
            let p = libbpf_prog(&obj, "count_multi")?;
            let opts = libbpf_rs::UprobeMultiOpts {
                syms: names,
                cookies: (0..10).collect(),
                ..Default::default()
            };
            let link = p.attach_uprobe_multi_with_opts(-1, exe, "", opts)?;
            report(&t);
            drop(link);
        }
        _ => {
            let mut ebpf = aya_object(10)?;
            let p = aya_prog(&mut ebpf)?;
            let points: Vec<UProbeAttachPoint> = names
                .iter()
                .enumerate()
                .map(|(c, name)| UProbeAttachPoint {
                    location: UProbeAttachLocation::Symbol(name),
                    cookie: Some(c as u64),
                })
                .collect();
            let ids = aya_attach_each(p, points, exe, UProbeScope::AllProcesses)?;
            report(&t);
            for id in ids {
                p.detach(id)?;
            }
        }
    }
    Ok(())
}

/// The multi attach and detach of `f0..f<n-1>` of `exe`, `rounds` times: a
/// loop to profile (`--attach-loop`). `flags`: `names` (resolved cold each
/// round), `quiet` (a quiet period before each attach, as the bench does),
/// `libbpf` (libbpf's attach instead of sonde's), `both` (sonde and libbpf
/// alternating, each first every other round), `proc-path` (libbpf given
/// sonde's `/proc/PID/fd/N` name of the file instead of its path), `phases` (by names: each
/// round's resolve and targets CPU time), `resolve-only` (by names: no attach,
/// the resolve alone, as it runs without the kernel's work in between).
/// Prints the median CPU time per attach.
pub fn attach_loop(n: usize, rounds: usize, exe: &Path, flags: &[String]) -> Result<()> {
    let has = |f: &str| flags.iter().any(|x| x == f);
    let (by_names, pause) = (has("names"), has("quiet"));
    let (phases, resolve_only) = (has("phases"), has("resolve-only"));
    let libs: &[Lib] = match (has("both"), has("libbpf")) {
        (true, _) => &[Lib::Sonde, Lib::Libbpf],
        (false, true) => &[Lib::Libbpf],
        (false, false) => &[Lib::Sonde],
    };
    let sites = resolve_numbered(exe)?;
    let sites = &sites[..n.min(sites.len())];
    let proc_path = sonde_path(sites);
    let libbpf_exe = if has("proc-path") { proc_path.as_path() } else { exe };
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let mut o = sonde_object(n)?;
    let p = o.uprobe(Program::CountAll.name())?;
    p.load(MULTI)?;
    let obj = libbpf_object(n, "count_multi")?;
    let lp = libbpf_prog(&obj, "count_multi")?;
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        // Each library goes first every other round.
        for &lib in libs.iter().cycle().skip(round % libs.len()).take(libs.len()) {
            if pause {
                quiet();
            }
            if by_names {
                sonde::resolve::cache::clear();
            }
            // Each library's input, in the form its API takes, is made before
            // the clock starts: by offsets the sites (sonde) or the offsets and
            // cookies (libbpf), by names the names.
            let copied = if by_names { Vec::new() } else { sites.to_vec() };
            let patterns = if by_names && lib == Lib::Sonde {
                names.clone()
            } else {
                Vec::new()
            };
            let opts = match (lib, by_names) {
                (Lib::Libbpf, true) => libbpf_rs::UprobeMultiOpts {
                    syms: names.clone(),
                    cookies: (0..n as u64).collect(),
                    ..Default::default()
                },
                (Lib::Libbpf, false) => libbpf_rs::UprobeMultiOpts {
                    offsets: sites.iter().map(|s| s.offset as usize).collect(),
                    cookies: sites.iter().map(|s| s.attach_cookie).collect(),
                    ..Default::default()
                },
                _ => libbpf_rs::UprobeMultiOpts::default(),
            };
            let start = thread_cpu();
            if lib == Lib::Libbpf {
                let link = lp.attach_uprobe_multi_with_opts(-1, libbpf_exe, "", opts)?;
                cpu[lib as usize].push(thread_cpu() - start);
                drop(link);
                continue;
            }
            let sites = if by_names {
                let set = Functions::in_binary(exe).patterns(patterns).resolve()?;
                let resolved = thread_cpu() - start;
                let targets = set.targets();
                drop(set);
                if phases {
                    eprintln!(
                        "resolve {:.3} ms, with targets {:.3} ms",
                        ms(resolved),
                        ms(thread_cpu() - start)
                    );
                }
                targets
            } else {
                copied
            };
            if resolve_only {
                // The figure is the resolve and targets alone.
                cpu[lib as usize].push(thread_cpu() - start);
                continue;
            }
            let att = p.attach_sites(sites, &AttachOptions::default().tier(sonde::Tier::Multi))?;
            cpu[lib as usize].push(thread_cpu() - start);
            drop(att);
        }
    }
    for &lib in libs {
        let c = &mut cpu[lib as usize];
        c.sort_unstable();
        let median = c.get(c.len() / 2).copied().unwrap_or_default();
        println!(
            "{lib:?}: {:.3} ms CPU per attach of {n} (median of {rounds})",
            ms(median)
        );
    }
    Ok(())
}

/// `sonde-bench --load-loop N ROUNDS [sonde|libbpf]`: the cookie program
/// loaded ROUNDS times by sonde, then by libbpf (or only the one named); CPU
/// time per load of each.
pub fn load_loop(n: usize, rounds: usize, only: Option<&str>) -> Result<()> {
    let libs = match only {
        Some("sonde") => vec![Lib::Sonde],
        Some("libbpf") => vec![Lib::Libbpf],
        _ => vec![Lib::Sonde, Lib::Libbpf],
    };
    for lib in libs {
        let start = thread_cpu();
        for _ in 0..rounds {
            match lib {
                Lib::Sonde => {
                    let mut o = sonde_object(n)?;
                    o.uprobe(Program::CountAll.name())?.load(MULTI)?;
                }
                _ => drop(libbpf_object(n, "count_multi")?),
            }
        }
        println!(
            "{lib:?}: {:.3} ms CPU per load",
            ms(thread_cpu() - start) / rounds as f64
        );
    }
    Ok(())
}

/// Every peer figure.
pub fn all(opts: &Opts, exe: &Path, sites: &[ProbeSite]) -> Result<Vec<Figure>> {
    let runs = if opts.quick { 1 } else { 7 };
    let ns: &[usize] = if opts.quick { &[10] } else { &[10, 1_000, 10_000] };
    let dir = opts.out.join("targets");
    // A load is the library's work plus the kernel's per-CPU allocation of
    // the counter: at n = 10 the first shows, at n = 10,000 the second (2–3 ms,
    // spread several-fold from run to run): three times the runs for both.
    let mut out = load(runs * 3, 10.min(sites.len()))?.to_vec();
    if sites.len() > 10 {
        out.extend(load(runs * 3, sites.len())?);
    }
    let mut slow = [false; 3];
    for &n in ns.iter().filter(|&&n| n <= sites.len()) {
        // At n = 10 an attach is tens of microseconds of CPU, within the run-to-run
        // spread of the kernel's RCU work; at n = 10,000 the kernel's 10,000
        // registrations spread ±0.3 ms between runs for every library: three
        // times the runs at every n (a fifth of a second each) for a steadier median.
        let runs = runs * 3;
        out.extend(attach_offsets(runs, exe, &sites[..n])?);
        let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        out.extend(attach_names(runs, exe, &names, &mut slow)?);
    }
    // Per-target links detach in ~0.1 s each: 10 is enough to compare. Their
    // attach CPU time spreads 2–3× between runs for every library: twice the
    // runs (a second each per library).
    out.extend(attach_perf_links(runs * 2, exe, &sites[..10.min(sites.len())])?);
    // The detach the caller waits for, at 100 links (~11 s each in the kernel).
    let n = if opts.quick { 10 } else { 100 };
    out.extend(detach_per_target(runs.min(3), exe, &sites[..n.min(sites.len())])?);
    let calls = if opts.quick { 10_000 } else { 1_000_000 };
    out.extend(per_hit(runs, calls, &dir)?);
    // A fresh process's first attach is ~1 ms of CPU beside a random RCU
    // wait: three times the runs, as for the attach figures at n = 10.
    out.extend(first_attach(runs * 3, exe)?);
    out.push(probing_cost(runs)?);
    out.push(registration_after_idle(runs, sites)?);
    Ok(out)
}

/// The peer table for the report: each figure with the three libraries and
/// sonde's ratio to the best peer.
pub fn table(figures: &[Figure]) -> String {
    let cell = |s: Option<Stat>| {
        s.map_or("–".to_string(), |s| {
            if s.min == s.max {
                format!("{:.3}", s.median)
            } else {
                format!("{:.3} ({:.3}–{:.3})", s.median, s.min, s.max)
            }
        })
    };
    let ratio = |a: Option<Stat>, b: Option<Stat>| match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}", a.median / b.median),
        _ => "–".into(),
    };
    let mut s = String::from(
        "| figure | n | unit | sonde | libbpf | aya | sonde/libbpf | sonde/aya | sonde leads |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut behind = Vec::new();
    for f in figures {
        let verdict = match leads(f, figures) {
            Some(true) => "yes",
            Some(false) => {
                behind.push(format!("{} (n={})", f.figure, f.n));
                "no"
            }
            None => "–",
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {verdict} |\n",
            f.figure,
            f.n,
            f.unit,
            cell(f.sonde),
            cell(f.libbpf),
            cell(f.aya),
            ratio(f.sonde, f.libbpf),
            ratio(f.sonde, f.aya)
        ));
    }
    if behind.is_empty() {
        s.push_str("\nsonde leads or ties on every figure a peer can do (ratio ≤ 1.05; per hit: or within the peers' min–max; attach: or CPU time ratio ≤ 1.05 with the wall time inside the peer's min–max).\n");
    } else {
        s.push_str(&format!("\nsonde behind on: {}.\n", behind.join("; ")));
    }
    s
}

/// Whether sonde's median is at most 1.05 × every peer's; `None` where no peer
/// has the figure. Noise is allowed for where the kernel dominates: per hit,
/// sonde's min within the peer's max (the trap's cost); an attach whose wall
/// time is one random kernel wait (an RCU grace period, 5-40 ms), when sonde's
/// CPU time for the same runs is at most 1.05 × the peer's and its wall median
/// lies inside the peer's min–max.
pub(crate) fn leads(f: &Figure, all: &[Figure]) -> Option<bool> {
    let sonde = f.sonde?;
    let peers = [f.libbpf, f.aya];
    // Unprobed loops, CPU-time companions and the kernel's own detach time are
    // context, not contests: the companion decides only beside its wall-time figure.
    if peers.iter().all(Option::is_none)
        || f.figure.contains("unprobed")
        || f.figure.ends_with("CPU time")
        || f.figure.contains("until the kernel is done")
    {
        return None;
    }
    let per_hit = f.figure.starts_with("per hit");
    let cpu = all.iter().find(|c| c.n == f.n && c.figure == cpu_name(&f.figure));
    let cpu_peers = cpu.map(|c| [c.libbpf, c.aya]);
    Some(peers.iter().enumerate().all(|(i, p)| {
        let Some(p) = p else { return true };
        let cpu_leads = match (cpu.and_then(|c| c.sonde), cpu_peers.and_then(|c| c[i])) {
            (Some(s), Some(q)) => s.median <= 1.05 * q.median,
            _ => false,
        };
        sonde.median <= 1.05 * p.median || (per_hit && sonde.min <= p.max) || (cpu_leads && sonde.median <= p.max)
    }))
}
