//! What every probing command shares: privileges, the command to trace, resolving
//! the functions, loading the programs with per-function maps sized, attaching
//! with the best (or pinned) tier, waiting for the end, and stopping.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sonde::{AttachOptions, Attachment, FunctionSet, Functions, GroupId, Job, Tier};

use crate::CliError;
use sonde::command::{HeldCommand, ProcessWatch};
use sonde::resolve::watch::{Change, FileWatch};

/// The eBPF programs of the command, built by build.rs.
pub const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cli-probes.bpf.o"));

/// Sizes the optional maps (`record::OPTIONAL_MAPS`) not in `used` to their
/// least.
pub fn shrink_unused<'a>(mut builder: sonde::JobBuilder<'a>, used: &[&str]) -> sonde::JobBuilder<'a> {
    for (map, least) in crate::record::OPTIONAL_MAPS {
        if !used.contains(&map) {
            builder = builder.map_size(map, least);
        }
    }
    builder
}

/// Options every probing command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Binary or library: a path, or a bare library name (`libc`, `libssl.so.3`)
    /// looked up in the traced process, then ld.so.cache and the library path.
    /// Or, for several binaries, every argument a probe spec `BINARY:PATTERN`
    /// (`./app:'handle*' libc:malloc libssl:'SSL_*'`).
    pub target: String,
    /// Functions: globs (`*`, `?`, `[...]`) or exact names, raw or demangled
    /// (`str*`, `*HashMap*insert*`, `geo::Shape::area`, `memcpy@GLIBC_2.2.5`);
    /// or more `BINARY:PATTERN` specs.
    pub patterns: Vec<String>,
    /// Trace only this process (default: every process that runs TARGET);
    /// sonde ends, with its summary, when the process exits.
    #[arg(short, long, value_name = "PID", conflicts_with = "command", value_parser = parse_pid, allow_negative_numbers = true)]
    pub pid: Option<u32>,
    /// With `-p`: also trace every process PID has forked or forks later (its
    /// whole tree, across fork and exec).
    #[arg(long, requires = "pid")]
    pub follow: bool,
    /// With `-- COMMAND`: trace only the command's own process, not the
    /// processes it forks (followed by default: `sh -c`, `make`, servers with
    /// workers).
    #[arg(long)]
    pub no_follow: bool,
    /// Look binaries up as process PID sees them (its mount namespace and
    /// libraries: a container), but trace every process that runs them.
    #[arg(long, value_name = "PID", conflicts_with = "pid", value_parser = parse_pid)]
    pub container: Option<u32>,
    /// Stop after SECS seconds, e.g. 10 or 0.5 (default: at Ctrl-C, or when
    /// COMMAND exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Pin the attach mechanism instead of the best the kernel has:
    /// multi (6.6+), perf-link (5.15+), emulated (5.10), tracefs.
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    pub tier: Option<Tier>,
    /// Machine-readable output (no progress, no live table). With `-- COMMAND`
    /// and no `-o`, the command's stdout goes to stderr so stdout holds only the
    /// JSON (`sonde count --json ... -- cmd | jq` works).
    #[arg(long)]
    pub json: bool,
    /// Print counts whole (`18342`, not `18k`).
    #[arg(long)]
    pub exact: bool,
    /// Also print a table every SECS seconds with the calls of that interval
    /// (`count`; with `--json`, one `{"interval", "functions"}` line each).
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Count only the calls EXPR selects, evaluated in the program:
    /// comparisons (== != < <= > >=) of arg0..arg5, ret, pid, tid, comm or
    /// func with numbers or "strings" (a trailing * matches a prefix), joined
    /// by && and || with parentheses: `--filter 'arg0 > 4096 && comm == "nginx"'`.
    #[arg(long, value_name = "EXPR", value_parser = crate::filter::FilterExpr::parse)]
    pub filter: Option<crate::filter::FilterExpr>,
    /// Break down by pid, tid, comm, stack (the user stack, named) or argN
    /// (`arg0`..`arg5`): one row per (function, key), counted in the program
    /// (`count`; `latency` takes pid, tid or comm).
    #[arg(long, value_name = "KEY", value_parser = parse_by)]
    pub by: Option<By>,
    /// Write the report (table, JSON, trace lines) to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// Command to run and trace from its first instruction; tracing stops when
    /// it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `BINARY:PATTERN` split at its first single `:` (C++'s `::` is part of a
