//! The measurements.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sonde::resolve::{cache, SymbolTable};
use sonde::{AttachOptions, AttachType, Cookie, Functions, Load, Object, ProbeSite, Tier};

use crate::target::{self, Prologue, Running};
use crate::{Opts, PROBES};

/// Every figure of a run.
#[derive(Serialize)]
pub struct Results {
    pub kernel: String,
    pub quick: bool,
    pub cookies: Vec<CookieRow>,
    pub tiers: Vec<TierRow>,
    pub per_hit: Vec<HitRow>,
    pub resolution: Vec<ResolutionRow>,
    pub events: EventsRow,
    pub cli: CliRow,
    pub agent: Vec<AgentRow>,
    pub sessions: Vec<SessionRow>,
    /// sonde beside libbpf and aya: one record per figure.
    pub figures: Vec<crate::peers::Figure>,
    pub seconds: f64,
}

#[derive(Serialize, Clone, Default)]
pub struct Side {
    pub programs: usize,
    pub load_ms: f64,
    pub verified_insns: u64,
    pub memlock_bytes: u64,
    pub attach_ms: f64,
    pub detach_ms: f64,
    pub detach_extrapolated: bool,
    pub attach_extrapolated: bool,
    pub open_fds: usize,
}

#[derive(Serialize)]
pub struct CookieRow {
    pub n: usize,
    pub cookies: Side,
    pub per_function: Side,
}

#[derive(Serialize)]
pub struct TierRow {
    pub tier: &'static str,
    pub n: usize,
    pub attach_ms: f64,
    pub detach_ms: f64,
    pub extrapolated: bool,
    pub runs: usize,
}

#[derive(Serialize)]
pub struct HitRow {
    pub prologue: &'static str,
    pub unprobed_ns: f64,
    pub cookie_probe_ns: f64,
    pub baked_probe_ns: f64,
    pub cookie_prog_ns: f64,
    pub baked_prog_ns: f64,
}

#[derive(Serialize)]
pub struct ResolutionRow {
    pub binary: String,
    pub file_mb: f64,
    pub symbols: usize,
    pub functions: usize,
    pub cold_ms: f64,
    pub symbols_per_s: f64,
    pub glob: String,
    pub glob_matches: usize,
    pub glob_ms: f64,
}

