//! The probing commands' arguments and their parsers: what clap reads, checked
//! before anything attaches.

use std::time::Duration;

use clap::Args;
use sonde::Tier;

use crate::error::CliError;

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
    /// Trace only processes in this cgroup (v2) and the cgroups below it,
    /// filtered in the program: a path, absolute or relative to the cgroup v2
    /// mount (`system.slice/nginx.service`, a container's or a pod's cgroup).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<std::path::PathBuf>,
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
    /// Print counts rounded (`18k`, not `18342`); they are whole by default.
    #[arg(long)]
    pub round: bool,
    /// Counts whole (the default; kept for scripts that pass it).
    #[arg(long, hide = true, conflicts_with = "round")]
    pub exact: bool,
    /// Also print a table every SECS seconds with the calls of that interval
    /// (`count`; with `--json`, one `{"interval", "functions"}` line each).
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Count only the calls EXPR selects, evaluated in the program:
    /// comparisons (== != < <= > >=) of arg0..arg5, ret, pid, tid, comm or
    /// func with numbers or "strings" (a trailing * matches a prefix), joined
    /// by && and || with parentheses: `--filter 'arg0 > 4096 && comm == "nginx"'`.
    /// Numbers compare as signed 64-bit unless typed: `arg1:i` (a C int),
    /// `:u` (unsigned), `:l` (long), `:x` (unsigned 64-bit); `trace --args`
    /// types and a USDT note's signs apply too.
    #[arg(long, value_name = "EXPR", value_parser = crate::filter::FilterExpr::parse)]
    pub filter: Option<crate::filter::FilterExpr>,
    /// Break down by pid, tid, comm, cgroup (the caller's cgroup v2, by path),
    /// stack (the user stack, named), argN
    /// (`arg0`..`arg5`, signed), the C string an argument points to (`arg0:s`,
    /// up to 63 bytes) or ret (the return value, counted at return), or two
    /// of them (`comm,pid`, `pid,arg1`, `comm,arg0:s`): one row per (function,
    /// key), counted in the program (`count`, with `-i` per interval too;
    /// `latency` takes pid, tid, comm, cgroup and ret).
    #[arg(long, value_name = "KEY[,KEY]", value_parser = parse_by)]
    pub by: Option<ByKeys>,
    /// Write the report (table, JSON, trace lines) to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    /// `count --by stack`: also write the stacks to FILE as folded lines
    /// (`outer;...;function COUNT`, what flamegraph.pl and inferno read).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,
    /// `count --by stack`: also draw the stacks as an SVG flame graph in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,
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

impl Common {
    /// Refuses `-i` for a command that has no interval tables (it would be
    /// ignored without a word).
    pub fn no_interval(&self, command: &str) -> Result<(), CliError> {
        if self.interval.is_some() {
            return Err(CliError::new(format!(
                "-i prints interval tables of `sonde count`; `sonde {command}` has none: drop -i (or use -d for a fixed run)"
            )));
        }
        self.stack_files_need_count_by_stack(command)
    }

    /// `--folded` and `--flamegraph` draw `sonde count --by stack`'s rows:
    /// refused anywhere else, before anything attaches.
    pub fn stack_files_need_count_by_stack(&self, command: &str) -> Result<(), CliError> {
        let by_stack = command == "count" && self.by.as_ref().is_some_and(|b| b.has(By::Stack));
        match (&self.folded, &self.flamegraph) {
            (None, None) => Ok(()),
            (folded, svg) if by_stack => {
                // An unwritable file is said before anything attaches.
                for path in [folded, svg].into_iter().flatten() {
                    std::fs::File::create(path)
                        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
                }
                Ok(())
            }
            (Some(_), _) => Err(CliError::new(
                "--folded writes the stacks of `sonde count --by stack`: add --by stack (to count)",
            )),
            (None, Some(_)) => Err(CliError::new(
                "--flamegraph draws the stacks of `sonde count --by stack`: add --by stack (to count)",
            )),
        }
    }
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
    /// The C string argument N (0..=5) points to (`argN:s`).
    ArgStr(u8),
    /// The return value (`count` and `latency`: counted at return).
    Ret,
    /// The user stack.
    Stack,
    /// The cgroup (v2) of the calling process.
    Cgroup,
    /// The container of the calling process, named from its cgroup's path
    /// (Docker, containerd, CRI-O, Podman, Kubernetes pods).
    Container,
}

