//! sonde beside libbpf (libbpf-rs, its vendored libbpf) and aya, in one run, on
//! the same targets with the same eBPF logic: a per-CPU counter indexed by the
//! attach cookie (sonde's `count`; `peer/count.bpf.c` for the peers, compiled by
//! clang). Runs are interleaved (sonde, libbpf, aya, sonde, ...) and each figure
//! keeps the median with min and max.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use sonde::{AttachOptions, AttachType, Cookie, Functions, Load, Object, ProbeSite, Tier};

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};

use crate::target::{self, Prologue, Running};
use crate::Opts;

/// The peers' program (`count_multi` and `count_single`), for libbpf.
const PEER_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/peer-count.bpf.o"));
/// `count_single` alone, for aya (0.14 has no uprobe_multi).
const PEER_SINGLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/peer-count-single.bpf.o"));

/// One figure's runs of one library: median, min, max.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct Stat {
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
pub struct Figure {
    pub figure: String,
    pub n: usize,
    pub unit: &'static str,
    pub sonde: Option<Stat>,
    pub libbpf: Option<Stat>,
    pub aya: Option<Stat>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lib {
    Sonde,
    Libbpf,
    Aya,
}

/// In the order of the per-library arrays (`lib as usize` indexes them).
const LIBS: [Lib; 3] = [Lib::Sonde, Lib::Libbpf, Lib::Aya];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Lets the kernel's uprobe registration go quiet before a timed attach: the
/// first registration after a quiet period waits for an RCU grace period
/// (~10-40 ms here), so every library starts from the same state and pays it
/// alike instead of whichever runs first.
fn quiet() {
    std::thread::sleep(Duration::from_millis(150));
}

/// This thread's CPU time (user + system, the kernel's work for our syscalls
/// included; sleeping in a kernel wait excluded).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of one timed step.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
}

