//! Shared pieces of sonde's integration tests: the compiled test programs, the
//! target binary, and checks of what the kernel holds.

pub mod agent;
pub mod cgroups;
pub mod cli;
pub mod crafted;
pub mod project;

include!("../fixtures/hostile_names.rs");

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The test programs (`ebpf/`), compiled by build.rs.
pub const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/test-probes.bpf.o"));

mod event;

pub use event::Event;

/// The functions of `target-app`, by the letter its command line uses.
pub const FUNCTIONS: [(&str, char); 4] = [
    ("sonde_fn_a", 'a'),
    ("sonde_fn_b", 'b'),
    ("sonde_fn_c", 'c'),
    ("sonde_fn_d", 'd'),
];

/// What `target-app`'s function `letter` returns for argument `x`.
pub fn expected_return(letter: char, x: u64) -> u64 {
    match letter {
        'a' => x * 3 + 1,
        'b' => x * 5 + 2,
        'c' => x * 7 + 3,
        _ => x * 11 + 4,
    }
}

/// Path of the `target-app` binary (built beside the test binaries).
pub fn target_app() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("target-app")
}

/// A `target-app` started and waiting for the go signal, so probes can be
/// attached to its pid before it calls anything.
pub struct Waiting(Child);

impl Waiting {
    /// Starts `target-app SEQUENCE` (letters a-d, one call each, in order).
    pub fn spawn(sequence: &str) -> Waiting {
        Self::spawn_path(&target_app(), &[sequence])
    }

    /// Starts `path ARGS` with a pipe on stdin; it waits for a line there.
    pub fn spawn_path(path: &std::path::Path, args: &[&str]) -> Waiting {
        let child = Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {} (build it with `cargo build -p sonde-tests`): {e}",
                    path.display()
                )
            });
        Waiting(child)
    }

    /// Waits until the process blocks reading stdin (its libraries are mapped
    /// by then), at most 5 s.
    pub fn until_blocked(self) -> Waiting {
        let path = format!("/proc/{}/syscall", self.pid());
        for _ in 0..500 {
            // First field: the syscall number it sleeps in: read is 0 on
            // x86-64, 63 on arm64.
            let read = if cfg!(target_arch = "aarch64") { "63" } else { "0" };
            if std::fs::read_to_string(&path).is_ok_and(|s| s.split_whitespace().next() == Some(read)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Lets it run its calls and waits for it to exit successfully.
    pub fn run(self) {
        self.run_output();
    }

    /// [`Waiting::run`], returning what it printed.
    pub fn run_output(mut self) -> String {
        let mut stdin = self.0.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write go");
        drop(stdin);
        let out = self.0.wait_with_output().expect("wait target-app");
        assert!(out.status.success(), "probe target failed: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Whether the process can use BPF (root): integration tests need it.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests attach real uprobes: run them as root (cargo xtask test does)"
    );
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

use sonde::maps::HashMap;
use sonde::{AttachOptions, Attachment, Object, Target};

/// The targets `sonde_fn_a..d` of `target-app`, with cookies `cookies[i]`.
pub fn targets(cookies: &[u64]) -> Vec<Target> {
    FUNCTIONS
        .iter()
        .zip(cookies)
        .map(|((name, _), &c)| Target::symbol(target_app(), *name).cookie(c))
        .collect()
}

/// Counts per cookie from a `HashMap<u64, u64>` map, sorted by cookie.
pub fn counts(object: &Object, map: &str) -> Vec<(u64, u64)> {
    let m = HashMap::<u64, u64>::new(object.map(map).expect("map")).expect("typed map");
    let mut v: Vec<(u64, u64)> = m.iter().expect("key walk").collect::<Result<_, _>>().expect("lookups");
    v.sort_unstable();
    v
}

/// The expected per-cookie counts for `sequence` with `cookies[i]` on function i.
pub fn expected_counts(sequence: &str, cookies: &[u64]) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = FUNCTIONS
        .iter()
        .zip(cookies)
        .map(|((_, letter), &c)| (c, sequence.chars().filter(|x| x == letter).count() as u64))
        .filter(|&(_, n)| n > 0)
        .collect();
    v.sort_unstable();
    v
}

/// Loads the test object, attaches `program` to the first `cookies.len()` target
/// functions scoped to a waiting `target-app`, runs it, and returns the object and
/// the attachment (still attached).
pub fn attach_and_run(program: &str, sequence: &str, cookies: &[u64], options: AttachOptions) -> (Object, Attachment) {
    require_root();
    let mut object = Object::load(PROBES).expect("load object");
    let app = Waiting::spawn(sequence);
    let options = options.pid(app.pid());
    let attachment = object
        .uprobe(program)
        .expect("program")
        .attach(&targets(cookies), &options)
        .unwrap_or_else(|e| panic!("attach {program}: {e}"));
    app.run();
    (object, attachment)
}

/// Whether the kernel lists a link of any of these program ids.
pub fn links_of(prog_ids: &[u32]) -> Vec<sonde::inspect::LinkInfo> {
    sonde::inspect::links()
        .expect("list links")
        .into_iter()
        .filter(|l| prog_ids.contains(&l.prog_id))
        .collect()
}

/// The kernel ids of an attachment's programs.
pub fn prog_ids(a: &Attachment) -> Vec<u32> {
    a.programs().iter().map(|p| p.info().expect("prog info").id).collect()
}

/// Records that the running test left `what` out, and why: a `SKIP` line on
/// stdout (seen in the guests, which run with `--nocapture`) and a line in
/// `$SONDE_SKIP_LOG`, which `cargo xtask test` lists by test name at the end:
/// a part of a test that could not run is never a silent pass.
pub fn skip(what: &str, why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP {test}: {what}: {why}");
    println!("{line}");
    if let Some(path) = std::env::var_os("SONDE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Whether this kernel supports `tier` for a one-process scope; records a
/// skip ([`skip`]) naming the missing features when not. Only features the
/// kernel lacks are skipped: `features_match_the_kernel_version` checks
/// detection against the version.
pub fn tier_supported(tier: sonde::Tier) -> bool {
    let f = sonde::Features::current();
    let missing: Vec<String> = tier
        .requires(sonde::Scope::Process(1))
        .into_iter()
        .filter(|x| !f.has(*x))
        .map(|x| x.to_string())
        .collect();
    if !missing.is_empty() {
        skip(
            &format!("tier {tier}"),
            &format!("kernel {} lacks {}", f.kernel_release, missing.join(", ")),
        );
    }
    missing.is_empty()
}

/// `(major, minor)` of the running kernel.
pub fn kernel_version() -> (u32, u32) {
    sonde::features::kernel_version().unwrap_or((0, 0))
}

/// Every record in the object's `EVENTS` ring buffer, in order.
pub fn drain_events(object: &Object) -> Vec<Event> {
    let mut rb = sonde::maps::RingBuf::new(object.map("EVENTS").expect("EVENTS map")).expect("ring buffer");
    let mut out = Vec::new();
    while let Some(rec) = rb.next() {
        assert_eq!(rec.len(), std::mem::size_of::<Event>(), "whole records");
        out.push(rec.read::<Event>().expect("an Event"));
    }
    out
}

/// Directory of the fixtures build.rs compiled (`SONDE_FIXTURES` overrides it,
/// for the kernel matrix's guests).
pub fn fixtures() -> PathBuf {
    std::env::var_os("SONDE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("OUT_DIR"), "/fixtures")))
}

/// The mounted tracefs (where `uprobe_events` is), if one is.
pub fn tracefs_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("uprobe_events").exists())
}

/// A fixture's path as a command-line argument.
pub fn fixture_arg(name: &str) -> String {
    fixtures().join(name).to_string_lossy().into_owned()
}

/// How many BPF links the kernel holds once every detach handed to a
/// background process (`sonde-detach`, ~0.1 s per per-target link) is done.
pub fn link_count() -> usize {
    wait_for_detach_workers();
    sonde::inspect::links().expect("links").len()
}

/// Waits (at most 60 s) until no `sonde-detach` process is at work: a detach
/// handed off ends in the kernel's time, after the process that handed it off.
pub fn wait_for_detach_workers() {
    let workers: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "sonde-detach")
        })
        .collect();
    for pid in workers {
        assert!(
            wait_exited(pid, std::time::Duration::from_secs(60)),
            "detach process {pid} still at work after 60 s"
        );
    }
}

/// The `sonde` command (`SONDE_BIN` overrides; built by `cargo build -p sonde-cli`,
/// which `cargo test --workspace` does).
pub fn sonde_bin() -> PathBuf {
    std::env::var_os("SONDE_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let p = target_app().with_file_name("sonde");
        assert!(p.exists(), "{} missing: cargo build -p sonde-cli", p.display());
        p
    })
}