#[derive(Serialize, Default)]
pub struct EventsRow {
    pub calls: u64,
    pub delivered: u64,
    pub lost: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

#[derive(Serialize, Default)]
pub struct SessionRow {
    /// `native` (6.13+ session link) or `emulated` (entry + return copies).
    pub mode: &'static str,
    pub programs: usize,
    pub links: usize,
    /// Time per call of a `push %rbp` function timed by `sonde latency`'s
    /// program, probe included, minus the unprobed call.
    pub per_call_ns: f64,
    /// Calls the program's histogram counted (must be all of them).
    pub timed: u64,
}

#[derive(Serialize, Default)]
pub struct AgentRow {
    /// What the probes did: `count` alone or with `latency`.
    pub probes: &'static str,
    /// The probed function's first instruction.
    pub prologue: &'static str,
    pub calls: u64,
    pub calls_per_s: f64,
    /// Scrapes of /metrics during the run (one a second).
    pub scrapes: u64,
    /// The agent's user + system CPU time over the run, in % of one CPU.
    pub agent_cpu_percent: f64,
    /// The calls the agent's counter showed at the end (must be `calls`).
    pub counted: u64,
}

#[derive(Serialize, Default)]
pub struct CliRow {
    pub functions: usize,
    pub start_to_counting_ms: f64,
    pub sigint_to_summary_ms: f64,
    pub sigint_to_exit_ms: f64,
    pub counted: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `memlock:` of an fd's fdinfo (programs and maps).
fn memlock(fd: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("memlock:").map(|v| v.trim().parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// The CLI object, `COUNTS` sized to `n`, the maps `count` does not use made
/// small (as in the peer figures).
fn load_object(n: usize) -> Result<Object> {
    crate::peers::sonde_object(n)
}

/// `f0..f<n-1>` of a generated target, cookie = index.
fn first_targets(all: &[ProbeSite], n: usize) -> Vec<ProbeSite> {
    all[..n].to_vec()
}

/// The functions `f*` of `exe` ordered by their number, cookie = number.
pub fn resolve_numbered(exe: &Path) -> Result<Vec<ProbeSite>> {
    let set = Functions::in_binary(exe).pattern("f[0-9]*").resolve()?;
    let mut v: Vec<(usize, ProbeSite)> = set
        .targets()
        .into_iter()
        .filter_map(|t| Some((t.symbol.as_deref()?.get(1..)?.parse().ok()?, t)))
        .collect();
    v.sort_by_key(|(i, _)| *i);
    Ok(v.into_iter().map(|(i, t)| t.with_cookie(i as u64)).collect())
}

fn cookie_side(all: &[ProbeSite], n: usize) -> Result<Side> {
    let fds0 = open_fds();
    let mut object = load_object(n)?;
    let counts_mem = memlock(object.map("COUNTS")?.as_fd().as_raw_fd());
    let probe = object.uprobe("count")?;
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
fn per_function_side(all: &[ProbeSite], n: usize, attach: bool) -> Result<Side> {
    let fds0 = open_fds();
    let mut object = load_object(n)?;
    let counts_mem = memlock(object.map("COUNTS")?.as_fd().as_raw_fd());
    let probe = object.uprobe("count")?;
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

fn cookies(opts: &Opts, all: &[ProbeSite]) -> Result<Vec<CookieRow>> {
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

fn median_side(v: &[Side]) -> Side {
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

fn tiers(opts: &Opts, exe: &Path) -> Result<Vec<TierRow>> {
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
                .uprobe("count")?
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
                let probe = object.uprobe("count")?;
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
fn per_hit(opts: &Opts, dir: &Path) -> Result<Vec<HitRow>> {
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
                let att = object.uprobe("count")?.attach_sites(
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
fn largest_binaries(limit: usize) -> Vec<PathBuf> {
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

fn resolution(opts: &Opts) -> Result<Vec<ResolutionRow>> {
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

/// `sonde trace --json` on a tight loop: events delivered and lost.
fn events(opts: &Opts, dir: &Path) -> Result<EventsRow> {
    let exe = target::build(dir, 10, Prologue::Mov)?;
    let calls: u64 = if opts.quick { 10_000 } else { 1_000_000 };
    let exe_s = exe.to_string_lossy().into_owned();
    let t = Instant::now();
    let mut child = Command::new(&opts.sonde)
        .args([
            "trace",
            "--json",
            &exe_s,
            "f0",
            "--",
            &exe_s,
            &calls.to_string(),
            "0",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {}", opts.sonde.display()))?;
    use std::io::Write;
    child.stdin.take().context("stdin")?.write_all(b"go\n")?;
    let mut delivered = 0u64;
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        if line?.starts_with('{') {
            delivered += 1;
        }
    }
    let mut err = String::new();
    child.stderr.take().context("stderr")?.read_to_string(&mut err)?;
    child.wait()?;
    let seconds = t.elapsed().as_secs_f64();
    let lost = err
        .lines()
        .find_map(|l| {
            l.split(" events, ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let row = EventsRow {
        calls,
        delivered,
        lost,
        seconds,
        events_per_s: delivered as f64 / seconds,
    };
    eprintln!("events: {delivered} delivered, {lost} lost of {calls} in {seconds:.2} s");
    Ok(row)
}

/// `sonde count` on 1,000 functions: start to counting, SIGINT to summary.
fn cli(opts: &Opts, dir: &Path) -> Result<CliRow> {
    let n = if opts.quick { 10 } else { 1000 };
    let exe = target::build(dir, n, Prologue::Mov)?;
    let exe_s = exe.to_string_lossy().into_owned();
    let runs = if opts.quick { 1 } else { 5 };
    let (mut start, mut summary, mut exit) = (Vec::new(), Vec::new(), Vec::new());
    let mut counted = 0;
    for _ in 0..runs {
        let app = Running::spawn(&exe, 1, 0, n - 1)?;
        let t = Instant::now();
        let mut child = Command::new(&opts.sonde)
            .args(["count", "--json", "-p", &app.pid().to_string(), &exe_s, "f[0-9]*"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut err = BufReader::new(child.stderr.take().context("stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("sonde count exited before attaching");
            }
            if line.starts_with("sonde: counting") {
                break;
            }
        }
        start.push(ms(t.elapsed()));
        app.go()?;
        let t = Instant::now();
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut json = String::new();
        out.read_line(&mut json)?;
        summary.push(ms(t.elapsed()));
        child.wait()?;
        exit.push(ms(t.elapsed()));
        let v: serde_json::Value = serde_json::from_str(&json)?;
        counted = v["functions"]
            .as_array()
            .map_or(0, |f| f.iter().filter_map(|x| x["count"].as_u64()).sum());
    }
    let row = CliRow {
        functions: n,
        start_to_counting_ms: median(start),
        sigint_to_summary_ms: median(summary),
        sigint_to_exit_ms: median(exit),
        counted,
    };
    eprintln!(
        "cli: counting after {:.1} ms, summary {:.1} ms after SIGINT, exit {:.1} ms, {} calls counted",
        row.start_to_counting_ms, row.sigint_to_summary_ms, row.sigint_to_exit_ms, row.counted
    );
    Ok(row)
}

/// utime + stime of process `pid`, in seconds.
fn process_cpu(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ").context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// One HTTP GET of the agent's /metrics; the `sonde_calls_total` samples summed.
fn scrape_calls(port: u16) -> Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("sonde_calls_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// `sonde serve` while a target calls a probed function as fast as its probe
/// lets it (`mov` entry: ~110k calls/s, single-stepped; `push %rbp`: several
/// 100k/s, emulated), scraped every second: the agent's own CPU time. The
/// counting is the kernel's (charged to the caller); the agent only answers
/// scrapes.
fn agent(opts: &Opts, dir: &Path) -> Result<Vec<AgentRow>> {
    let mut rows = Vec::new();
    let cases: &[(Prologue, bool, u64)] = if opts.quick {
        &[(Prologue::Mov, false, 20_000)]
    } else {
        &[(Prologue::Mov, false, 500_000), (Prologue::PushRbp, true, 2_000_000)]
    };
    for &(prologue, latency, calls) in cases {
        let exe = target::build(dir, 1, prologue)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n[[probe]]\nbinary = \"{}\"\nfunctions = [\"f0\"]\nlatency = {latency}\n",
                exe.display()
            ),
        )?;
        let mut child = Command::new(&opts.sonde)
            .args(["serve", "--log-level", "warn"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        while scrape_calls(port).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("sonde serve did not answer on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let app = Running::spawn(&exe, calls, 0, 0)?;
        let cpu0 = process_cpu(child.id())?;
        let t = Instant::now();
        let runner = std::thread::spawn(move || app.go());
        let every = Duration::from_millis(if opts.quick { 100 } else { 1000 });
        let (mut scrapes, mut next) = (0, Instant::now() + every);
        while !runner.is_finished() {
            std::thread::sleep(Duration::from_millis(10));
            if Instant::now() >= next {
                scrape_calls(port)?;
                scrapes += 1;
                next += every;
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        let cpu = process_cpu(child.id())? - cpu0;
        runner.join().map_err(|_| anyhow::anyhow!("target thread"))??;
        let counted = scrape_calls(port)?;
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait()?;
        let row = AgentRow {
            probes: if latency { "count + latency" } else { "count" },
            prologue: prologue.name(),
            calls,
            calls_per_s: calls as f64 / seconds,
            scrapes,
            agent_cpu_percent: cpu / seconds * 100.0,
            counted,
        };
        eprintln!(
            "agent: {} calls ({:.0}/s, {}), {} scrapes, agent CPU {:.3} %, counted {}",
            row.calls, row.calls_per_s, row.probes, row.scrapes, row.agent_cpu_percent, row.counted
        );
        if counted != calls {
            bail!("the agent counted {counted} of {calls} calls");
        }
        rows.push(row);
    }
    Ok(rows)
}

/// `sonde latency`'s session program on one `push %rbp` function of a loop:
/// native (one program, one link) and emulated (entry and return copies, the
/// start time in a map by thread and depth), both on the multi tier.
fn sessions(opts: &Opts, dir: &Path) -> Result<Vec<SessionRow>> {
    let calls: u64 = if opts.quick { 10_000 } else { 1_000_000 };
    let runs = if opts.quick { 1 } else { 3 };
    let exe = target::build(dir, 1, Prologue::PushRbp)?;
    let site = resolve_numbered(&exe)?;
    let unprobed = median(
        (0..runs)
            .map(|_| Ok(Running::spawn(&exe, calls, 0, 0)?.go()? as f64 / calls as f64))
            .collect::<Result<Vec<f64>>>()?,
    );
    let features = sonde::Features::current();
    let mut rows = Vec::new();
    for (mode, disable) in [("native", false), ("emulated", true)] {
        if !disable && !features.has(sonde::Feature::UprobeSession) {
            eprintln!("sessions: no native sessions on this kernel");
            continue;
        }
        let (mut ns, mut shape, mut timed) = (Vec::new(), (0, 0), 0);
        for _ in 0..runs {
            let mut object = Object::load_with(PROBES, &[("HIST", 64), ("MAX_NS", 1), ("SUM_NS", 1)])?;
            let app = Running::spawn(&exe, calls, 0, 0)?;
            let mut options = AttachOptions::default().tier(Tier::Multi).pid(app.pid());
            if disable {
                options = options.disable(sonde::Feature::UprobeSession);
            }
            let att = object
                .uprobe("latency")?
                .attach_sites(first_targets(&site, 1), &options)?;
            ns.push(app.go()? as f64 / calls as f64 - unprobed);
            shape = (att.programs().len(), att.link_ids().len());
            let hist = sonde::maps::PerCpuArray::<u64>::new(object.map("HIST")?)?;
            timed = (0..64u32)
                .map(|b| Ok(hist.get(b)?.iter().sum::<u64>()))
                .collect::<Result<Vec<u64>>>()?
                .iter()
                .sum();
        }
        let row = SessionRow {
            mode,
            programs: shape.0,
            links: shape.1,
            per_call_ns: median(ns),
            timed,
        };
        eprintln!(
            "sessions: {mode}: {} program(s), {} link(s), {:.0} ns a call, {} of {calls} timed",
            row.programs, row.links, row.per_call_ns, row.timed
        );
        if timed != calls {
            bail!("the {mode} session timed {timed} of {calls} calls");
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Runs every section.
pub fn all(opts: &Opts) -> Result<Results> {
    let t = Instant::now();
    let dir = opts.out.join("targets");
    let n_max = if opts.quick { 100 } else { 10_000 };
    let big = target::build(&dir, n_max, Prologue::Mov)?;
    let all = resolve_numbered(&big)?;
    if all.len() != n_max {
        bail!("{} resolved {} of {n_max} functions", big.display(), all.len());
    }
    Ok(Results {
        kernel: sonde::features::kernel_release(),
        quick: opts.quick,
        cookies: cookies(opts, &all)?,
        tiers: tiers(opts, &big)?,
        per_hit: per_hit(opts, &dir)?,
        resolution: resolution(opts)?,
        events: events(opts, &dir)?,
        cli: cli(opts, &dir)?,
        agent: agent(opts, &dir)?,
        sessions: sessions(opts, &dir)?,
        figures: crate::peers::all(opts, &big, &all)?,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Only the figures beside libbpf and aya.
pub fn peers_only(opts: &Opts) -> Result<Vec<crate::peers::Figure>> {
    let dir = opts.out.join("targets");
    let n_max = if opts.quick { 100 } else { 10_000 };
    let big = target::build(&dir, n_max, Prologue::Mov)?;
    let all = resolve_numbered(&big)?;
    crate::peers::all(opts, &big, &all)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "–".into()
    }
}

/// The Markdown report.
pub fn report(r: &Results, charts: &[String]) -> String {
    let mut s = format!(
        "# sonde benchmarks\n\nKernel {}, {} run{}, {:.0} s. Medians of several runs; ratios are of figures measured side by side in this run. Command: `sudo -E cargo xtask bench`.\n\n",
        r.kernel,
        if r.quick { "quick (smoke)" } else { "full" },
        "",
        r.seconds
    );
    s.push_str("## 0. sonde beside libbpf and aya\n\n");
    s.push_str("The same eBPF logic on the same targets in the same run (a per-CPU counter indexed by the attach cookie: sonde's `count`; `bench/peer/count.bpf.c` compiled by clang for libbpf 1.7 through libbpf-rs, and for aya 0.14). Runs interleaved (sonde, libbpf, aya, ...); median (min–max). A ratio below 1 means sonde is faster. `–`: the library cannot do it (aya 0.14 has no uprobe_multi; its first attach uses one perf link per function). Per-hit figures are the cost of one call of a function whose first instruction is the one named (checked in the binary), program attached to that process only. Attach figures have a CPU-time companion (this thread's user + system time, from `CLOCK_THREAD_CPUTIME_ID`): the wall time of an attach is mostly one kernel wait (the first uprobe registration after ~one idle grace period waits for an RCU grace period in `rcu_sync_enter`; the figure `kernel wait at the first registration after idle` below is that wait alone), random between 5 and 40 ms here and the same for every library, while the CPU time is the work the library and the kernel did for it. A wall-time figure counts as a lead when its ratio is ≤ 1.05, or when the CPU-time ratio of the same runs is ≤ 1.05 and sonde's wall median lies inside the peer's min–max.\n\n");
    s.push_str(&crate::peers::table(&r.figures));
    s.push('\n');
    s.push_str("## 1. One program with cookies vs one program per function\n\n");
    s.push_str("| N | programs | load ms | verified insns | memlock | attach ms | detach ms | fds | load ratio | memory ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.cookies {
        for (label, side) in [("cookies", &row.cookies), ("per function", &row.per_function)] {
            s.push_str(&format!(
                "| {} {label} | {} | {:.3} | {} | {:.1} KiB | {:.2}{} | {:.1}{} | {} | {} | {} |\n",
                row.n,
                side.programs,
                side.load_ms,
                side.verified_insns,
                side.memlock_bytes as f64 / 1024.0,
                side.attach_ms,
                if side.attach_extrapolated {
                    " (extrapolated)"
                } else {
                    ""
                },
                side.detach_ms,
                if side.detach_extrapolated {
                    " (extrapolated)"
                } else {
                    ""
                },
                side.open_fds,
                if label == "cookies" {
                    String::new()
                } else {
                    ratio(side.load_ms, row.cookies.load_ms)
                },
                if label == "cookies" {
                    String::new()
                } else {
                    ratio(side.memlock_bytes as f64, row.cookies.memlock_bytes as f64)
                },
            ));
        }
    }
    s.push_str("\nPer function = the same counting logic with the function's id baked in as a constant, one program and one perf event per function (how it is done without cookies). Memory = program memlock plus the counters map. At N = 1000 the per-function attach and detach are extrapolated linearly from N = 100 (1,000 perf events take ~100 s to detach).\n\n");
    s.push_str(
        "## 2. Attach and detach per tier\n\n| tier | N | attach ms | detach ms | runs |\n|---|---|---|---|---|\n",
    );
    for t in &r.tiers {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} | {} |\n",
            t.tier,
            t.n,
            t.attach_ms,
            t.detach_ms,
            if t.extrapolated {
                "extrapolated linearly from N=100".to_string()
            } else {
                t.runs.to_string()
            }
        ));
    }
    s.push_str(
        "\n`multi` attach includes reading the binary's symbols cold (cache cleared) and loading the program. Most of it is one kernel wait: the first `BPF_LINK_CREATE` of a uprobe_multi link after a quiet period blocks for about one RCU grace period (strace here: 14.06 ms for 10 functions; a second link right after: 0.027 ms), so the figure is nearly flat in N.\n\n",
    );
    s.push_str("## 3. Per hit (1,000,000 calls of one function)\n\n| first instruction | unprobed ns/call | cookie probe ns/call | baked probe ns/call | cookie program ns | baked program ns |\n|---|---|---|---|---|---|\n");
    for h in &r.per_hit {
        s.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
            h.prologue, h.unprobed_ns, h.cookie_probe_ns, h.baked_probe_ns, h.cookie_prog_ns, h.baked_prog_ns
        ));
    }
    s.push_str("\nEach target function is written in assembly and its entry bytes are checked in the built binary before anything is measured (`push %rbp` = `55`, nop5 = `0f 1f 44 00 00`, mov = `8b 05`): the first instruction decides the cost. The kernel emulates `push %rbp`, turns a 5-byte nop into a call to its uprobe trampoline on 6.18 x86-64, and single-steps `mov` out of line (two traps, expensive in a VM). Program ns = the kernel's own run time per hit (BPF statistics, enabled for the run). The cookie program reads `bpf_get_attach_cookie`; the baked one has the id as a constant; their difference is the cookie's cost.\n\n");
    s.push_str("## 4. Symbol resolution\n\n| binary | MB | symbols | functions | cold ms | symbols/s | glob | matches | glob ms (cached) |\n|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.resolution {
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1}M | `{}` | {} | {:.2} |\n",
            x.binary,
            x.file_mb,
            x.symbols,
            x.functions,
            x.cold_ms,
            x.symbols_per_s / 1e6,
            x.glob,
            x.glob_matches,
            x.glob_ms
        ));
    }
    let e = &r.events;
    s.push_str(&format!(
        "\n## 5. Events (`sonde trace --json` on a tight loop)\n\n{} calls: {} delivered, {} lost, {:.2} s, {:.0} events/s delivered.\n\n",
        e.calls, e.delivered, e.lost, e.seconds, e.events_per_s
    ));
    let c = &r.cli;
    s.push_str(&format!(
        "## 6. `sonde count` on {} functions\n\nStart to counting: {:.1} ms (target ≤ 50 ms; bpftrace 0.9 s). SIGINT to summary: {:.1} ms (target ≤ 100 ms; bpftrace 108 s); to exit {:.1} ms. Calls counted: {}.\n\n",
        c.functions, c.start_to_counting_ms, c.sigint_to_summary_ms, c.sigint_to_exit_ms, c.counted
    ));
    s.push_str("## 7. `sonde serve`: the agent's own CPU\n\nA target calls one probed function as fast as its probe lets it; the agent serves it and is scraped every second. Target: under 1 % of one CPU at 100k calls/s.\n\n| probes | entry | calls | calls/s | scrapes | agent CPU | counted | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for a in &r.agent {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.3} % | {} | {} |\n",
            a.probes,
            a.prologue,
            a.calls,
            a.calls_per_s,
            a.scrapes,
            a.agent_cpu_percent,
            a.counted,
            if a.agent_cpu_percent < 1.0 && a.calls_per_s >= 100_000.0 {
                "under 1 % at ≥ 100k calls/s"
            } else if a.agent_cpu_percent < 1.0 {
                "under 1 % (below 100k calls/s: quick run)"
            } else {
                "OVER 1 %"
            }
        ));
    }
    s.push('\n');
    s.push_str("## 8. Session programs: native vs emulated (`sonde latency`'s program)\n\nOne `push %rbp` function in a loop, timed by the same session program, both on the multi tier: natively (one program on one session link, the start time in the kernel's per-call slot) and emulated (`uprobe_session` disabled: a return copy and an entry copy, the start time in a map keyed by thread and depth). Per call: the probed loop's time per call minus the unprobed one.\n\n| mode | programs | links | per call | calls timed |\n|---|---|---|---|---|\n");
    for x in &r.sessions {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} ns | {} |\n",
            x.mode, x.programs, x.links, x.per_call_ns, x.timed
        ));
    }
    s.push('\n');
    for chart in charts {
        s.push_str(&format!("![{chart}]({chart})\n"));
    }
    s
}
