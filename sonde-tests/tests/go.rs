//! Go programs by name (#29): a stripped Go binary (`-ldflags=-s -w`) keeps
//! `.gopclntab`, the runtime's table of functions; sonde reads its names and
//! entries there and probes each function past its stack check, so counts are
//! exact even when goroutines grow (copy) their stacks mid-call.

use serde_json::Value;
use sonde_tests::cli::serial;
use sonde_tests::{fixture_arg, fixtures, link_count, require_root, run_sonde, skip, tier_supported};

/// (name, file offset, probe offset) of what `sonde list --json BINARY PATTERN` prints.
fn listed(binary: &str, pattern: &str) -> Vec<(String, u64, u64)> {
    let (code, out, err) = run_sonde(&["list", "--json", binary, pattern]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
    v["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name").to_string(),
                f["file_offset"].as_u64().expect("offset"),
                f["probe_offset"].as_u64().expect("probe offset"),
            )
        })
        .collect()
}

#[test]
fn a_stripped_go_binary_lists_the_same_functions_as_its_unstripped_build() {
    let go = fixture_arg("fixture-go");
    let stripped = fixture_arg("fixture-go-stripped");
    // The same build but for -s -w: the same code at the same offsets.
    for pattern in ["main.*", "sync.(*WaitGroup).*", "*.Wait", "fmt.Fprint*"] {
        let want = listed(&go, pattern);
        assert!(!want.is_empty(), "{pattern} matches in the unstripped build");
        let got = listed(&stripped, pattern);
        let names = |v: &[(String, u64, u64)]| v.iter().map(|f| (f.0.clone(), f.1, f.2)).collect::<Vec<_>>();
        assert_eq!(names(&got), names(&want), "{pattern}");
    }
    let main = listed(&stripped, "main.*");
    let names: Vec<&str> = main.iter().map(|f| f.0.as_str()).collect();
    for want in ["main.grow", "main.nap", "main.main"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    // Probed past the stack check, on an instruction boundary the decoder found.
    for (name, offset, probe) in &main {
        if name == "main.grow" || name == "main.nap" {
            assert!(
                probe > offset,
                "{name} probed past its stack check: {probe:#x} vs {offset:#x}"
            );
        }
    }
    let full = sonde::resolve::SymbolTable::read(&fixtures().join("fixture-go")).expect("symbols");
    let table = sonde::resolve::SymbolTable::read(&fixtures().join("fixture-go-stripped")).expect("pclntab");
    assert!(!table.is_stripped(), "names came from .gopclntab");
    assert!(table.functions().len() > 1000, "{} functions", table.functions().len());
    // Every function of the runtime's table is a function of the unstripped
    // build at the same address, with the same name (the linker writes both),
    // but for two spellings: the symbol table adds the ABI to assembly
    // functions (`runtime.morestack.abi0`), and the runtime's table shortens
    // array lengths in generated type functions (`type..eq.[...]T`).
    for f in table.functions() {
        let at: Vec<&sonde::resolve::FunctionSymbol> =
            full.functions().iter().filter(|g| g.address == f.address).collect();
        assert!(
            !at.is_empty(),
            "{} at {:#x} is a function of the unstripped build",
            f.name,
            f.address
        );
        if !f.name.starts_with("type..") {
            assert!(
                at.iter()
                    .flat_map(|g| std::iter::once(&g.name).chain(&g.aliases))
                    .any(|n| n.trim_end_matches(".abi0") == &*f.name),
                "{} at {:#x} has that name in the unstripped build",
                f.name,
                f.address
            );
        }
    }
}

#[test]
fn calls_of_a_stripped_go_program_are_counted_exactly_by_name() {
    let _s = serial();
    require_root();
    let before = link_count();
    for binary in ["fixture-go-stripped", "fixture-go"] {
        let go = fixture_arg(binary);
        let (code, out, err) = run_sonde(&["count", "--json", &go, "main.grow", "main.nap", "--", &go]);
        assert_eq!(code, 0, "{binary}: {err}");
        let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
        let count = |n: &str| {
            report["functions"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["name"] == n))
                .and_then(|f| f["count"].as_u64())
        };
        // 4 goroutines, each grow(2000): 2001 calls, its stack grown several
        // times on the way down; one nap each.
        assert_eq!(count("main.grow"), Some(4 * 2001), "{binary}: {report}");
        assert_eq!(count("main.nap"), Some(4), "{binary}: {report}");
    }
    assert_eq!(link_count(), before, "nothing left attached");
}