/// pattern), or `None` for a plain pattern or target.
pub fn split_spec(arg: &str) -> Option<(&str, &str)> {
    let b = arg.as_bytes();
    let i = (0..b.len()).find(|&i| b[i] == b':' && (i == 0 || b[i - 1] != b':') && b.get(i + 1) != Some(&b':'))?;
    (i > 0 && i + 1 < b.len()).then(|| (&arg[..i], &arg[i + 1..]))
}

/// The binaries and their patterns: `TARGET PATTERN...`, or every argument a
/// `BINARY:PATTERN` spec (grouped by binary, in order).
pub fn probe_groups(target: &str, patterns: &[String]) -> Result<Vec<(String, Vec<String>)>, CliError> {
    if split_spec(target).is_none() {
        if patterns.is_empty() {
            return Err(CliError::new(format!(
                "no function named for {target}: give patterns after it (`{target} 'name*'`) or write BINARY:PATTERN"
            )));
        }
        if let Some(spec) = patterns
            .iter()
            .find(|p| split_spec(p).is_some_and(|(b, _)| b.contains('/')))
        {
            return Err(CliError::new(format!(
                "`{spec}` is a BINARY:PATTERN spec after a target: write every probe as BINARY:PATTERN, or the target once and then patterns"
            )));
        }
        return Ok(vec![(target.to_string(), patterns.to_vec())]);
    }
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for arg in std::iter::once(target).chain(patterns.iter().map(String::as_str)) {
        let (binary, pattern) = split_spec(arg).ok_or_else(|| {
            CliError::new(format!(
                "`{arg}` is not BINARY:PATTERN: with several binaries, write every probe as BINARY:PATTERN"
            ))
        })?;
        match groups.iter_mut().find(|(b, _)| b == binary) {
            Some((_, p)) => p.push(pattern.to_string()),
            None => groups.push((binary.to_string(), vec![pattern.to_string()])),
        }
    }
    Ok(groups)
}

/// The longest `--duration`: a year.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A positive, finite number of seconds up to a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (e.g. 10 or 0.5)"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{s}` is not a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| {
            format!(
                "`{s}` seconds is too long (at most a year, {} s)",
                MAX_DURATION.as_secs()
            )
        })
}

/// What `--by` breaks counts down by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Process id.
    Pid,
    /// Thread id.
    Tid,
    /// Command name.
    Comm,
    /// The value of argument N (0..=5).
    Arg(u8),
    /// The user stack.
    Stack,
}

impl By {
    /// The name of the key (`pid`, `arg1`), as JSON rows carry it.
    pub fn name(self) -> String {
        match self {
            By::Pid => "pid".into(),
            By::Tid => "tid".into(),
            By::Comm => "comm".into(),
            By::Stack => "stack".into(),
            By::Arg(n) => format!("arg{n}"),
        }
    }
}

/// Parses `--by`.
pub fn parse_by(s: &str) -> Result<By, String> {
    match s {
        "pid" => Ok(By::Pid),
        "tid" => Ok(By::Tid),
        "comm" => Ok(By::Comm),
        "stack" => Ok(By::Stack),
        _ => match s.strip_prefix("arg").and_then(|n| n.parse::<u8>().ok()) {
            Some(n) if n <= 5 => Ok(By::Arg(n)),
            _ => Err(format!("`{s}`: break down by pid, tid, comm, stack or arg0..arg5")),
        },
    }
}