impl By {
    /// The name of the key (`pid`, `arg1`), as JSON rows carry it.
    pub fn name(self) -> String {
        match self {
            By::Pid => "pid".into(),
            By::Tid => "tid".into(),
            By::Comm => "comm".into(),
            By::Stack => "stack".into(),
            By::Arg(n) | By::ArgStr(n) => format!("arg{n}"),
            By::Ret => "ret".into(),
            By::Cgroup => "cgroup".into(),
            By::Container => "container".into(),
        }
    }
}

/// A `--by` key: one or two parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByKeys(Vec<By>);

impl ByKeys {
    /// The parts, in the order given.
    pub fn parts(&self) -> &[By] {
        &self.0
    }

    /// Whether `part` is one of them.
    pub fn has(&self, part: By) -> bool {
        self.0.contains(&part)
    }

    /// `comm,pid`.
    pub fn name(&self) -> String {
        let names: Vec<String> = self.0.iter().map(|b| b.name()).collect();
        names.join(",")
    }

    /// The program's settings: (kind, arg) of the first part and of the
    /// second (0, 0 without one).
    pub fn settings(&self) -> [(u64, u64); 2] {
        use crate::record::{BY_ARG, BY_ARG_STR, BY_CGROUP, BY_COMM, BY_PID, BY_RET, BY_STACK, BY_TID};
        let of = |b: Option<&By>| match b {
            Some(By::Pid) => (BY_PID, 0),
            Some(By::Tid) => (BY_TID, 0),
            Some(By::Comm) => (BY_COMM, 0),
            Some(By::Stack) => (BY_STACK, 0),
            Some(By::Arg(n)) => (BY_ARG, u64::from(*n)),
            Some(By::ArgStr(n)) => (BY_ARG_STR, u64::from(*n)),
            Some(By::Ret) => (BY_RET, 0),
            // The program keys by cgroup; the host names its container.
            Some(By::Cgroup) | Some(By::Container) => (BY_CGROUP, 0),
            None => (0, 0),
        };
        [of(self.0.first()), of(self.0.get(1))]
    }
}

/// Parses `--by`: one part, or two separated by a comma.
pub fn parse_by(s: &str) -> Result<ByKeys, String> {
    let parts = s
        .split(',')
        .map(|p| parse_by_part(p.trim()))
        .collect::<Result<Vec<By>, String>>()?;
    match parts.as_slice() {
        [_] => Ok(ByKeys(parts)),
        [a, b] if a == b => Err(format!("`{s}`: the same key twice")),
        [a, b] if [a, b].iter().all(|p| matches!(p, By::Cgroup | By::Container)) => {
            Err(format!("`{s}`: a container is named from its cgroup: one of the two"))
        }
        [a, b] if *a == By::Stack || *b == By::Stack => Err(format!("`{s}`: a stack is a key of its own")),
        [By::ArgStr(_), By::ArgStr(_)] => Err(format!("`{s}`: one string part per key")),
        [a, b]
            if [a, b].iter().any(|p| **p == By::Ret)
                && [a, b].iter().any(|p| matches!(p, By::Arg(_) | By::ArgStr(_))) =>
        {
            Err(format!(
                "`{s}`: `ret` is counted at return, where the arguments are gone"
            ))
        }
        [_, _] => Ok(ByKeys(parts)),
        _ => Err(format!("`{s}`: at most two keys (`comm,pid`)")),
    }
}

/// Parses one part of `--by`.
fn parse_by_part(s: &str) -> Result<By, String> {
    match s {
        "pid" => Ok(By::Pid),
        "tid" => Ok(By::Tid),
        "comm" => Ok(By::Comm),
        "stack" => Ok(By::Stack),
        "ret" => Ok(By::Ret),
        "cgroup" => Ok(By::Cgroup),
        "container" => Ok(By::Container),
        _ => {
            let (arg, string) = match s.strip_suffix(":s") {
                Some(arg) => (arg, true),
                None => (s, false),
            };
            match arg.strip_prefix("arg").and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if n <= 5 && string => Ok(By::ArgStr(n)),
                Some(n) if n <= 5 => Ok(By::Arg(n)),
                _ => Err(format!(
                    "`{s}`: break down by pid, tid, comm, cgroup, container, stack, ret, arg0..arg5 or a string argument arg0:s..arg5:s"
                )),
            }
        }
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

pub fn parse_tier(s: &str) -> Result<Tier, String> {
    Tier::from_name(s).ok_or_else(|| format!("unknown tier `{s}` (one of: multi, perf-link, emulated, tracefs)"))
}