/// A fixture binary started and waiting for a line on stdin.
pub fn spawn_fixture(name: &str) -> Waiting {
    Waiting::spawn_path(&fixtures().join(name), &[])
}

/// Runs `sonde ARGS` with "go" on stdin (read by a traced command); returns
/// (status, stdout, stderr).
pub fn run_sonde(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(sonde_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    // sonde may already have exited (an error case): a closed pipe is fine.
    let _ = child.stdin.take().expect("stdin").write_all(b"go\n");
    let out = child.wait_with_output().expect("wait sonde");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads a running sonde's stderr until its "attached" line (`sonde: counting`,
/// `timing`, `tracing`); returns the reader for the rest.
pub fn until_attached(child: &mut Child) -> std::io::BufReader<std::process::ChildStderr> {
    use std::io::BufRead;
    let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).expect("read stderr") > 0,
            "sonde exited before attaching"
        );
        if ["sonde: counting", "sonde: timing", "sonde: tracing"]
            .iter()
            .any(|p| line.starts_with(p))
        {
            return err;
        }
    }
}

/// Waits for a running `sonde` at most `limit` (a hang guard, not a speed check:
/// it is killed and the test fails past it), reading its stdout meanwhile; then
/// the rest of its stderr from `err`. Returns (exit code, stdout, stderr).
pub fn finish_within(
    child: &mut Child,
    mut err: std::io::BufReader<std::process::ChildStderr>,
    limit: std::time::Duration,
) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("sonde still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = reader.join().expect("stdout reader");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    (status.code(), out, rest)
}

/// Waits until process `pid` has exited (gone, or a zombie nobody reaped yet),
/// at most `limit`; returns whether it did.
pub fn wait_exited(pid: u32, limit: std::time::Duration) -> bool {
    wait_exited_polling(pid, limit, std::time::Duration::from_millis(20))
}

/// [`wait_exited`], looking every `every` (1 ms: to time an exit).
pub fn wait_exited_polling(pid: u32, limit: std::time::Duration, every: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        });
        if state.as_deref().is_none_or(|s| s == "Z" || s == "X") {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(every);
    }
}
