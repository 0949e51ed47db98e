//! What every probing command shares: privileges, the command to trace, resolving
//! the functions, loading the programs with per-function maps sized, attaching
//! with the best (or pinned) tier, waiting for the end, and stopping.

use std::ffi::CString;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use sonde::{AttachOptions, Attachment, FunctionSet, Functions, Object, Tier};

use crate::CliError;

/// The eBPF programs of the command, built by build.rs.
pub const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cli-probes.bpf.o"));

/// Options every probing command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Binary or library: a path, or a bare library name (`libc`, `libssl.so.3`)
    /// looked up in the traced process, then ld.so.cache and the library path.
    pub target: String,
    /// Functions: globs (`*`, `?`, `[...]`) or exact names, raw or demangled
    /// (`str*`, `*HashMap*insert*`, `geo::Shape::area`, `memcpy@GLIBC_2.2.5`).
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Trace only this process (default: every process that runs TARGET);
    /// sonde ends, with its summary, when the process exits.
    #[arg(short, long, value_name = "PID", conflicts_with = "command", value_parser = parse_pid, allow_negative_numbers = true)]
    pub pid: Option<u32>,
    /// Stop after SECS seconds, e.g. 10 or 0.5 (default: at Ctrl-C, or when
    /// COMMAND exits).
    #[arg(short, long, value_name = "SECS", value_parser = parse_duration, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Pin the attach mechanism instead of the best the kernel has:
    /// multi (6.6+), perf-link (5.15+), emulated (5.10), tracefs.
    #[arg(long, value_name = "TIER", value_parser = parse_tier)]
    pub tier: Option<Tier>,
    /// Machine-readable output on stdout (no progress, no live table).
    #[arg(long)]
    pub json: bool,
    /// Command to run and trace from its first instruction; tracing stops when
    /// it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
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

/// How a report names a function: raw and demangled names, version, cookie.
#[derive(serde::Serialize)]
pub struct FunctionId {
    /// Raw symbol name.
    pub name: String,
    /// Demangled name, if mangled.
    pub demangled: Option<String>,
    /// Symbol version, if versioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The name shown in tables.
    #[serde(skip)]
    pub label: String,
    /// The cookie (index in the resolved list).
    pub cookie: u64,
}

impl FunctionId {
    /// The identity of `f` in `set`.
    pub fn of(set: &FunctionSet, f: &sonde::FunctionMatch) -> Self {
        FunctionId {
            name: f.name.clone(),
            demangled: set.demangled(f).map(str::to_string),
            version: f.symbol.version.clone(),
            label: set.label(f),
            cookie: f.cookie,
        }
    }
}

/// The end-of-run JSON object of `count` and `latency`.
#[derive(serde::Serialize)]
struct Report<T> {
    /// The tier that ran.
    pub tier: String,
    /// One row per function.
    pub functions: Vec<T>,
}

/// Writes `{"tier", "functions"}` as one line.
fn write_report<T: serde::Serialize>(
    out: &mut impl std::io::Write,
    tier: Tier,
    functions: Vec<T>,
) -> Result<(), CliError> {
    let report = Report {
        tier: tier.name().to_string(),
        functions,
    };
    serde_json::to_writer(&mut *out, &report).map_err(|e| CliError::new(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

/// Why the wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// `--duration` elapsed.
    Duration,
    /// The traced command exited with this status.
    Exited(i32),
    /// The `-p` process exited.
    ProcessExited(u32),
}

/// A process traced with `-p`, watched through a pidfd (Linux 5.3+): readable
/// once the process has exited, and immune to pid reuse.
struct Watched {
    pid: u32,
    /// `None` where pidfd_open failed (gone already, or a kernel without it):
    /// then `/proc/PID` is looked at.
    fd: Option<std::os::fd::OwnedFd>,
}

impl Watched {
    fn open(pid: u32) -> Option<Watched> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags; the returned fd is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0);
        // SAFETY: a new descriptor nobody else owns.
        let fd = fd.map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        Some(Watched { pid, fd })
    }

    fn exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.fd else {
            return sonde::process::stat(self.pid).is_none();
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
    }
}