/// Starts timing: call [`Started::stop`] at the end of the step.
struct Started(Instant, Duration);

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
fn interleaved(runs: usize, mut f: impl FnMut(Lib) -> Result<Option<f64>>) -> Result<[Option<Stat>; 3]> {
    let mut v: [Vec<f64>; 3] = Default::default();
    let mut can = [true; 3];
    for _ in 0..runs {
        for (i, lib) in LIBS.into_iter().enumerate() {
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
fn stats(v: [Vec<f64>; 3]) -> [Option<Stat>; 3] {
    let [a, b, c] = v;
    [Stat::of(a), Stat::of(b), Stat::of(c)]
}

/// The name of `figure`'s CPU-time companion.
fn cpu_name(figure: &str) -> String {
    format!("{figure}, CPU time")
}

fn figure(figure: &str, n: usize, unit: &'static str, s: [Option<Stat>; 3]) -> Figure {
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

/// sonde's side: the CLI's `count` program, COUNTS sized to `n`.
pub(crate) fn sonde_object(n: usize) -> Result<Object> {
    // The maps `count` does not use at their least, as `sonde count` makes
    // them: the peers' objects have only the counter.
    let mut sizes = vec![("COUNTS", n.max(1) as u32), ("HIST", 1), ("MAX_NS", 1)];
    sizes.extend(crate::record::OPTIONAL_MAPS);
    Ok(Object::load_with(crate::PROBES, &sizes)?)
}

const MULTI: Load = Load::new(AttachType::UprobeMulti, Cookie::Native);

/// libbpf's side: the object opened from memory, COUNTS sized, only `prog` loaded.
fn libbpf_object(n: usize, prog: &str) -> Result<libbpf_rs::Object> {
    let mut open = libbpf_rs::ObjectBuilder::default().open_memory(PEER_OBJECT)?;
    for mut m in open.maps_mut() {
        if m.name() == "COUNTS" {
            m.set_max_entries(n.max(1) as u32)?;
        }
    }
    for mut p in open.progs_mut() {
        p.set_autoload(p.name() == prog);
    }
    Ok(open.load()?)
}

fn libbpf_prog<'a>(obj: &'a libbpf_rs::Object, name: &str) -> Result<libbpf_rs::ProgramMut<'a>> {
    obj.progs_mut().find(|p| p.name() == name).context("peer program")
}

/// aya's side: the object with COUNTS sized, `count_single` loaded.
fn aya_object(n: usize) -> Result<aya::Ebpf> {
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("COUNTS", n.max(1) as u32)
        .load(PEER_SINGLE)?;
    let p: &mut aya::programs::UProbe = ebpf.program_mut("count_single").context("peer program")?.try_into()?;
    p.load()?;
    Ok(ebpf)
}

/// Attaches aya's program to each point (one perf link each), cookies set.
fn aya_attach_each(
    p: &mut aya::programs::UProbe,
    points: Vec<UProbeAttachPoint<'_>>,
    exe: &Path,
    scope: UProbeScope,
) -> Result<Vec<aya::programs::uprobe::UProbeLinkId>> {
    points.into_iter().map(|pt| Ok(p.attach(pt, exe, scope)?)).collect()
}

fn aya_prog(ebpf: &mut aya::Ebpf) -> Result<&mut aya::programs::UProbe> {
    Ok(ebpf.program_mut("count_single").context("peer program")?.try_into()?)
}

/// Loading one cookie program (object, maps, program) of `n` entries.
fn load(runs: usize, n: usize) -> Result<[Figure; 2]> {
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let s = interleaved(runs, |lib| {
        let t = Started::now();
        match lib {
            Lib::Sonde => {
                let mut o = sonde_object(n)?;
                o.uprobe("count")?.load(MULTI)?;
            }
            Lib::Libbpf => drop(libbpf_object(n, "count_multi")?),
            Lib::Aya => drop(aya_object(n)?),
        }
        let t = t.stop();
        cpu[lib as usize].push(ms(t.cpu));
        Ok(Some(ms(t.wall)))
    })?;
    Ok([
        figure("load one cookie program", 1, "ms", s),
        figure(&cpu_name("load one cookie program"), 1, "ms", stats(cpu)),
    ])
}

/// sonde's attach of `sites` with `tier` (the program loaded beforehand, after a
/// quiet period), and its detach.
fn sonde_attach_detach(sites: &[ProbeSite], load: Load, tier: Tier) -> Result<(Timed, Duration)> {
    let mut o = sonde_object(sites.len())?;
    let p = o.uprobe("count")?;
    p.load(load)?;
    let sites = sites.to_vec();
    quiet();
    let t = Started::now();
    let att = p.attach_sites(sites, &AttachOptions::default().tier(tier))?;
    let a = t.stop();
    let t = Instant::now();
    drop(att);
    Ok((a, t.elapsed()))
}

/// libbpf's multi attach of `opts` to `exe` (the program loaded beforehand,
/// after a quiet period), and its detach.
fn libbpf_attach_detach(n: usize, exe: &Path, opts: libbpf_rs::UprobeMultiOpts) -> Result<(Timed, Duration)> {
    let obj = libbpf_object(n, "count_multi")?;
    let p = libbpf_prog(&obj, "count_multi")?;
    quiet();
    let t = Started::now();
    let link = p.attach_uprobe_multi_with_opts(-1, exe, "", opts)?;
    let a = t.stop();
    let t = Instant::now();
    drop(link);
    Ok((a, t.elapsed()))
}

/// Attaching (and detaching) `sites` with the multi link: by file offsets.
fn attach_offsets(runs: usize, exe: &Path, sites: &[ProbeSite]) -> Result<[Figure; 3]> {
    let n = sites.len();
    let offsets: Vec<u64> = sites.iter().map(|s| s.offset).collect();
    let cookies: Vec<u64> = sites.iter().map(|s| s.attach_cookie).collect();
    let mut detach = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let attach = interleaved(runs, |lib| {
        let (a, d) = match lib {
            Lib::Sonde => sonde_attach_detach(sites, MULTI, Tier::Multi)?,
            Lib::Libbpf => {
                let opts = libbpf_rs::UprobeMultiOpts {
                    offsets: offsets.iter().map(|o| *o as usize).collect(),
                    cookies: cookies.clone(),
                    ..Default::default()
                };
                libbpf_attach_detach(n, exe, opts)?
            }
            // aya 0.14 has no uprobe_multi.
            Lib::Aya => return Ok(None),
        };
        let i = lib as usize;
        detach[i].push(ms(d));
        cpu[i].push(ms(a.cpu));
        Ok(Some(ms(a.wall)))
    })?;
    Ok([
        figure("attach by offsets (multi)", n, "ms", attach),
        figure(&cpu_name("attach by offsets (multi)"), n, "ms", stats(cpu)),
        figure("detach (multi)", n, "ms", stats(detach)),
    ])
}

/// Attaching `names` of `exe` with the multi link, resolution included (sonde's
/// symbol cache cleared first: every library starts cold). A library taking
/// over `limit` is not run again at larger N.
fn attach_names(runs: usize, exe: &Path, names: &[String], slow: &mut [bool; 3]) -> Result<[Figure; 2]> {
    let n = names.len();
    let limit = Duration::from_secs(20);
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let s = interleaved(runs, |lib| {
        let i = lib as usize;
        if slow[i] {
            return Ok(None);
        }
        let d = match lib {
            Lib::Sonde => {
                let mut o = sonde_object(n)?;
                let p = o.uprobe("count")?;
                p.load(MULTI)?;
                sonde::resolve::cache::clear();
                quiet();
                let t = Started::now();
                let set = Functions::in_binary(exe).patterns(names.iter().cloned()).resolve()?;
                let att = p.attach_sites(set.targets(), &AttachOptions::default().tier(Tier::Multi))?;
                let d = t.stop();
                drop(att);
                d
            }
            Lib::Libbpf => {
                let opts = libbpf_rs::UprobeMultiOpts {
                    syms: names.to_vec(),
                    cookies: (0..n as u64).collect(),
                    ..Default::default()
                };
                libbpf_attach_detach(n, exe, opts)?.0
            }
            Lib::Aya => return Ok(None),
        };
        if d.wall > limit {
            slow[i] = true;
        }
        cpu[i].push(ms(d.cpu));
        Ok(Some(ms(d.wall)))
    })?;
    Ok([
        figure("attach by names (multi)", n, "ms", s),
        figure(&cpu_name("attach by names (multi)"), n, "ms", stats(cpu)),
    ])
}

/// Attaching `sites` one perf link each (5.15+), and detaching them.
fn attach_perf_links(runs: usize, exe: &Path, sites: &[ProbeSite]) -> Result<[Figure; 3]> {
    let n = sites.len();
    let mut detach = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let attach = interleaved(runs, |lib| {
        let (a, d) = match lib {
            Lib::Sonde => {
                let load = Load::new(AttachType::PerfEvent, Cookie::Native);
                sonde_attach_detach(sites, load, Tier::PerfLink)?
            }
            Lib::Libbpf => {
                let obj = libbpf_object(n, "count_single")?;
                let p = libbpf_prog(&obj, "count_single")?;
                quiet();
                let t = Started::now();
                let mut links = Vec::with_capacity(n);
                for s in sites {
                    let opts = libbpf_rs::UprobeOpts {
                        cookie: s.attach_cookie,
                        ..Default::default()
                    };
                    links.push(p.attach_uprobe_with_opts(-1, exe, s.offset as usize, opts)?);
                }
                let a = t.stop();
                let t = Instant::now();
                drop(links);
                (a, t.elapsed())
            }
            Lib::Aya => {
                let mut ebpf = aya_object(n)?;
                let p = aya_prog(&mut ebpf)?;
                quiet();
                let t = Started::now();
                let points: Vec<UProbeAttachPoint> = sites
                    .iter()
                    .map(|s| UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(s.offset),
                        cookie: Some(s.attach_cookie),
                    })
                    .collect();
                let ids = aya_attach_each(p, points, exe, UProbeScope::AllProcesses)?;
                let a = t.stop();
                let t = Instant::now();
                for id in ids {
                    p.detach(id)?;
                }
                (a, t.elapsed())
            }
        };
        let i = lib as usize;
        detach[i].push(ms(d));
        cpu[i].push(ms(a.cpu));
        Ok(Some(ms(a.wall)))
    })?;
    Ok([
        figure("attach (perf link per target)", n, "ms", attach),
        figure(&cpu_name("attach (perf link per target)"), n, "ms", stats(cpu)),
        figure("detach (perf link per target)", n, "ms", stats(detach)),
    ])
}

/// ns per call of f0 with each library's program attached (multi, this process
/// only), minus nothing: the unprobed loop is its own row.
fn per_hit(runs: usize, calls: u64, dir: &Path) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for prologue in Prologue::ALL {
        // A single-stepped entry costs ~10 µs a hit in a VM: fewer calls.
        let calls = if prologue == Prologue::Mov { calls / 10 } else { calls }.max(1000);
        let exe = target::build(dir, 10, prologue)?;
        let f0 = crate::measure::resolve_numbered(&exe)?
            .into_iter()
            .next()
            .context("f0")?;
        let mut unprobed = Vec::new();
        let s = interleaved(runs, |lib| {
            unprobed.push(Running::spawn(&exe, calls, 0, 0)?.go()? as f64 / calls as f64);
            let app = Running::spawn(&exe, calls, 0, 0)?;
            let pid = app.pid();
            let ns = match lib {
                Lib::Sonde => {
                    let mut o = sonde_object(1)?;
                    let att = o
                        .uprobe("count")?
                        .attach_sites(vec![f0.clone()], &AttachOptions::default().tier(Tier::Multi).pid(pid))?;
                    let ns = app.go()?;
                    drop(att);
                    ns
                }
                Lib::Libbpf => {
                    let obj = libbpf_object(1, "count_multi")?;
                    let p = libbpf_prog(&obj, "count_multi")?;
                    let opts = libbpf_rs::UprobeMultiOpts {
                        offsets: vec![f0.offset as usize],
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
                        location: UProbeAttachLocation::AbsoluteOffset(f0.offset),
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

/// The first attach of a fresh process, feature probing included: a child
/// process per run (`sonde-bench --first-attach LIB EXE`).
fn first_attach(runs: usize, exe: &Path) -> Result<Figure> {
    let me = std::env::current_exe()?;
    let s = interleaved(runs, |lib| {
        let name = match lib {
            Lib::Sonde => "sonde",
            Lib::Libbpf => "libbpf",
            Lib::Aya => "aya",
        };
        quiet();
        let out = std::process::Command::new(&me)
            .args(["--first-attach", name])
            .arg(exe)
            .output()?;
        if !out.status.success() {
            return Err(anyhow!(
                "first attach ({name}): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(Some(text.trim().parse::<f64>().context("first-attach output")?))
    })?;
    Ok(figure(
        "first attach of a process, feature probing included (10 functions)",
        10,
        "ms",
        s,
    ))
}

/// What sonde's feature probing adds to a first attach: the probes a multi plan
/// asks for, in a fresh process each run (the peers probe inside their attach).
fn probing_cost(runs: usize) -> Result<Figure> {
    let me = std::env::current_exe()?;
    let mut v = Vec::new();
    for _ in 0..runs {
        let out = std::process::Command::new(&me)
            .args(["--first-attach", "probe", "-"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        v.push(text.trim().parse::<f64>().context("probe-cost output")?);
    }
    Ok(figure(
        "feature probing a multi plan needs, fresh process (sonde)",
        1,
        "ms",
        [Stat::of(v), None, None],
    ))
}

/// The kernel's own wait at the first uprobe registration after an idle
/// period (one RCU grace period in `rcu_sync_enter`): a one-target sonde attach
/// after 150 ms of quiet minus the same attach right after it. Every library
/// pays it alike, once per attach after idle.
fn registration_after_idle(runs: usize, sites: &[ProbeSite]) -> Result<Figure> {
    let one = &sites[..1.min(sites.len())];
    let mut v = Vec::new();
    for _ in 0..runs.max(3) {
        let mut objects = [sonde_object(1)?, sonde_object(1)?];
        let mut times = Vec::new();
        let mut held = Vec::new();
        quiet();
        // The second attach follows the first at once, both held: it finds the
        // registration path warm.
        for o in &mut objects {
            let p = o.uprobe("count")?;
            p.load(MULTI)?;
            let t = Instant::now();
            held.push(p.attach_sites(one.to_vec(), &AttachOptions::default().tier(Tier::Multi))?);
            times.push(t.elapsed());
        }
        drop(held);
        v.push(ms(times[0].saturating_sub(times[1])));
    }
    Ok(figure(
        "kernel wait at the first registration after idle",
        1,
        "ms",
        [Stat::of(v), None, None],
    ))
}

/// The child side of [`first_attach`]: loads and attaches to `f0..f9` of `exe`
/// with `lib`, printing the milliseconds from the first library call.
pub fn first_attach_child(lib: &str, exe: &Path) -> Result<()> {
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let t = Instant::now();
    match lib {
        "probe" => {
            let f = sonde::Features::current();
            let plan_needs = [sonde::Feature::UprobeMulti, sonde::Feature::BpfCookie];
            let all = plan_needs.iter().all(|x| f.has(*x));
            println!("{:.3}", ms(t.elapsed()));
            std::hint::black_box(all);
        }
        "sonde" => {
            let mut o = sonde_object(10)?;
            let set = Functions::in_binary(exe).patterns(names.iter().cloned()).resolve()?;
            let att = o
                .uprobe("count")?
                .attach_sites(set.targets(), &AttachOptions::default())?;
            println!("{:.3}", ms(t.elapsed()));
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
            println!("{:.3}", ms(t.elapsed()));
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
            println!("{:.3}", ms(t.elapsed()));
            for id in ids {
                p.detach(id)?;
            }
        }
    }
    Ok(())
}

/// Every peer figure.
pub fn all(opts: &Opts, exe: &Path, sites: &[ProbeSite]) -> Result<Vec<Figure>> {
    let runs = if opts.quick { 1 } else { 7 };
    let ns: &[usize] = if opts.quick { &[10] } else { &[10, 1_000, 10_000] };
    let dir = opts.out.join("targets");
    let mut out = load(runs, sites.len())?.to_vec();
    let mut slow = [false; 3];
    for &n in ns.iter().filter(|&&n| n <= sites.len()) {
        out.extend(attach_offsets(runs, exe, &sites[..n])?);
        let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        out.extend(attach_names(runs, exe, &names, &mut slow)?);
    }
    // Per-target links detach in ~0.1 s each: 10 is enough to compare.
    out.extend(attach_perf_links(runs, exe, &sites[..10.min(sites.len())])?);
    let calls = if opts.quick { 10_000 } else { 1_000_000 };
    out.extend(per_hit(runs, calls, &dir)?);
    out.push(first_attach(runs, exe)?);
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
fn leads(f: &Figure, all: &[Figure]) -> Option<bool> {
    let sonde = f.sonde?;
    let peers = [f.libbpf, f.aya];
    // Unprobed loops and CPU-time companions are context, not contests: the
    // companion decides only beside its wall-time figure.
    if peers.iter().all(Option::is_none) || f.figure.contains("unprobed") || f.figure.ends_with("CPU time") {
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
