//! Attach and detach, side by side: offsets, names, perf links, the first attach, feature probing.

use super::*;
use crate::probes::Program;
use crate::sites::*;
use anyhow::{anyhow, Context, Result};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use sonde::{AttachOptions, AttachType, Cookie, Functions, Load, ProbeSite, Tier};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Loading one cookie program (object, maps, program), its counter of `n`
/// entries (the figure's n).
pub(crate) fn load(runs: usize, n: usize) -> Result<[Figure; 2]> {
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let s = interleaved(runs, |lib| {
        let t = Started::now();
        match lib {
            Lib::Sonde => {
                let mut o = sonde_object(n)?;
                o.uprobe(Program::CountAll.name())?.load(MULTI)?;
            }
            Lib::Libbpf => drop(libbpf_object(n, "count_multi")?),
            Lib::Aya => drop(aya_object(n)?),
        }
        let t = t.stop();
        cpu[lib as usize].push(ms(t.cpu));
        Ok(Some(ms(t.wall)))
    })?;
    Ok([
        figure("load one cookie program", n, "ms", s),
        figure(&cpu_name("load one cookie program"), n, "ms", stats(cpu)),
    ])
}

/// sonde's attach of `sites` with `tier` (the program loaded beforehand, after a
/// quiet period), and its detach.
pub(crate) fn sonde_attach_detach(sites: &[ProbeSite], load: Load, tier: Tier) -> Result<(Timed, Duration)> {
    let mut o = sonde_object(sites.len())?;
    let p = o.uprobe(Program::CountAll.name())?;
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
pub(crate) fn libbpf_attach_detach(
    n: usize,
    exe: &Path,
    opts: libbpf_rs::UprobeMultiOpts,
) -> Result<(Timed, Duration)> {
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

/// The name sonde gives the kernel for the file of `sites` (`/proc/PID/fd/N`
/// of its opened descriptor): libbpf is handed it to measure that walk alone.
pub(crate) fn sonde_path(sites: &[ProbeSite]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let path = sites.first().map(|s| s.binary.kernel_path()).unwrap_or_default();
    PathBuf::from(std::ffi::OsStr::from_bytes(path.as_bytes()))
}

/// Attaching (and detaching) `sites` with the multi link: by file offsets.
/// Beside libbpf naming the file by its path, libbpf naming it as sonde does
/// (`/proc/PID/fd/N` of the file sonde opened, the walk its one-opened-file
/// guarantee costs the kernel at every link), CPU time only.
pub(crate) fn attach_offsets(runs: usize, exe: &Path, sites: &[ProbeSite]) -> Result<[Figure; 4]> {
    let n = sites.len();
    let offsets: Vec<u64> = sites.iter().map(|s| s.offset).collect();
    let cookies: Vec<u64> = sites.iter().map(|s| s.attach_cookie).collect();
    let opts = || libbpf_rs::UprobeMultiOpts {
        offsets: offsets.iter().map(|o| *o as usize).collect(),
        cookies: cookies.clone(),
        ..Default::default()
    };
    let proc_path = sonde_path(sites);
    let mut detach = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let mut same_path = [Vec::new(), Vec::new(), Vec::new()];
    let attach = interleaved(runs, |lib| {
        let (a, d) = match lib {
            Lib::Sonde => sonde_attach_detach(sites, MULTI, Tier::Multi)?,
            Lib::Libbpf => {
                // Each after its own quiet period: neither follows the other's detach warm.
                let (a, _) = libbpf_attach_detach(n, &proc_path, opts())?;
                same_path[Lib::Libbpf as usize].push(ms(a.cpu));
                libbpf_attach_detach(n, exe, opts())?
            }
            // aya 0.14 has no uprobe_multi.
            Lib::Aya => return Ok(None),
        };
        let i = lib as usize;
        detach[i].push(ms(d));
        cpu[i].push(ms(a.cpu));
        Ok(Some(ms(a.wall)))
    })?;
    same_path[Lib::Sonde as usize] = cpu[Lib::Sonde as usize].clone();
    Ok([
        figure("attach by offsets (multi)", n, "ms", attach),
        figure(&cpu_name("attach by offsets (multi)"), n, "ms", stats(cpu)),
        figure(
            &cpu_name("attach by offsets (multi), libbpf given sonde's /proc/PID/fd/N name of the file"),
            n,
            "ms",
            stats(same_path),
        ),
        figure("detach (multi)", n, "ms", stats(detach)),
    ])
}

/// Attaching `names` of `exe` with the multi link, resolution included (sonde's
/// symbol cache cleared first: every library starts cold). A library taking
/// over `limit` is not run again at larger N.
pub(crate) fn attach_names(runs: usize, exe: &Path, names: &[String], slow: &mut [bool; 3]) -> Result<[Figure; 2]> {
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
                let p = o.uprobe(Program::CountAll.name())?;
                p.load(MULTI)?;
                sonde::resolve::cache::clear();
                // The names as the API takes them, made before the clock as
                // libbpf's `syms` are.
                let patterns = names.to_vec();
                quiet();
                let t = Started::now();
                let set = Functions::in_binary(exe).patterns(patterns).resolve()?;
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

/// libbpf's perf link per site, each with its cookie.
fn libbpf_attach_each(p: &libbpf_rs::ProgramMut<'_>, exe: &Path, sites: &[ProbeSite]) -> Result<Vec<libbpf_rs::Link>> {
    sites
        .iter()
        .map(|s| {
            let opts = libbpf_rs::UprobeOpts {
                cookie: s.attach_cookie,
                ..Default::default()
            };
            Ok(p.attach_uprobe_with_opts(-1, exe, s.offset as usize, opts)?)
        })
        .collect()
}

/// aya's attach points for `sites`: file offsets with their cookies.
fn aya_points(sites: &[ProbeSite]) -> Vec<UProbeAttachPoint<'static>> {
    sites
        .iter()
        .map(|s| UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(s.offset),
            cookie: Some(s.attach_cookie),
        })
        .collect()
}

/// Attaching `sites` one perf link each (5.15+), and detaching them.
pub(crate) fn attach_perf_links(runs: usize, exe: &Path, sites: &[ProbeSite]) -> Result<[Figure; 3]> {
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
                let links = libbpf_attach_each(&p, exe, sites)?;
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
                let ids = aya_attach_each(p, aya_points(sites), exe, UProbeScope::AllProcesses)?;
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

/// The first attach of a fresh process, feature probing included: a child
/// process per run (`sonde-bench --first-attach LIB EXE`).
pub(crate) fn first_attach(runs: usize, exe: &Path) -> Result<[Figure; 2]> {
    let me = std::env::current_exe()?;
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
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
        // "WALL CPU", in milliseconds.
        let text = String::from_utf8_lossy(&out.stdout);
        let mut v = text.split_whitespace().map(str::parse::<f64>);
        let (Some(Ok(wall)), Some(Ok(c))) = (v.next(), v.next()) else {
            return Err(anyhow!("first attach ({name}): output {text:?}"));
        };
        cpu[lib as usize].push(c);
        Ok(Some(wall))
    })?;
    let name = "first attach of a process, feature probing included (10 functions)";
    Ok([figure(name, 10, "ms", s), figure(&cpu_name(name), 10, "ms", stats(cpu))])
}