/// A job attached and running.
pub struct Session {
    /// Programs and maps.
    pub object: Object,
    /// The functions; cookie = index.
    pub set: FunctionSet,
    attachments: Vec<Attachment>,
    child: Option<Child>,
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
    /// The `-p` process, watched for its exit.
    traced: Option<Watched>,
    /// When counting began (after attach).
    pub started: Instant,
}

/// A command forked and held before `exec` until the probes are attached.
struct Child {
    pid: libc::pid_t,
    gate: libc::c_int,
    exec_status: libc::c_int,
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
        job: &str,
        programs: &[&str],
        sizes: impl Fn(u32) -> Vec<(&'static str, u32)>,
    ) -> Result<Session, CliError> {
        let t0 = Instant::now();
        require_privileges("to load eBPF programs and attach uprobes")?;
        // Entries a killed sonde left behind (its pid gone or reused) go first.
        let stale = sonde::attach::remove_stale_tracefs_entries();
        if stale > 0 {
            eprintln!(
                "sonde: removed {stale} tracefs uprobe{} left by a sonde that was killed",
                if stale == 1 { "" } else { "s" }
            );
        }
        let stop = stop_flag()?;
        let mut child = match common.command.as_slice() {
            [] => None,
            cmd => Some(spawn_gated(cmd)?),
        };
        let result = Self::attach_all(common, programs, &sizes, child.as_ref().map(|c| c.pid as u32));
        let (object, set, attachments) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(c) = child.take() {
                    c.kill();
                }
                return Err(e);
            }
        };
        if let Some(c) = &child {
            // On failure the attachments drop here: nothing stays attached.
            c.release()?;
        }
        let attach_ms = t0.elapsed().as_secs_f64() * 1e3;
        let tier = attachments.first().map_or("-", |a| a.tier().name());
        let end = match (&child, common.duration, common.pid) {
            (Some(_), _, _) => "until the command exits".to_string(),
            (None, Some(d), _) => format!("for {} s", d.as_secs_f64()),
            (None, None, Some(pid)) => format!("until process {pid} exits (Ctrl-C to stop)"),
            (None, None, None) => "Ctrl-C to stop".to_string(),
        };
        eprintln!(
            "sonde: {job} {} function{} of {} (tier {tier}, attached in {attach_ms:.1} ms); {end}",
            set.len(),
            if set.len() == 1 { "" } else { "s" },
            set.path().display(),
        );
        Ok(Session {
            object,
            set,
            attachments,
            child,
            stop,
            duration: common.duration,
            traced: common.pid.and_then(Watched::open),
            started: Instant::now(),
        })
    }

    fn attach_all(
        common: &Common,
        programs: &[&str],
        sizes: &dyn Fn(u32) -> Vec<(&'static str, u32)>,
        child: Option<u32>,
    ) -> Result<(Object, FunctionSet, Vec<Attachment>), CliError> {
        let pid = child.or(common.pid);
        let spinner = progress(common.json);
        spinner.set_message(format!(
            "resolving {} in {}",
            sonde::resolve::shorten(&common.patterns.join(" ")),
            common.target
        ));
        let mut query = Functions::in_binary(&common.target).patterns(common.patterns.iter().cloned());
        if let Some(pid) = pid {
            query = query.pid(pid);
        }
        let set = query.resolve()?;
        if !set.skipped().is_empty() {
            let names: Vec<&str> = set.skipped().iter().take(5).map(|(n, _)| n.as_str()).collect();
            eprintln!(
                "sonde: skipping {} function{} the kernel cannot probe (first instruction refused): {}{}",
                set.skipped().len(),
                if set.skipped().len() == 1 { "" } else { "s" },
                names.join(", "),
                if set.skipped().len() > 5 { ", …" } else { "" }
            );
        }
        let n = u32::try_from(set.len()).map_err(|_| CliError::new("too many functions"))?;
        let mut object = Object::load_with(PROBES, &sizes(n))?;
        let mut options = AttachOptions::default();
        if let Some(pid) = pid {
            options = options.pid(pid);
        }
        if let Some(tier) = common.tier {
            options = options.tier(tier);
        }
        let mut attachments = Vec::new();
        for program in programs {
            spinner.set_message(format!("attaching {program} to {} functions", set.len()));
            let probe = object.uprobe(program)?;
            attachments.push(probe.attach_sites(set.targets(), &options)?);
        }
        spinner.finish_and_clear();
        Ok((object, set, attachments))
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
            return Some(Stop::ProcessExited(w.pid));
        }
        self.child.as_mut().and_then(Child::try_wait).map(Stop::Exited)
    }

    /// The tier that ran.
    pub fn tier(&self) -> Tier {
        self.attachments.first().map_or(Tier::Multi, Attachment::tier)
    }

    /// Detaches everything. Per-target tiers take ~0.1 s per probe in the kernel:
    /// the summary is printed before this is called. When that adds up to a
    /// second or more, sonde says so, and a second Ctrl-C leaves the rest to a
    /// background process so sonde exits at once.
    pub fn close(self) {
        let Session { attachments, stop, .. } = self;
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
        json: bool,
        rows: Vec<T>,
        print: impl FnOnce(&mut std::io::StdoutLock<'static>, &[T]) -> std::io::Result<()>,
    ) -> Result<i32, CliError> {
        let mut out = std::io::stdout().lock();
        if json {
            write_report(&mut out, self.tier(), rows)?;
        } else {
            print(&mut out, &rows)?;
        }
        std::io::Write::flush(&mut out)?;
        drop(out);
        self.close();
        Ok(crate::exit_code(stop))
    }
}

