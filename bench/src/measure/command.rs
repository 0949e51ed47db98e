//! Command figures: `sonde trace` events, the CLI, the agent, session programs.

use super::*;
use crate::opts::Opts;
use crate::probes::{load_sizes, Map, Program, OBJECT};
use crate::sites::*;
use crate::target::{self, Prologue, Running};
use crate::util::*;
use anyhow::{bail, Context, Result};
use sonde::{AttachOptions, Object, Tier};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `sonde trace --json` on a tight loop: events delivered and lost.
pub(crate) fn events(opts: &Opts, dir: &Path) -> Result<EventsRow> {
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
            // "sonde: N calls (M records), L lost"
            l.split(" records), ")
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
pub(crate) fn cli(opts: &Opts, dir: &Path) -> Result<CliRow> {
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
    // A command run under sonde, its children followed (the default): start to
    // exit, the summary printed on the way.
    let mut whole = Vec::new();
    let mut command_counted = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let mut child = Command::new(&opts.sonde)
            .args([
                "count",
                "--json",
                &exe_s,
                "f[0-9]*",
                "--",
                &exe_s,
                "1",
                "0",
                &(n - 1).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(b"go\n")?;
        let out = child.wait_with_output()?;
        whole.push(ms(t.elapsed()));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        command_counted = v["functions"]
            .as_array()
            .map_or(0, |f| f.iter().filter_map(|x| x["count"].as_u64()).sum());
    }
    let row = CliRow {
        functions: n,
        start_to_counting_ms: median(start),
        sigint_to_summary_ms: median(summary),
        sigint_to_exit_ms: median(exit),
        counted,
        command_start_to_exit_ms: median(whole),
        command_counted,
    };
    eprintln!(
        "cli: counting after {:.1} ms, summary {:.1} ms after SIGINT, exit {:.1} ms, {} calls counted; \
         a command start to exit {:.1} ms, {} calls counted",
        row.start_to_counting_ms,
        row.sigint_to_summary_ms,
        row.sigint_to_exit_ms,
        row.counted,
        row.command_start_to_exit_ms,
        row.command_counted
    );
    Ok(row)
}

/// `sonde serve` while a target calls a probed function as fast as its probe
/// lets it (`mov` entry: ~110k calls/s, single-stepped; `push %rbp`: several
/// 100k/s, emulated), scraped every second: the agent's own CPU time. The
/// counting is the kernel's (charged to the caller); the agent only answers
/// scrapes.
pub(crate) fn agent(opts: &Opts, dir: &Path) -> Result<Vec<AgentRow>> {
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
pub(crate) fn sessions(opts: &Opts, dir: &Path) -> Result<Vec<SessionRow>> {
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
            let mut object = Object::load_with(
                OBJECT,
                &load_sizes(&[(Map::Hist, crate::record::LATENCY_BUCKETS), (Map::Stats, 1)], false),
            )?;
            let app = Running::spawn(&exe, calls, 0, 0)?;
            let mut options = AttachOptions::default().tier(Tier::Multi).pid(app.pid());
            if disable {
                options = options.disable(sonde::Feature::UprobeSession);
            }
            let att = object
                .uprobe(Program::Latency.name())?
                .attach_sites(first_targets(&site, 1), &options)?;
            ns.push(app.go()? as f64 / calls as f64 - unprobed);
            shape = (att.programs().len(), att.link_ids().len());
            let hist = sonde::maps::PerCpuArray::<u64>::new(Map::Hist.of(&object)?)?;
            timed = (0..crate::record::LATENCY_BUCKETS)
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