/// While alive, asks the kernel to compact memory again and again: it
/// migrates pages of running programs, each unmapped for a moment, when a
/// BPF read of it fails (a Go call's frame is read from `g.stack`).
struct Compacting {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Compacting {
    fn start() -> Compacting {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rounds = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if std::fs::write("/proc/sys/vm/compact_memory", "1").is_err() {
                    break;
                }
                rounds += 1;
            }
            rounds
        });
        Compacting {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Compacting {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let rounds = t.join().unwrap_or(0);
            println!("memory compacted {rounds} times meanwhile");
        }
    }
}

/// `sonde latency --json` of a Go fixture's functions: (name, count, timed,
/// min_ns, calls in histogram buckets that reach past `floor_ns`) per function.
fn go_latency(tier: &str, binary: &str, floor_ns: u64) -> Vec<(String, u64, u64, u64, u64)> {
    let (code, out, err) = run_sonde(&[
        "latency",
        "--json",
        "--tier",
        tier,
        binary,
        "main.grow",
        "main.nap",
        "main.greet",
        "--",
        binary,
    ]);
    assert_eq!(code, 0, "{tier}: {err}");
    assert!(out.contains(&format!("\"tier\":\"{tier}\"")), "{out}");
    // The program's own output (on stderr under --json): it ended well.
    assert!(out.lines().chain(err.lines()).any(|l| l == "4024"), "{out}\n{err}");
    let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
    let mut rows: Vec<(String, u64, u64, u64, u64)> = report["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            let above: u64 = f["histogram"]
                .as_array()
                .expect("histogram")
                .iter()
                .filter(|b| b["le_ns"].as_u64().unwrap_or(0) > floor_ns)
                .map(|b| b["count"].as_u64().unwrap_or(0))
                .sum();
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["count"].as_u64().unwrap_or(0),
                f["timed"].as_u64().unwrap_or(0),
                f["min_ns"].as_u64().unwrap_or(0),
                above,
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn go_latency_is_exact_across_threads_and_stack_copies() {
    let _s = serial();
    require_root();
    let before = link_count();
    if cfg!(target_arch = "aarch64") {
        // arm64: Go's code holds literal pools between its instructions, so
        // its returns are refused by name, and nothing is attached.
        let go = fixture_arg("fixture-go-stripped");
        let (code, _, err) = run_sonde(&["latency", &go, "main.grow", "--", &go]);
        assert_ne!(code, 0, "{err}");
        assert!(err.contains("not found on arm64"), "{err}");
        assert_eq!(link_count(), before, "nothing left attached");
        skip("Go latency", "Go returns are refused on arm64 (docs/go.md)");
        return;
    }
    // Every tier the kernel has, both builds.
    let runs = sonde::Tier::ALL
        .into_iter()
        .filter(|t| tier_supported(*t))
        .flat_map(|t| ["fixture-go-stripped", "fixture-go"].map(|b| (t, b)));
    // The kernel migrates the program's pages meanwhile (measured before
    // sonde kept each goroutine's stack bounds: 1 run in 12 lost returns on
    // the host, 4 in 40 in the 6.1 guest, whose THP `always` collapses pages).
    let _compacting = Compacting::start();
    for (tier, binary) in runs {
        let go = fixture_arg(binary);
        let rows = go_latency(tier.name(), &go, 2_000_000);
        let binary = format!("{binary} on {tier}");
        let row = |n: &str| rows.iter().find(|r| r.0 == n).cloned().expect(n);
        // Every call timed, none twice: grow's 4 x 2001 calls while their
        // goroutines' stacks are copied, nap's 4 sleeps of 2 ms (parked, woken
        // on any thread: paired by goroutine, not thread), greet's 3.
        let (grow, nap, greet) = (row("main.grow"), row("main.nap"), row("main.greet"));
        println!("{binary}: {rows:?}");
        assert_eq!((grow.1, grow.2), (4 * 2001, 4 * 2001), "{binary}: {rows:?}");
        assert_eq!((nap.1, nap.2), (4, 4), "{binary}: {rows:?}");
        assert!(nap.3 >= 2_000_000, "{binary}: a 2 ms sleep took {} ns", nap.3);
        assert_eq!(nap.4, 4, "{binary}: every nap in a bucket reaching past 2 ms: {rows:?}");
        assert_eq!((greet.1, greet.2), (3, 3), "{binary}: {rows:?}");
        assert!(greet.3 < 2_000_000, "{binary}: {rows:?}");
    }
    // Entries and returns paired in trace too, with Go's result register.
    let go = fixture_arg("fixture-go-stripped");
    let (code, out, err) = run_sonde(&["trace", "--json", "--ret", &go, "main.nap", "main.greet", "--", &go]);
    assert_eq!(code, 0, "{err}");
    let calls: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("function").is_some())
        .collect();
    let of = |n: &str| -> Vec<&Value> { calls.iter().filter(|c| c["function"] == n).collect() };
    let naps = of("main.nap");
    assert_eq!(naps.len(), 4, "{out}");
    for nap in &naps {
        assert!(nap["duration_ns"].as_u64().is_some_and(|d| d >= 2_000_000), "{nap}");
    }
    let rets: Vec<u64> = of("main.greet").iter().filter_map(|c| c["ret"].as_u64()).collect();
    assert_eq!(rets, [7, 8, 9], "len(\"user-N\\x01\") + N: {out}");
    assert_eq!(link_count(), before, "nothing left attached");
}

/// One `sonde trace --json` line's arguments per call.
fn traced_args(args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run_sonde(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("function").is_some())
        .map(|v| v["args"].clone())
        .collect()
}

#[test]
fn go_arguments_are_read_from_gos_registers_strings_included() {
    // Serial: the others count the kernel's links.
    let _s = serial();
    require_root();
    let go = fixture_arg("fixture-go-stripped");
    // main.greet(name string, n int): name in rax (pointer) and rbx (length),
    // n in rcx; the string is escaped like any traced program's bytes.
    let calls = traced_args(&["trace", "--json", "--args", "gs,i", &go, "main.greet", "--", &go]);
    let want: Vec<Value> = (0..3)
        .map(|i| serde_json::json!([format!("user-{i}\\x01"), i]))
        .collect();
    assert_eq!(calls, want);
    // Filters and breakdowns read the same registers: arg2 is n.
    let calls = traced_args(&[
        "trace",
        "--json",
        "--args",
        "gs,i",
        "--filter",
        "arg2 == 1",
        &go,
        "main.greet",
        "--",
        &go,
    ]);
    assert_eq!(calls, [serde_json::json!(["user-1\\x01", 1])]);
    // A Go string needs two of the six registers read.
    let (code, _, err) = run_sonde(&["trace", "--args", "i,i,i,i,i,gs", &go, "main.greet", "--", &go]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Go string needs two"), "{err}");
}

#[test]
fn the_agent_times_go_functions_exactly_beside_c_ones() {
    let _s = serial();
    require_root();
    if cfg!(target_arch = "aarch64") {
        skip(
            "Go latency in the agent",
            "Go returns are refused on arm64 (docs/go.md)",
        );
        return;
    }
    // Exact in the guests too since sonde keeps each goroutine's stack
    // bounds (the 6.1 guest lost 117 of main.grow's 8,004 returns here once:
    // its THP `always` unmapped a page of `g` for a moment).
    let _compacting = Compacting::start();
    let dir = sonde_tests::agent::work_dir("go");
    let go = fixtures().join("fixture-go-stripped");
    let pie = fixtures().join("fixture-pie");
    let config = dir.join("serve.toml");
    let port = sonde_tests::agent::free_port();
    let before = link_count();
    // A C binary first: its sessions may be native; the Go one's never are,
    // and both share the scope's latency job.
    sonde_tests::agent::write_config(
        &config,
        port,
        &[(&pie, &["fx_beta"], true), (&go, &["main.grow", "main.nap"], true)],
    );
    let agent = sonde_tests::agent::Agent::start(&config, port);
    sonde_tests::agent::run_fixture(&pie, &[]);
    sonde_tests::agent::run_fixture(&go, &[]);
    let value = |s: &[(String, f64)], metric: &str, function: &str| -> f64 {
        s.iter()
            .find(|(k, _)| k.starts_with(&format!("{metric}{{")) && k.contains(&format!("function=\"{function}\"")))
            .map_or(0.0, |(_, v)| *v)
    };
    let s = agent.wait_until(
        |s| {
            value(s, "sonde_call_duration_seconds_count", "main.grow") >= 8004.0
                && value(s, "sonde_call_duration_seconds_count", "main.nap") >= 4.0
                && value(s, "sonde_call_duration_seconds_count", "fx_beta") >= 2.0
        },
        "every call timed",
    );
    // Exact: every call counted and timed once, none left untimed.
    assert_eq!(value(&s, "sonde_calls_total", "main.grow"), 8004.0, "{s:?}");
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "main.grow"), 8004.0);
    assert_eq!(value(&s, "sonde_calls_total", "main.nap"), 4.0);
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "main.nap"), 4.0);
    assert!(
        value(&s, "sonde_call_duration_seconds_sum", "main.nap") >= 4.0 * 0.002,
        "{s:?}"
    );
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "fx_beta"), 2.0);
    drop(agent);
    let start = std::time::Instant::now();
    while link_count() != before && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(link_count(), before, "nothing left attached");
    let _ = std::fs::remove_dir_all(&dir);
}