fn progress(json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(80));
    bar
}

/// Forks `cmd`, held before exec until [`Child::release`]: the probes are
/// attached with its pid first, so it is traced from its first instruction.
fn spawn_gated(cmd: &[String]) -> Result<Child, CliError> {
    let args: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| CliError::new("a command argument contains a NUL byte")))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut gate = [0; 2];
    let mut status = [0; 2];
    // SAFETY: plain pipe creation into local arrays.
    if unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        || unsafe { libc::pipe2(status.as_mut_ptr(), libc::O_CLOEXEC) } != 0
    {
        return Err(CliError::new(format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: the child only calls async-signal-safe functions (read, write,
    // execvp, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CliError::new(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        unsafe {
            // Only the read end of the gate and the write end of the status pipe
            // stay open here, or the gate never reads end-of-file.
            libc::close(gate[1]);
            libc::close(status[0]);
            let mut b = 0u8;
            libc::read(gate[0], (&mut b as *mut u8).cast(), 1);
            if b == 1 {
                libc::execvp(argv[0], argv.as_ptr());
                let err = *libc::__errno_location();
                libc::write(status[1], (&err as *const i32).cast(), 4);
            }
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copies of the child's ends.
    unsafe {
        libc::close(gate[0]);
        libc::close(status[1]);
    }
    Ok(Child {
        pid,
        gate: gate[1],
        exec_status: status[0],
    })
}

impl Child {
    /// Lets the command exec; an exec failure (no such command) is an error.
    fn release(&self) -> Result<(), CliError> {
        let go = 1u8;
        let mut err = 0i32;
        // SAFETY: writes one byte, then reads the exec error pipe, which closes
        // on a successful exec (CLOEXEC) and so returns 0 bytes.
        let n = unsafe {
            libc::write(self.gate, (&go as *const u8).cast(), 1);
            libc::read(self.exec_status, (&mut err as *mut i32).cast(), 4)
        };
        if n == 4 {
            return Err(CliError::new(format!(
                "cannot run the command: {} (is it on PATH?)",
                std::io::Error::from_raw_os_error(err)
            )));
        }
        Ok(())
    }

    fn try_wait(&mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waits for our own child without blocking.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        (r == self.pid).then(|| {
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            }
        })
    }

    fn kill(mut self) {
        // SAFETY: closing the gate makes the child exit without exec; reap it.
        unsafe {
            libc::close(self.gate);
            self.gate = -1;
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: our own pipe ends, each closed once.
        unsafe {
            if self.gate >= 0 {
                libc::close(self.gate);
            }
            libc::close(self.exec_status);
        }
    }
}
