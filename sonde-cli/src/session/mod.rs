//! What every probing command shares: privileges, the command to trace, resolving
//! the functions, loading the programs with per-function maps sized, attaching
//! with the best (or pinned) tier, waiting for the end, and stopping.

mod object;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sonde::command::{HeldCommand, ProcessWatch};
use sonde::resolve::watch::{Change, FileWatch};
use sonde::{Attachment, FunctionSet, GroupId, Job, Tier};

pub use crate::scope::update_settings;
pub use object::usdt_types;

use crate::args::Common;
use crate::error::CliError;
use crate::filter::Site;
use crate::probes::{Map, Program};
use crate::report::{FunctionId, SessionFunction};
use crate::system::{require_privileges, stop_flag};

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

impl Stop {
    /// Exit status: the traced command's, else 0 (130 after Ctrl-C, as shells do).
    pub fn exit_code(self) -> i32 {
        match self {
            Stop::Exited(code) => code,
            Stop::Duration => 0,
            Stop::ProcessExited(pid) => {
                eprintln!("sonde: process {pid} exited");
                0
            }
            Stop::Signal => 130,
            Stop::Rewritten(path) => {
                eprintln!(
                "sonde: {path} was rewritten in place while probed: every probe was detached at once (the old offsets may fall inside the new code); the figures above end there, run sonde again to probe the new file"
            );
                1
            }
        }
    }
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
    /// `--cgroup`: the cgroups counted, kept up to date.
    _cgroup: Option<crate::scope::CgroupWatch>,
    /// When counting began (after attach).
    pub started: Instant,
    /// The probed binaries, watched for writes.
    files: FileWatch,
}

impl Session {
    /// Resolves, loads `programs` with `sizes(n)` map sizes, attaches each to
    /// every function, then lets the command (if any) start.
    pub fn start(
        common: &Common,
        what: &str,
        programs: &[Program],
        sizes: impl Fn(u32) -> Vec<(Map, u32)>,
    ) -> Result<Session, CliError> {
        Self::start_with(common, what, programs, Site::Entry, sizes, |_| Ok(()))
    }

    /// [`Session::start`], with `setup` run once everything is attached and
    /// before the command runs (per-function settings in the maps).
    /// A `--filter` is compiled for each function and evaluated at `site`,
    /// numbers compared as a USDT note types them.
    pub fn start_with(
        common: &Common,
        what: &str,
        programs: &[Program],
        site: Site,
        sizes: impl Fn(u32) -> Vec<(Map, u32)>,
        setup: impl FnOnce(&Session) -> Result<(), CliError>,
    ) -> Result<Session, CliError> {
        Self::start_typed(common, what, programs, site, sizes, &object::usdt_types, setup)
    }