/// What sonde's feature probing adds to a first attach: the probes a multi plan
/// asks for, in a fresh process each run (the peers probe inside their attach).
pub(crate) fn probing_cost(runs: usize) -> Result<Figure> {
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
pub(crate) fn registration_after_idle(runs: usize, sites: &[ProbeSite]) -> Result<Figure> {
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
            let p = o.uprobe(Program::CountAll.name())?;
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

/// Waits for process `pid` (not a child: a detach worker) to exit, through a
/// pidfd (5.3+), else by watching `/proc`.
fn wait_gone(pid: u32) {
    // SAFETY: pidfd_open on a pid; the fd returned is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd >= 0 {
        let mut p = libc::pollfd {
            fd: fd as libc::c_int,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the fd is closed after.
        unsafe {
            libc::poll(&mut p, 1, 120_000);
            libc::close(fd as libc::c_int);
        }
        return;
    }
    let stat = format!("/proc/{pid}/stat");
    while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Detaching `sites` (100 in the full run) attached one perf link each: the
/// wait the caller sees, and the kernel's total until the last probe is gone.
/// libbpf and aya close their links in the caller (both figures are that
/// close); sonde hands them to a background process (`Attachment::hand_off`)
/// and the kernel's total runs until that process has exited.
pub(crate) fn detach_per_target(runs: usize, exe: &Path, sites: &[ProbeSite]) -> Result<[Figure; 2]> {
    let n = sites.len();
    let mut total = [Vec::new(), Vec::new(), Vec::new()];
    let seen = interleaved(runs, |lib| {
        let (seen, all) = match lib {
            Lib::Sonde => {
                let mut o = sonde_object(n)?;
                let p = o.uprobe(Program::CountAll.name())?;
                p.load(Load::new(AttachType::PerfEvent, Cookie::Native))?;
                let att = p.attach_sites(sites.to_vec(), &AttachOptions::default().tier(Tier::PerfLink))?;
                let t = Instant::now();
                let pid = att.hand_off()?;
                let seen = t.elapsed();
                if let Some(pid) = pid {
                    wait_gone(pid);
                }
                (seen, t.elapsed())
            }
            Lib::Libbpf => {
                let obj = libbpf_object(n, "count_single")?;
                let p = libbpf_prog(&obj, "count_single")?;
                let links = libbpf_attach_each(&p, exe, sites)?;
                let t = Instant::now();
                drop(links);
                (t.elapsed(), t.elapsed())
            }
            Lib::Aya => {
                let mut ebpf = aya_object(n)?;
                let p = aya_prog(&mut ebpf)?;
                let ids = aya_attach_each(p, aya_points(sites), exe, UProbeScope::AllProcesses)?;
                let t = Instant::now();
                for id in ids {
                    p.detach(id)?;
                }
                (t.elapsed(), t.elapsed())
            }
        };
        total[lib as usize].push(ms(all));
        eprintln!(
            "detach of {n} per-target links ({lib:?}): seen {:.1} ms, kernel {:.1} ms",
            ms(seen),
            ms(all)
        );
        Ok(Some(ms(seen)))
    })?;
    Ok([
        figure("detach, the caller's wait (perf link per target)", n, "ms", seen),
        figure(
            "detach, until the kernel is done (perf link per target)",
            n,
            "ms",
            stats(total),
        ),
    ])
}