/// A pid Linux can give out (1 to 2^22); whether it lives is checked at start.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    let pid: u64 = s.trim().parse().map_err(|_| format!("`{s}` is not a process id"))?;
    match sonde::process::check(pid) {
        Err(e @ (sonde::ProcessError::Zero | sonde::ProcessError::OutOfRange(_))) => Err(e.to_string()),
        _ => Ok(pid as u32),
    }
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    Tier::from_name(s).ok_or_else(|| format!("unknown tier `{s}` (one of: multi, perf-link, emulated, tracefs)"))
}

/// Why the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// `--duration` elapsed.
    Duration,
    /// The traced command exited with this status.
    Exited(i32),
    /// The `-p` process exited.
    ProcessExited(u32),
    /// A probed binary was rewritten in place: every probe was detached at
    /// once (its offsets may fall inside the new code).
    Rewritten(String),
}

/// One function of a session: its cookie, the set it came from, itself.
pub struct SessionFunction<'a> {
    /// Its cookie (index into the per-cookie maps).
    pub cookie: u64,
    /// The binary's resolved functions.
    pub set: &'a FunctionSet,
    /// The function.
    pub function: &'a sonde::FunctionMatch,
}

/// A job attached and running, and what ends it.
pub struct Session {
    job: Job,
    groups: Vec<GroupId>,
    child: Option<HeldCommand>,
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
    /// The `-p` process, watched for its exit.
    traced: Option<ProcessWatch>,
    /// The fork and exit tracepoints that keep a followed tree up to date.
    _follow: Vec<sonde::TracepointLink>,
    /// When counting began (after attach).
    pub started: Instant,
    /// The probed binaries, watched for writes.
    files: FileWatch,
}

/// Sets the stop flag on SIGINT and SIGTERM.
pub fn stop_flag() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| CliError::new(format!("signal handler: {e}")))?;
    }
    Ok(stop)
}

/// Refuses early, with the fix, when the process cannot use BPF; `what` is
/// what needs them ("to load eBPF programs and attach uprobes").
pub fn require_privileges(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    // CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
    if has(21) || (has(38) && has(39)) {
        return Ok(());
    }
    Err(CliError::new(format!(
        "sonde needs root (or CAP_BPF and CAP_PERFMON) {what}: run it with sudo"
    )))
}