    /// [`Session::start_with`], `--filter`'s numbers compared as `declared`
    /// types them for each function (`trace --args`).
    pub fn start_typed(
        common: &Common,
        what: &str,
        programs: &[Program],
        site: Site,
        sizes: impl Fn(u32) -> Vec<(Map, u32)>,
        declared: &dyn Fn(&SessionFunction<'_>) -> crate::filter::Declared,
        setup: impl FnOnce(&Session) -> Result<(), CliError>,
    ) -> Result<Session, CliError> {
        // The filter's map, sized to the functions, only when there is a filter.
        let filter_map = match site {
            Site::Entry => Map::Filters,
            Site::Return => Map::FiltersReturn,
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
        crate::human::set_exact(!common.round);
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
        let object::Attached {
            job,
            groups,
            follow,
            cgroup,
        } = object::attach_all(common, programs, &sizes, child.as_ref().map(HeldCommand::pid), site)?;
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
            _cgroup: cgroup,
            started: Instant::now(),
            files,
        };
        // On failure the attachments drop with the session: nothing stays attached.
        if let Some(expr) = &common.filter {
            object::write_filters(session.object(), &session.functions(), expr, site, declared)?;
        }
        object::write_usdt_specs(session.object(), &session.functions())?;
        object::write_go_abi(session.object(), &session.functions())?;
        setup(&session)?;
        if let Some(c) = &mut session.child {
            c.release().map_err(|e| CliError::new(e.to_string()))?;
        }
        eprintln!("{status}");
        session.started = Instant::now();
        Ok(session)
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
    pub fn function_ids(&self) -> std::collections::HashMap<u64, FunctionId> {
        let several = self.several_binaries();
        self.functions()
            .iter()
            .map(|f| (f.cookie, FunctionId::of(f, several)))
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

    /// Detaches everything, without making the user wait for the kernel: per-target
    /// uprobes (~0.1 s each in the kernel, one at a time) and the follow
    /// tracepoints (one grace period each) are handed to a background process
    /// that makes those waits after sonde has exited, in the same total time
    /// (the probes stay no longer than a detach here would have kept them); a
    /// multi link detaches here (one short wait). The summary is printed before.
    pub fn close(self) {
        let Session { mut job, _follow, .. } = self;
        let (slow, quick): (Vec<Attachment>, Vec<Attachment>) =
            job.take_attachments().into_iter().partition(|a| a.tier().per_target());
        let estimate: Duration = slow.iter().map(|a| a.plan().detach_estimate).sum();
        let probes: usize = slow.iter().map(|a| a.sites().len()).sum();
        match sonde::hand_off_all(slow, _follow) {
            Ok(Some(pid)) if estimate >= Duration::from_secs(1) => eprintln!(
                "sonde: {probes} probes detach in the background, process {pid}, in about {:.0} s (the kernel \
                 removes per-target uprobes one at a time)",
                estimate.as_secs_f64()
            ),
            Ok(_) => {}
            Err(e) => eprintln!("sonde: detached before exiting: no background process ({e})"),
        }
        quick.into_iter().for_each(Attachment::detach);
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
        let skipped = self.job.skipped_hits();
        if common.json {
            crate::report::write_report(&mut out, self.tier(), self.session_mode(), skipped, rows)?;
        } else {
            print(&mut out, &rows)?;
        }
        out.flush()?;
        drop(out);
        if let Some(n @ 1..) = skipped {
            eprintln!(
                "sonde: the kernel skipped {n} probe hit{}: a BPF map syscall or another BPF program held \
                 the CPU (tier {} runs programs through the perf-event path, which skips rather than nests; \
                 the multi tier does not): counts are short by {n}",
                if n == 1 { "" } else { "s" },
                self.tier().name(),
            );
        }
        self.close();
        Ok(stop.exit_code())
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
        None => Box::new(WholeLines::new(std::io::stdout().lock())),
    })
}

/// Lines written whole, in writes of at most `PIPE_BUF` bytes where they fit:
/// a pipe takes such a write atomically, so the output of the command sonde
/// runs (the same terminal or pipe, e.g. `sonde trace ... -- cmd | less`)
/// never lands inside one of sonde's lines. A line longer than that goes in
/// one write of its own. What follows the last newline waits for the next
/// write or `flush`.
pub struct WholeLines<W: std::io::Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: std::io::Write> WholeLines<W> {
    /// The atomic size of a pipe write (POSIX: at least 512; Linux: 4096).
    const ATOMIC: usize = libc::PIPE_BUF;

    pub fn new(inner: W) -> WholeLines<W> {
        WholeLines {
            inner,
            buf: Vec::with_capacity(2 * Self::ATOMIC),
        }
    }

    /// Writes complete lines while a full atomic write's worth is waiting
    /// (every complete line when `all`).
    fn drain(&mut self, all: bool) -> std::io::Result<()> {
        let mut start = 0;
        while let Some(last_nl) = self.buf[start..].iter().rposition(|&b| b == b'\n') {
            let complete = &self.buf[start..start + last_nl + 1];
            if !all && complete.len() < Self::ATOMIC {
                break;
            }
            // The most whole lines that fit one atomic write; else one line.
            let cut = match complete[..complete.len().min(Self::ATOMIC)]
                .iter()
                .rposition(|&b| b == b'\n')
            {
                Some(i) => i + 1,
                None => complete
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(complete.len(), |i| i + 1),
            };
            self.inner.write_all(&complete[..cut])?;
            start += cut;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for WholeLines<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        // Only a newline in what came now can complete a line (a JSON report
        // is one long line written in many small pieces: no rescan per piece).
        if data.contains(&b'\n') {
            self.drain(false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain(true)?;
        // A last line without its newline (the end of the output).
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}

impl<W: std::io::Write> Drop for WholeLines<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::WholeLines;

    /// Each write the inner writer received.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for &mut Writes {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_go_out_whole_in_atomic_writes() {
        let mut writes = Writes::default();
        let mut text = Vec::new();
        {
            let mut out = WholeLines::new(&mut writes);
            // 2,000 lines of varied length, written in pieces that cut them
            // anywhere (as a BufWriter's flushes do), one line far longer
            // than a pipe's atomic write, and a last line without newline.
            for i in 0..2000 {
                let line = format!("{i:>8} {}\n", "x".repeat(i % 97));
                text.extend_from_slice(line.as_bytes());
            }
            text.extend_from_slice(format!("{}\n", "y".repeat(10_000)).as_bytes());
            text.extend_from_slice(b"end");
            for piece in text.chunks(8191) {
                out.write_all(piece).expect("write");
            }
        }
        assert_eq!(writes.0.concat(), text, "every byte, in order");
        let last = writes.0.len() - 1;
        for (i, w) in writes.0.iter().enumerate() {
            if i == last {
                assert_eq!(w, b"end");
                continue;
            }
            assert_eq!(w.last(), Some(&b'\n'), "write {i} ends a line");
            let lines = w.iter().filter(|&&b| b == b'\n').count();
            assert!(w.len() <= libc::PIPE_BUF || lines == 1, "write {i}: {} bytes", w.len());
        }
        assert!(writes.0.len() < 100, "batched: {} writes", writes.0.len());
    }

    #[test]
    fn one_long_line_in_small_pieces_costs_its_length() {
        // A JSON report of 100,000 functions: ~10 MB on one line, written a
        // few bytes at a time (a rescan per piece took minutes).
        let mut writes = Writes::default();
        {
            let mut out = WholeLines::new(&mut writes);
            for _ in 0..1_000_000 {
                out.write_all(b"0123456789").expect("write");
            }
            out.write_all(b"\n").expect("newline");
        }
        assert_eq!(writes.0.len(), 1, "one line, one write");
        assert_eq!(writes.0[0].len(), 10_000_001);
    }
}