impl Session {
    /// Resolves, loads `programs` with `sizes(n)` map sizes, attaches each to
    /// every function, then lets the command (if any) start.
    pub fn start(
        common: &Common,
        what: &str,
        programs: &[&str],
        sizes: impl Fn(u32) -> Vec<(&'static str, u32)>,
    ) -> Result<Session, CliError> {
        Self::start_with(common, what, programs, crate::filter::Site::Entry, sizes, |_| Ok(()))
    }

    /// [`Session::start`], with `setup` run once everything is attached and
    /// before the command runs (per-function settings in the maps).
    /// A `--filter` is compiled for each function and evaluated at `site`.
    pub fn start_with(
        common: &Common,
        what: &str,
        programs: &[&str],
        site: crate::filter::Site,
        sizes: impl Fn(u32) -> Vec<(&'static str, u32)>,
        setup: impl FnOnce(&Session) -> Result<(), CliError>,
    ) -> Result<Session, CliError> {
        // The filter's map, sized to the functions, only when there is a filter.
        let filter_map = match site {
            crate::filter::Site::Entry => "FILTERS",
            crate::filter::Site::Return => "FILTERS_RET",
        };
        let sizes = |n: u32| {
            let mut v = sizes(n);
            if common.filter.is_some() {
                v.push((filter_map, n.max(1)));
            }
            v
        };
        let t0 = Instant::now();
        require_privileges("to load eBPF programs and attach uprobes")?;
        crate::human::set_exact(common.exact);
        // A report that cannot be written is said before anything attaches;
        // the file starts empty, and every write after appends to it.
        if let Some(path) = &common.output {
            std::fs::File::create(path)
                .map_err(|e| CliError::new(format!("cannot write the report to {}: {e}", path.display())))?;
        }
        // Entries a killed sonde left behind (its pid gone or reused) go first.
        let stale = sonde::attach::remove_stale_tracefs_entries();
        if stale > 0 {
            eprintln!(
                "sonde: removed {stale} tracefs uprobe{} left by a sonde that was killed",
                if stale == 1 { "" } else { "s" }
            );
        }
        let stop = stop_flag()?;
        // Held before exec until the probes are attached with its pid; dropped
        // unreleased (an error below), it exits without running anything.
        let child = match common.command.as_slice() {
            [] => None,
            cmd => {
                // The report owns stdout: the command's output goes to stderr.
                let to_stderr = common.json && common.output.is_none();
                Some(HeldCommand::spawn_with(cmd, to_stderr).map_err(|e| CliError::new(e.to_string()))?)
            }
        };
        let (job, groups, follow) =
            Self::attach_all(common, programs, &sizes, child.as_ref().map(HeldCommand::pid), site)?;
        let attach_ms = t0.elapsed().as_secs_f64() * 1e3;
        // A session program says how its session ran (native or emulated).
        let tier = match job.session_mode() {
            Some(mode) => format!("{}, {}", job.tier().name(), mode.name()),
            None => job.tier().name().to_string(),
        };
        let end = match (&child, common.duration, common.pid) {
            (Some(_), _, _) => "until the command exits".to_string(),
            (None, Some(d), _) => format!("for {} s", d.as_secs_f64()),
            (None, None, Some(pid)) => format!("until process {pid} exits (Ctrl-C to stop)"),
            (None, None, None) => "Ctrl-C to stop".to_string(),
        };
        let end = if follow.is_empty() {
            end
        } else {
            format!("following its child processes; {end}")
        };
        let sets: Vec<&FunctionSet> = groups.iter().filter_map(|g| job.group(*g)).map(|(s, _)| s).collect();
        let count: usize = sets.iter().map(|s| s.len()).sum();
        let path = match sets.as_slice() {
            [one] => crate::human::text(&one.path().display().to_string()),
            many => format!("{} binaries", many.len()),
        };
        let status = format!(
            "sonde: {what} {count} function{} of {path} (tier {tier}, attached in {attach_ms:.1} ms); {end}",
            if count == 1 { "" } else { "s" },
        );
        let files = FileWatch::new();
        for s in &sets {
            files.add(s.path());
        }
        let mut session = Session {
            job,
            groups,
            child,
            stop,
            duration: common.duration,
            traced: common.pid.map(ProcessWatch::new),
            _follow: follow,
            started: Instant::now(),
            files,
        };
        // On failure the attachments drop with the session: nothing stays attached.
        if let Some(expr) = &common.filter {
            crate::filter::apply(&session, expr, site, filter_map)?;
        }
        write_usdt_specs(&session)?;
        setup(&session)?;
        if let Some(c) = &mut session.child {
            c.release().map_err(|e| CliError::new(e.to_string()))?;
        }
        eprintln!("{status}");
        session.started = Instant::now();
        Ok(session)
    }

    fn attach_all(
        common: &Common,
        programs: &[&str],
        sizes: &dyn Fn(u32) -> Vec<(&'static str, u32)>,
        child: Option<u32>,
        site: crate::filter::Site,
    ) -> Result<(Job, Vec<GroupId>, Vec<sonde::TracepointLink>), CliError> {
        let pid = child.or(common.pid);
        // A followed tree is filtered in the program (a map of its processes fed
        // by the fork tracepoint): the uprobes then attach for every process.
        let follow = match (child, common.pid) {
            (Some(_), _) => !common.no_follow,
            (None, Some(_)) => common.follow,
            (None, None) => false,
        };
        let spinner = progress(common.json);
        let mut sets = Vec::new();
        for (binary, patterns) in probe_groups(&common.target, &common.patterns)? {
            spinner.set_message(format!(
                "resolving {} in {binary}",
                sonde::resolve::shorten(&patterns.join(" "))
            ));
            let mut query = Functions::in_binary(&binary).patterns(patterns);
            if let Some(pid) = pid.or(common.container) {
                query = query.pid(pid);
            }
            let set = query.resolve()?;
            if !set.skipped().is_empty() {
                let names: Vec<&str> = set.skipped().iter().take(5).map(|(n, _)| n.as_str()).collect();
                eprintln!(
                    "sonde: skipping {} function{} of {binary} the kernel cannot probe (first instruction refused): {}{}",
                    set.skipped().len(),
                    if set.skipped().len() == 1 { "" } else { "s" },
                    names.join(", "),
                    if set.skipped().len() > 5 { ", …" } else { "" }
                );
            }
            sets.push(set);
        }
        let total: usize = sets.iter().map(FunctionSet::len).sum();
        let n = u32::try_from(total).map_err(|_| CliError::new("too many functions"))?;
        let mut options = AttachOptions::default();
        if let (Some(pid), false) = (pid, follow) {
            options = options.pid(pid);
        }
        if let Some(tier) = common.tier {
            options = options.tier(tier);
        }
        // One program per job: the maps are sized by the caller (indexed by
        // cookie), the registry holds exactly these functions, cookies distinct
        // across binaries (one multi link per binary).
        // The object holds every command's maps: those this run does not use
        // are made as small as the kernel allows, then the command's sizes.
        let emulated = programs.iter().any(|p| p.starts_with("latency"))
            && sonde::SessionMode::expected(&options) != Some(sonde::SessionMode::Native);
        let usdt = common
            .patterns
            .iter()
            .chain([&common.target])
            .any(|p| p.contains("usdt:"));
        let used = [
            ("TRACED", follow),
            ("BY_KEY", common.by.is_some()),
            ("STACKS", common.by == Some(By::Stack)),
            ("USDT_SPECS", usdt),
            ("SESSION_SLOTS", emulated),
        ];
        let used: Vec<&str> = used.iter().filter(|(_, u)| *u).map(|(m, _)| *m).collect();
        let builder = Job::builder(PROBES).capacity(n.max(1), &[]).options(options);
        let mut builder = shrink_unused(builder, &used);
        for (map, entries) in sizes(n) {
            builder = builder.map_size(map, entries);
        }
        for p in programs {
            builder = builder.program(p);
        }
        let mut job = builder.build()?;
        if common.filter.is_some() {
            // On before any probe attaches: until a function's filter is
            // written, its hits do not count.
            update_settings(job.object(), |s| {
                s.filter = if site == crate::filter::Site::Entry { 1 } else { 2 };
            })?;
        }
        let links = match (pid, follow) {
            (Some(root), true) => follow_tree(&mut job, root, child.is_none())?,
            _ => Vec::new(),
        };
        spinner.set_message(format!("attaching {} to {total} functions", programs.join(", ")));
        let mut groups = Vec::with_capacity(sets.len());
        for set in sets {
            groups.push(job.add_set(set)?);
        }
        spinner.finish_and_clear();
        Ok((job, groups, links))
    }

    /// The object: the programs' maps.
    pub fn object(&self) -> &sonde::Object {
        self.job.object()
    }

    /// Every function, binary by binary, with its cookie.
    pub fn functions(&self) -> Vec<SessionFunction<'_>> {
        let mut out = Vec::new();
        for (set, cookies) in self.groups.iter().filter_map(|g| self.job.group(*g)) {
            for (function, &cookie) in set.iter().zip(cookies) {
                out.push(SessionFunction { cookie, set, function });
            }
        }
        out
    }

    /// Each function's report identity by cookie (the `--by` tables).
    pub fn function_ids(&self) -> std::collections::HashMap<u64, crate::report::FunctionId> {
        let several = self.several_binaries();
        self.functions()
            .iter()
            .map(|f| (f.cookie, crate::report::FunctionId::of(f, several)))
            .collect()
    }

    /// Whether functions of more than one binary are traced (reports then
    /// name each function's binary).
    pub fn several_binaries(&self) -> bool {
        self.groups.len() > 1
    }

    /// Waits for the end (signal, duration, command exit), calling `tick` every
    /// `every` until then.
    pub fn wait(&mut self, every: Duration, mut tick: impl FnMut(&Session)) -> Stop {
        let mut next = Instant::now() + every;
        loop {
            if let Some(stop) = self.should_stop() {
                return stop;
            }
            if Instant::now() >= next {
                tick(self);
                next += every;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the wait should end now (for commands with their own loop).
    pub fn should_stop(&mut self) -> Option<Stop> {
        if self.stop.load(Ordering::Relaxed) {
            return Some(Stop::Signal);
        }
        if self.duration.is_some_and(|d| self.started.elapsed() >= d) {
            return Some(Stop::Duration);
        }
        if let Some(w) = self.traced.as_ref().filter(|w| w.exited()) {
            return Some(Stop::ProcessExited(w.pid()));
        }
        if self.files.wait(Duration::ZERO) {
            // Each set keeps the fingerprint of the file it was read from.
            let rewritten = self
                .groups
                .iter()
                .filter_map(|g| self.job.group(*g))
                .map(|(set, _)| set)
                .find(|set| set.fingerprint().change_at(set.path()) == Some(Change::Rewritten))
                .map(|set| crate::human::text(&set.path().display().to_string()));
            if let Some(path) = rewritten {
                // Detached before anything else: new mappings of the file must
                // not get breakpoints at the old offsets.
                self.job.take_attachments().into_iter().for_each(Attachment::detach);
                return Some(Stop::Rewritten(path));
            }
        }
        self.child.as_mut().and_then(HeldCommand::try_wait).map(Stop::Exited)
    }

    /// The tier that ran.
    pub fn tier(&self) -> Tier {
        self.job.tier()
    }

    /// How a session program ran (`latency`), `None` for the other programs.
    pub fn session_mode(&self) -> Option<sonde::SessionMode> {
        self.job.session_mode()
    }

    /// Detaches everything. Per-target tiers take ~0.1 s per probe in the kernel:
    /// the summary is printed before this is called. When that adds up to a
    /// second or more, sonde says so, and a second Ctrl-C leaves the rest to a
    /// background process so sonde exits at once.
    pub fn close(self) {
        let Session { mut job, stop, .. } = self;
        let attachments = job.take_attachments();
        let estimate: Duration = attachments.iter().map(|a| a.plan().detach_estimate).sum();
        if estimate < Duration::from_secs(1) || attachments.iter().all(|a| !a.tier().per_target()) {
            attachments.into_iter().for_each(Attachment::detach);
            return;
        }
        let probes: usize = attachments.iter().map(|a| a.sites().len()).sum();
        eprintln!(
            "sonde: detaching {probes} probes takes about {:.0} s (the kernel removes per-target uprobes one at a \
             time); Ctrl-C again to leave it to a background process",
            estimate.as_secs_f64()
        );
        stop.store(false, Ordering::SeqCst);
        let handles: Vec<sonde::DetachHandle> = attachments.into_iter().map(Attachment::detach_in_background).collect();
        while !handles.iter().all(sonde::DetachHandle::is_finished) {
            if stop.load(Ordering::SeqCst) {
                let left: usize = handles.iter().map(|h| h.progress().1 - h.progress().0).sum();
                let mut children = Vec::new();
                for h in handles {
                    match h.hand_off() {
                        Ok(Some(pid)) => children.push(pid.to_string()),
                        Ok(None) => {}
                        Err(e) => eprintln!("sonde: cannot hand the detach off ({e}); the exit waits for it"),
                    }
                }
                if !children.is_empty() {
                    eprintln!(
                        "sonde: left the detach of {left} probes to process {} (they stay attached until it is done)",
                        children.join(", ")
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Prints the summary (`{"tier", "functions"}` with `--json`, else `print`),
    /// then detaches; returns the exit status for `stop`.
    pub fn finish<T: serde::Serialize>(
        self,
        stop: Stop,
        common: &Common,
        rows: Vec<T>,
        print: impl FnOnce(&mut dyn std::io::Write, &[T]) -> std::io::Result<()>,
    ) -> Result<i32, CliError> {
        let mut out = report_output(common)?;
        if common.json {
            crate::report::write_report(&mut out, self.tier(), self.session_mode(), rows)?;
        } else {
            print(&mut out, &rows)?;
        }
        out.flush()?;
        drop(out);
        self.close();
        Ok(crate::exit_code(stop))
    }
}

/// Where the report goes: `-o FILE` (emptied when the session started,
/// appended to since: interval tables, then the summary), else stdout.
pub fn report_output(common: &Common) -> Result<Box<dyn std::io::Write>, CliError> {
    Ok(match &common.output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| CliError::new(format!("cannot write the report to {}: {e}", path.display())))?;
            Box::new(std::io::BufWriter::new(file))
        }
        None => Box::new(std::io::stdout().lock()),
    })
}

fn progress(json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(80));
    bar
}

/// Starts following the process tree of `root` before any uprobe attaches: the
/// fork and exit tracepoints keep `TRACED` up to date, `root` (and, for a
/// running process, its descendants of the moment) seed it, then `FOLLOW`
/// switches the programs to filtering by it.
fn follow_tree(job: &mut Job, root: u32, running: bool) -> Result<Vec<sonde::TracepointLink>, CliError> {
    use sonde::maps::HashMap;
    let offset = sonde::TracePoint::field_offset("sched", "sched_process_fork", "child_pid").map_err(|e| {
        CliError::new(format!(
            "{e} (needed to follow child processes; --no-follow traces only the command)"
        ))
    })?;
    update_settings(job.object(), |s| s.child_pid_offset = u64::from(offset))?;
    let object = job.object_mut();
    let traced: HashMap<u32, u8> = HashMap::new(object.map("TRACED")?)?;
    let mut links = Vec::new();
    for program in ["follow_fork", "follow_exit"] {
        links.push(object.tracepoint(program)?.attach()?);
    }
    traced.insert(&root, &1)?;
    if running {
        for pid in sonde::process::descendants(root) {
            traced.insert(&pid, &1)?;
        }
    }
    update_settings(job.object(), |s| s.follow = 1)?;
    Ok(links)
}

/// Changes the job's settings (the programs' `.data.settings` global).
pub fn update_settings(
    object: &sonde::Object,
    change: impl FnOnce(&mut crate::record::Settings),
) -> Result<(), CliError> {
    let map = sonde::maps::Array::<crate::record::Settings>::new(object.map(crate::record::SETTINGS_SECTION)?)?;
    let mut s = map.get(0)?;
    change(&mut s);
    map.set(0, &s)?;
    Ok(())
}

/// USDT probes: each one's argument spec at its cookie in the programs'
/// `USDT_SPECS`, so arguments are read as the note says.
fn write_usdt_specs(session: &Session) -> Result<(), CliError> {
    let functions = session.functions();
    let usdt: Vec<_> = functions
        .iter()
        .filter_map(|f| f.function.usdt.as_ref().map(|u| (f.cookie, u)))
        .collect();
    if usdt.is_empty() {
        return Ok(());
    }
    let specs = session.object().usdt_specs()?;
    for (cookie, probe) in usdt {
        let index = u32::try_from(cookie).ok().filter(|i| *i < specs.len()).ok_or_else(|| {
            CliError::new(format!(
                "{}: USDT probes need cookies below {}",
                crate::human::text(&probe.label()),
                specs.len()
            ))
        })?;
        match probe.spec(cookie) {
            Ok(spec) => specs.set(index, &spec)?,
            Err(e) => eprintln!(
                "sonde: {}: its arguments read as registers",
                crate::human::text(&e.to_string())
            ),
        }
    }
    update_settings(session.object(), |s| s.usdt = 1)
}
