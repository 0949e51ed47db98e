//! The `sonde` command end to end (#6): exact counts, latencies of known sleeps,
//! traced arguments, JSON validated, every tier pinned, SIGINT mid-run, errors.

use std::io::{BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde::Tier;
use sonde_tests::{fixture_arg, fixtures, require_root, sonde_bin, spawn_fixture, tier_supported};

/// Tests here count links and tracefs entries: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn sonde(args: &[&str]) -> (i32, String, String) {
    sonde_tests::run_sonde(args)
}

/// Every line of `text` that is a JSON object (JSON Lines), parsed.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn json(text: &str) -> Value {
    // The traced command prints its own line first; the JSON object is the last.
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {text:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// `name -> count` from a count report, checking its shape.
fn counts(report: &Value) -> Vec<(String, u64)> {
    let functions = report["functions"].as_array().expect("functions array");
    let out: Vec<(String, u64)> = functions
        .iter()
        .map(|f| {
            assert!(f["cookie"].is_u64() && f.get("demangled").is_some(), "{f}");
            (
                f["name"].as_str().expect("name").to_string(),
                f["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let mut sorted = out.clone();
    sorted.sort_by_key(|x| std::cmp::Reverse(x.1));
    assert_eq!(
        out.iter().map(|x| x.1).collect::<Vec<_>>(),
        sorted.iter().map(|x| x.1).collect::<Vec<_>>(),
        "ordered by count"
    );
    out
}

const FX_COUNTS: [(&str, u64); 4] = [("fx_delta", 4), ("fx_gamma", 3), ("fx_beta", 2), ("fx_alpha", 1)];

fn owned(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

fn no_tracefs_entries_left() {
    let entries = sonde::inspect::tracefs_uprobes();
    assert!(
        !entries.iter().any(|e| e.contains("sonde_")),
        "tracefs entries left: {entries:?}"
    );
}

#[test]
fn count_with_a_command_gives_exact_counts_on_every_tier() {
    let _s = serial();
    require_root();
    let before = sonde::inspect::links().expect("links").len();
    let pie = fixture_arg("fixture-pie");
    let (code, out, err) = sonde(&["count", "--json", &pie, "fx_*", "--", &pie]);
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    assert_eq!(counts(&report), owned(&FX_COUNTS), "{report}");
    assert!(err.contains("tier "), "status line names the tier: {err}");
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let (code, out, err) = sonde(&["count", "--json", "--tier", tier.name(), &pie, "fx_*", "--", &pie]);
        assert_eq!(code, 0, "{tier}: {err}");
        let report = json(&out);
        assert_eq!(report["tier"], tier.name());
        assert_eq!(counts(&report), owned(&FX_COUNTS), "{tier}");
    }
    // Never-called functions are listed with 0; the traced command's exit status
    // is sonde's.
    let (code, out, _) = sonde(&["count", "--json", &fixture_arg("libvers.so"), "vers_*", "--", &pie]);
    assert_eq!(code, 0);
    let report = json(&out);
    assert_eq!(
        counts(&report),
        owned(&[("vers_add", 5), ("vers_add", 0), ("vers_mul", 0)])
    );
    assert_eq!(
        report["functions"][0]["version"], "VER_2",
        "the default version is the one called"
    );
    assert_eq!(report["functions"][1]["version"], "VER_1");
    assert_eq!(
        sonde::inspect::links().expect("links").len(),
        before,
        "every link detached"
    );
    no_tracefs_entries_left();
}

/// Reads stderr until the status line says attached, returning the elapsed time.
fn until_attached(child: &mut Child) -> (Duration, BufReader<std::process::ChildStderr>) {
    let start = Instant::now();
    let err = sonde_tests::until_attached(child);
    (start.elapsed(), err)
}

#[test]
fn sigint_mid_run_prints_the_summary_and_leaves_nothing_attached() {
    let _s = serial();
    require_root();
    let before = sonde::inspect::links().expect("links").len();
    // Every process (with -p, sonde would end by itself when the process exits).
    let app = spawn_fixture("fixture-pie");
    let mut child = Command::new(sonde_bin())
        .args(["count", "--json", &fixture_arg("fixture-pie"), "fx_*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let (_, mut err) = until_attached(&mut child);
    assert!(
        sonde::inspect::links().expect("links").len() > before
            || sonde::Features::current().kernel_release.starts_with("5.")
    );
    app.run();
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert_eq!(status.code(), Some(130), "{rest}");
    assert_eq!(counts(&json(&out)), owned(&FX_COUNTS));
    assert_eq!(sonde::inspect::links().expect("links").len(), before);
    no_tracefs_entries_left();
}

#[test]
fn latency_measures_known_sleeps_per_thread_and_nesting_level() {
    let _s = serial();
    require_root();
    let sleeper = fixture_arg("fixture-sleeper");
    let (code, out, err) = sonde(&["latency", "--json", &sleeper, "fx_*", "--", &sleeper]);
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    let f = |name: &str| {
        report["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report}"))
            .clone()
    };
    const MS: u64 = 1_000_000;
    let sleep = f("fx_sleep_ms");
    assert_eq!(sleep["count"], 3);
    let max = sleep["max_ns"].as_u64().expect("max");
    assert!((20 * MS..400 * MS).contains(&max), "{sleep}");
    assert!(sleep["p50_ns"].as_u64().expect("p50") >= 20 * MS, "{sleep}");
    let hist_total: u64 = sleep["histogram"]
        .as_array()
        .expect("hist")
        .iter()
        .map(|b| b["count"].as_u64().expect("n"))
        .sum();
    assert_eq!(hist_total, 3);
    // Recursion: 4 nested calls of 3, 23, 43, 63 ms (each measured on its own level).
    let rec = f("fx_recurse");
    assert_eq!(rec["count"], 4);
    let rmax = rec["max_ns"].as_u64().expect("max");
    assert!((63 * MS..400 * MS).contains(&rmax), "{rec}");
    // The innermost 3 ms call alone in a bucket below the others (up to
    // [8.4, 16.8) ms: a loaded QEMU guest oversleeps; the next is >= 23 ms).
    let first = &rec["histogram"][0];
    assert!(
        first["le_ns"].as_u64().expect("le") <= 1 << 24 && first["count"] == 1,
        "the innermost 3 ms call has its own bucket: {rec}"
    );
    // One session program: native where the kernel has session links.
    let native = sonde::Features::current().has(sonde::Feature::UprobeSession);
    let mode = if native { "native" } else { "emulated" };
    assert_eq!(report["session"], mode, "{report}");
    assert!(err.contains(&format!("session {mode}")), "{err}");
    // Four threads at once, 10 ms each: no interval mixes two threads.
    let work = f("fx_work");
    assert_eq!(work["count"], 4);
    for b in work["histogram"].as_array().expect("hist") {
        assert!(
            b["le_ns"].as_u64().expect("le") >= 16 * MS,
            "a 10 ms call measured shorter: {work}"
        );
    }
    for key in ["p90_ns", "p99_ns"] {
        assert!(work[key].is_u64());
    }
}

#[test]
fn trace_prints_every_call_with_its_arguments_in_order() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let (code, out, err) = sonde(&["trace", "--json", "--args", "2", &pie, "fx_*", "--", &pie]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let got: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["function"].as_str().expect("function").to_string(),
                l["args"][0].as_u64().expect("arg"),
            )
        })
        .collect();
    let mut want = Vec::new();
    for (name, n) in [("fx_alpha", 1), ("fx_beta", 2), ("fx_gamma", 3), ("fx_delta", 4)] {
        for i in 0..n {
            want.push((name.to_string(), i));
        }
    }
    assert_eq!(got, want);
    let l = &lines[0];
    assert_eq!(l["comm"], "fixture-pie");
    assert_eq!(l["args"].as_array().map(Vec::len), Some(2));
    assert!(l["ts_ns"].is_u64() && l["pid"] == l["tid"] && l["cookie"].is_u64());
    let ts: Vec<u64> = lines.iter().map(|l| l["ts_ns"].as_u64().expect("ts")).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "in time order");
    assert!(err.contains("10 events, 0 lost"), "{err}");
}

#[test]
fn list_and_features_report_without_attaching() {
    let _s = serial();
    require_root();
    let before = sonde::inspect::links().expect("links").len();
    let (code, out, _) = sonde(&["list", "--json", &fixture_arg("fixture-cpp"), "geo::Shape::*"]);
    assert_eq!(code, 0);
    let v = json(&out);
    let names: Vec<&str> = v["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .filter_map(|f| f["demangled"].as_str())
        .collect();
    assert_eq!(
        names,
        ["geo::Shape::area(int) const", "geo::Shape::area(int, int) const"]
    );
    let set = sonde::Functions::in_binary(fixture_arg("fixture-cpp"))
        .pattern("geo::Shape::*")
        .resolve()
        .expect("resolve");
    let offsets: Vec<u64> = v["functions"]
        .as_array()
        .expect("f")
        .iter()
        .map(|f| f["file_offset"].as_u64().expect("off"))
        .collect();
    assert_eq!(offsets, set.iter().map(|f| f.file_offset).collect::<Vec<_>>());

    let (code, out, _) = sonde(&["features", "--json"]);
    assert_eq!(code, 0);
    let v = json(&out);
    assert_eq!(v["kernel"], sonde::Features::current().kernel_release.as_str());
    assert_eq!(
        v["features"]["ring_buf"],
        sonde::Features::current().has(sonde::Feature::RingBuf)
    );
    assert_eq!(v["tiers"].as_array().map(Vec::len), Some(8));
    let f = sonde::Features::current();
    let native = f.has(sonde::Feature::UprobeSession) && f.has(sonde::Feature::UprobeMulti);
    assert_eq!(v["features"]["uprobe_session"], f.has(sonde::Feature::UprobeSession));
    assert_eq!(v["sessions"], if native { "native" } else { "emulated" });
    assert_eq!(sonde::inspect::links().expect("links").len(), before);
}

#[test]
fn errors_name_the_problem_exit_non_zero_and_leave_nothing() {
    let _s = serial();
    require_root();
    let before = sonde::inspect::links().expect("links").len();
    let pie = fixture_arg("fixture-pie");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["count".into(), "/no/such/binary".into(), "f".into()],
            "cannot open binary /no/such/binary",
        ),
        (
            vec!["count".into(), pie.clone(), "fx_alpah".into()],
            "did you mean: fx_alpha",
        ),
        (
            vec!["count".into(), fixture_arg("fixture-stripped-bare"), "fx_*".into()],
            "stripped",
        ),
        (
            vec![
                "count".into(),
                pie.clone(),
                "fx_*".into(),
                "--".into(),
                "/no/such/command".into(),
            ],
            "cannot run the command",
        ),
        (vec!["latency".into(), "libno-such-lib".into(), "f".into()], "not found"),
    ];
    for (args, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = sonde(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: `{err}` lacks `{message}`");
        assert!(err.lines().count() <= 2, "one or two lines: {err}");
    }
    // A pinned tier the kernel lacks (disabled here) names the missing feature.
    let out = Command::new(sonde_bin())
        .env("SONDE_DISABLE_FEATURES", "uprobe_multi")
        .args(["count", "--tier", "multi", "-d", "1", &pie, "fx_*"])
        .output()
        .expect("sonde");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("uprobe_multi"), "{err}");
    // Without privileges (uid/gid nobody, no capabilities): refused before
    // anything is loaded, with the fix. A copy anyone may run, outside /root.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let copy = std::env::temp_dir().join(format!("sonde-unprivileged-{}", std::process::id()));
    std::fs::copy(sonde_bin(), &copy).expect("copy sonde");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(&copy)
        .uid(65534)
        .gid(65534)
        .args(["count", "-d", "1", "libc", "malloc"])
        .output()
        .expect("run sonde as nobody");
    let _ = std::fs::remove_file(&copy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(sonde::inspect::links().expect("links").len(), before);
    no_tracefs_entries_left();
}

#[test]
fn json_with_a_command_keeps_stdout_to_the_report_and_o_writes_a_file() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    // The fixture prints a number on stdout: with --json it goes to stderr, and
    // stdout is exactly one JSON object (what `| jq` needs).
    let (code, out, err) = sonde(&["count", "--json", &pie, "fx_*", "--", &pie]);
    assert_eq!(code, 0, "{err}");
    let report: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {out:?}"));
    assert_eq!(counts(&report), owned(&FX_COUNTS));
    assert!(
        err.lines().any(|l| l.trim() == "577"),
        "the command's output is on stderr: {err}"
    );
    // -o: the report in the file, the command's output back on stdout.
    let file = std::env::temp_dir().join(format!("sonde-report-{}.json", std::process::id()));
    let path = file.to_string_lossy().into_owned();
    let (code, out, err) = sonde(&["trace", "--json", "-o", &path, &pie, "fx_alpha", "--", &pie]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "577", "stdout is the command's");
    let text = std::fs::read_to_string(&file).expect("report file");
    let _ = std::fs::remove_file(&file);
    assert!(
        text.lines().all(|l| l.starts_with('{')),
        "only JSON Lines in the file: {text}"
    );
    let lines = json_lines(&text);
    assert_eq!(lines.len(), 1, "fx_alpha is called once: {text}");
    assert_eq!(lines[0]["function"], "fx_alpha");
    // A report that cannot be written is an error naming the file, before attaching.
    let (code, _, err) = sonde(&["count", "-d", "0.2", "-o", "/nonexistent/dir/r.json", &pie, "fx_alpha"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/dir/r.json"), "{err}");
}

#[test]
fn several_binaries_in_one_run_with_distinct_cookies_and_exact_counts() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let lib = fixture_arg("libvers.so");
    let (specs_pie, specs_lib) = (format!("{pie}:fx_[abgd]*"), format!("{lib}:vers_*"));
    let (code, out, err) = sonde(&["count", "--json", &specs_pie, &specs_lib, "--", &pie]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("7 functions of 2 binaries"), "{err}");
    let report = json(&out);
    let rows = report["functions"].as_array().expect("functions");
    let mut seen: Vec<(String, String, u64)> = rows
        .iter()
        .map(|f| {
            let binary = f["binary"]
                .as_str()
                .expect("binary named")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let name = match f["version"].as_str() {
                Some(v) => format!("{}@{v}", f["name"].as_str().unwrap_or("")),
                None => f["name"].as_str().unwrap_or("").to_string(),
            };
            (binary, name, f["count"].as_u64().expect("count"))
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String, u64)> = [
        ("fixture-pie", "fx_alpha", 1),
        ("fixture-pie", "fx_beta", 2),
        ("fixture-pie", "fx_delta", 4),
        ("fixture-pie", "fx_gamma", 3),
        ("libvers.so", "vers_add@VER_1", 0),
        ("libvers.so", "vers_add@VER_2", 5),
        ("libvers.so", "vers_mul@VER_2", 0),
    ]
    .iter()
    .map(|(b, n, c)| (b.to_string(), n.to_string(), *c))
    .collect();
    assert_eq!(seen, want);
    let mut cookies: Vec<u64> = rows.iter().map(|f| f["cookie"].as_u64().expect("cookie")).collect();
    cookies.sort_unstable();
    assert_eq!(
        cookies,
        (0..7).collect::<Vec<u64>>(),
        "cookies distinct across binaries"
    );
    // The table names each function's binary; mixing forms is refused by name.
    let (code, out, _) = sonde(&["count", &specs_pie, &specs_lib, "--", &pie]);
    assert_eq!(code, 0);
    assert!(
        out.contains("libvers.so:vers_add@@VER_2") && out.contains("fixture-pie:fx_delta"),
        "{out}"
    );
    let (code, _, err) = sonde(&["count", &specs_pie, "fx_beta", "-d", "0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("`fx_beta` is not BINARY:PATTERN"), "{err}");
    no_tracefs_entries_left();
}

#[test]
fn intervals_add_up_to_the_totals() {
    let _s = serial();
    require_root();
    let sleeper = fixture_arg("fixture-sleeper");
    let (code, out, err) = sonde(&["count", "-i", "0.02", "--json", &sleeper, "fx_*", "--", &sleeper]);
    assert_eq!(code, 0, "{err}");
    check_intervals(&out);
    // With -o, the interval records and the summary all go to the file.
    let path = fixtures().join("intervals.jsonl");
    let p = path.to_string_lossy().into_owned();
    let (code, _, err) = sonde(&[
        "count", "-i", "0.02", "--json", "-o", &p, &sleeper, "fx_*", "--", &sleeper,
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&path).expect("report file");
    let _ = std::fs::remove_file(&path);
    assert!(
        text.lines().all(|l| l.starts_with('{')),
        "only JSON Lines in the file: {text}"
    );
    check_intervals(&text);
}

/// Interval records followed by a summary: contiguous, adding up to the totals.
fn check_intervals(out: &str) {
    let lines = json_lines(out);
    let (summary, intervals) = lines.split_last().expect("a summary");
    assert!(intervals.len() >= 2, "{out}");
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    let mut end = 0.0;
    for i in intervals {
        let start = i["interval"]["start_s"].as_f64().expect("start");
        assert!((start - end).abs() < 1e-9, "intervals are contiguous: {i}");
        end = i["interval"]["end_s"].as_f64().expect("end");
        for f in i["functions"].as_array().expect("functions") {
            *sums.entry(f["name"].as_str().expect("name").to_string()).or_default() +=
                f["count"].as_u64().expect("count");
        }
    }
    let totals: std::collections::BTreeMap<String, u64> = counts(summary).into_iter().filter(|(_, c)| *c > 0).collect();
    assert_eq!(sums, totals);
    assert_eq!(totals.get("fx_sleep_ms"), Some(&3));
}

/// Starts fixture-pie from a private tmpfs in a mount namespace of its own
/// (the directory is empty here), counts `fx_*` with `sonde count --json FLAG
/// PID /that/path`, lets it run, and returns the counts.
fn count_in_a_private_mount_namespace(flag: &str) -> Vec<(String, u64)> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let dir = fixtures().join("ns-private");
    let _ = std::fs::create_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let script = format!(
        "mount -t tmpfs none {d} && cp {pie} {lib} {d}/ && exec {d}/fixture-pie",
        pie = fixture_arg("fixture-pie"),
        lib = fixture_arg("libvers.so")
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).stdin(Stdio::piped()).stdout(Stdio::piped());
    // SAFETY: unshare and mount between fork and exec: plain syscalls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut app = cmd.spawn().expect("spawn in a mount namespace");
    let pid = app.id().to_string();
    // Wait for the exec (the fixture then blocks on stdin).
    let exe = format!("/proc/{pid}/exe");
    for _ in 0..500 {
        if std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("fixture-pie")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!dir.join("fixture-pie").exists(), "not visible outside the namespace");
    let inside = format!("{d}/fixture-pie");
    let mut sonde_child = Command::new(sonde_bin())
        .args(["count", "--json", flag, &pid, &inside, "fx_*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let err = sonde_tests::until_attached(&mut sonde_child);
    app.stdin.take().expect("stdin").write_all(b"go\n").expect("go");
    assert!(app.wait().expect("app").success());
    if flag != "-p" {
        // Not scoped to that process: sonde runs until stopped.
        // SAFETY: signals our own child.
        unsafe { libc::kill(sonde_child.id() as i32, libc::SIGINT) };
    }
    let (code, out, rest) = sonde_tests::finish_within(&mut sonde_child, err, Duration::from_secs(30));
    assert_eq!(code, Some(if flag == "-p" { 0 } else { 130 }), "{rest}");
    counts(&json(&out))
}

#[test]
fn a_path_is_looked_up_in_the_mount_namespace_of_the_process_or_container() {
    let _s = serial();
    require_root();
    // -p: that process only; --container: files as it sees them, every process.
    for flag in ["-p", "--container"] {
        assert_eq!(count_in_a_private_mount_namespace(flag), owned(&FX_COUNTS), "{flag}");
    }
}

/// `FX_COUNTS` for `times` runs of the fixture's calls.
fn fx_counts_times(times: u64) -> Vec<(String, u64)> {
    FX_COUNTS.iter().map(|(n, c)| (n.to_string(), c * times)).collect()
}

/// #14: `-- COMMAND` follows the processes it forks, through fork alone (workers)
/// and fork + exec (`sh -c`), exactly, on every tier; `--no-follow` traces only
/// the command's own process; `-p PID --follow` takes in the children a running
/// process forks.
#[test]
fn a_command_is_followed_into_every_process_it_forks() {
    let _s = serial();
    require_root();
    let before = sonde::inspect::links().expect("links").len();
    let pie = fixture_arg("fixture-pie");
    let script = format!("echo go | '{pie}'; echo go | '{pie}'; echo go | '{pie}' >/dev/null");
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        // Three forked workers make the calls; their parent makes none.
        let (code, out, err) = sonde(&[
            "count",
            "--json",
            "--tier",
            tier.name(),
            &pie,
            "fx_*",
            "--",
            &pie,
            "fork",
            "3",
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        assert!(err.contains("following its child processes"), "{err}");
        assert_eq!(counts(&json(&out)), fx_counts_times(3), "{tier}: workers");
        // A shell that runs the fixture three times (fork, then exec).
        let (code, out, err) = sonde(&[
            "count",
            "--json",
            "--tier",
            tier.name(),
            &pie,
            "fx_*",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        assert_eq!(counts(&json(&out)), fx_counts_times(3), "{tier}: sh -c");
    }
    // Opted out: the parent alone, which calls nothing.
    let (code, out, err) = sonde(&["count", "--json", "--no-follow", &pie, "fx_*", "--", &pie, "fork", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("following"), "{err}");
    let mut got = counts(&json(&out));
    got.sort();
    let mut none = fx_counts_times(0);
    none.sort();
    assert_eq!(got, none, "--no-follow");
    // Only the tree counts: the same binary run outside it is not counted.
    let outsider = spawn_fixture("fixture-pie");
    let (code, out, err) = sonde(&["count", "--json", &pie, "fx_*", "--", &pie, "fork", "2"]);
    outsider.run();
    assert_eq!(code, 0, "{err}");
    assert_eq!(counts(&json(&out)), fx_counts_times(2), "a process outside the tree");
    assert_eq!(
        sonde::inspect::links().expect("links").len(),
        before,
        "every link detached"
    );
    no_tracefs_entries_left();
}

/// `-p PID --follow`: a running process's children, forked after attaching, count.
#[test]
fn a_running_process_is_followed_into_its_children_with_follow() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let parent = sonde_tests::Waiting::spawn_path(std::path::Path::new(&pie), &["fork", "2"]).until_blocked();
    let pid = parent.pid().to_string();
    let mut child = Command::new(sonde_bin())
        .args(["count", "--json", "-p", &pid, "--follow", &pie, "fx_*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sonde");
    let (_, err) = until_attached(&mut child);
    parent.run();
    // sonde ends when the process it was given exits.
    let (code, out, rest) = sonde_tests::finish_within(&mut child, err, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{rest}");
    assert_eq!(counts(&json(&out)), fx_counts_times(2), "{rest}");
}

/// #14: an ifunc (`strlen`) is counted at the implementation its calls reach,
/// labelled `strlen (→ __strlen_…)`, exactly, on every tier; `list` says so.
#[test]
fn an_ifunc_is_counted_at_its_implementation() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let (code, out, err) = sonde(&["list", "--json", "libc", "strlen"]);
    assert_eq!(code, 0, "{err}");
    let listing = json(&out);
    let f = &listing["functions"][0];
    assert_eq!(f["ifunc"], true, "{listing}");
    let implementation = f["implementation"]
        .as_str()
        .unwrap_or_else(|| panic!("no implementation: {listing}"));
    let (_, table, _) = sonde(&["list", "libc", "strlen"]);
    assert!(
        table.contains(&format!("[ifunc: calls reach {implementation}, probed there]")),
        "{table}"
    );
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        // A process already waiting: its 1,000 calls are all that run after attaching.
        let app = sonde_tests::Waiting::spawn_path(std::path::Path::new(&pie), &["strlen", "1000"]).until_blocked();
        let pid = app.pid().to_string();
        let mut child = Command::new(sonde_bin())
            .args(["count", "--json", "--tier", tier.name(), "-p", &pid, "libc", "strlen"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sonde");
        let (_, err) = until_attached(&mut child);
        app.run();
        let (code, out, rest) = sonde_tests::finish_within(&mut child, err, Duration::from_secs(20));
        assert_eq!(code, Some(0), "{tier}: {rest}");
        let report = json(&out);
        let row = &report["functions"][0];
        assert_eq!(row["name"], "strlen", "{report}");
        assert_eq!(row["implementation"], implementation, "{tier}: {report}");
        assert_eq!(
            row["count"], 1000,
            "{tier}: every call, at the implementation: {report}"
        );
    }
    // The table labels the row with the implementation.
    let (code, out, err) = sonde(&["count", "--exact", "libc", "strlen", "--", &pie, "strlen", "7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("strlen (→ {implementation})")), "{out}");
}

/// #15: typed arguments with a string read in the program, and string return
/// values matched to their calls, exactly, on every tier.
#[test]
fn trace_reads_string_arguments_and_return_values() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let x300 = "x".repeat(255);
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let (code, out, err) = sonde(&[
            "trace",
            "--json",
            "--tier",
            tier.name(),
            "--args",
            "str_echo=s,i",
            "--ret",
            "s",
            &pie,
            "str_*",
            "--",
            &pie,
            "strings",
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        let lines = json_lines(&out);
        let got: Vec<(String, Value, Value, bool)> = lines
            .iter()
            .map(|l| {
                (
                    l["function"].as_str().expect("function").to_string(),
                    l["args"].clone(),
                    l["ret"].clone(),
                    l.get("truncated").and_then(Value::as_bool).unwrap_or(false),
                )
            })
            .collect();
        let expected = vec![
            (
                "str_echo".to_string(),
                serde_json::json!(["hello", 5]),
                serde_json::json!("hello"),
                false,
            ),
            (
                "str_echo".to_string(),
                serde_json::json!(["w\u{f6}rld \\xff", -1]),
                serde_json::json!(""),
                false,
            ),
            (
                "str_echo".to_string(),
                serde_json::json!([x300, 300]),
                serde_json::json!(x300),
                true,
            ),
            (
                "str_name".to_string(),
                serde_json::json!([]),
                serde_json::json!("alpha"),
                false,
            ),
            (
                "str_name".to_string(),
                serde_json::json!([]),
                serde_json::json!("beta"),
                false,
            ),
        ];
        assert_eq!(got, expected, "{tier}: {out}");
        for l in &lines {
            assert!(l["duration_ns"].as_u64().is_some_and(|d| d > 0), "{l}");
        }
    }
}

/// #15: `count --by pid|comm|arg0`, counted in the program: exact rows for two
/// processes, on every tier.
#[test]
fn count_by_breaks_calls_down_in_the_program() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let script = format!("echo go | '{pie}' & echo go | '{pie}'; wait");
    let rows = |by: &str, tier: Tier| -> Vec<(String, Value, u64)> {
        let (code, out, err) = sonde(&[
            "count",
            "--json",
            "--tier",
            tier.name(),
            "--by",
            by,
            &pie,
            "fx_[ad]*",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        assert_eq!(code, 0, "{tier} --by {by}: {err}");
        let report = json(&out);
        let mut rows: Vec<(String, Value, u64)> = report["functions"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().expect("name").to_string(),
                    r[by].clone(),
                    r["count"].as_u64().expect("count"),
                )
            })
            .collect();
        rows.sort_by(|a, b| (&a.0, a.1.to_string()).cmp(&(&b.0, b.1.to_string())));
        rows
    };
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        // Two processes, each fx_alpha once and fx_delta four times.
        let by_pid = rows("pid", tier);
        assert_eq!(by_pid.len(), 4, "{tier}: {by_pid:?}");
        let pids: std::collections::BTreeSet<u64> = by_pid.iter().map(|r| r.1.as_u64().expect("pid")).collect();
        assert_eq!(pids.len(), 2, "two processes: {by_pid:?}");
        for (name, _, n) in &by_pid {
            assert_eq!(*n, if name == "fx_delta" { 4 } else { 1 }, "{tier}: {by_pid:?}");
        }
    }
    let best = Tier::ALL.into_iter().find(|t| tier_supported(*t)).expect("a tier");
    assert_eq!(
        rows("comm", best),
        vec![
            ("fx_alpha".to_string(), Value::from("fixture-pie"), 2),
            ("fx_delta".to_string(), Value::from("fixture-pie"), 8),
        ]
    );
    // fx_delta(i) for i in 0..4, in each process.
    let by_arg: Vec<(String, Value, u64)> = (0..4).map(|i| ("fx_delta".to_string(), Value::from(i), 2)).collect();
    let mut expected = vec![("fx_alpha".to_string(), Value::from(0), 2)];
    expected.extend(by_arg);
    assert_eq!(rows("arg0", best), expected);
    // latency --by: a histogram per (function, process), the key known at return.
    let (code, out, err) = sonde(&[
        "latency",
        "--json",
        "--tier",
        best.name(),
        "--by",
        "pid",
        &pie,
        "fx_[ad]*",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    let mut got: Vec<(String, u64)> = report["functions"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let hist: u64 = r["histogram"]
                .as_array()
                .expect("histogram")
                .iter()
                .map(|b| b["count"].as_u64().unwrap_or(0))
                .sum();
            assert_eq!(Some(hist), r["count"].as_u64(), "{r}");
            assert!(r["pid"].as_u64().is_some(), "{r}");
            (r["name"].as_str().expect("name").to_string(), hist)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("fx_alpha", 1), ("fx_alpha", 1), ("fx_delta", 4), ("fx_delta", 4)]
            .map(|(n, c)| (n.to_string(), c))
            .to_vec()
    );
    // Arguments are gone at return: said.
    let (code, _, err) = sonde(&["latency", "--by", "arg0", &pie, "fx_alpha", "-d", "0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("latency --by takes pid, tid or comm"), "{err}");
}

/// #15: `sonde hist`: log2 and linear histograms of an argument and of the
/// return value, with known bucket counts, on every tier.
#[test]
fn hist_counts_argument_and_return_values_into_buckets() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let buckets = |args: &[&str]| -> Vec<(u64, Option<u64>, u64)> {
        let mut all = vec!["hist", "--json"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[&pie, "fx_delta", "--", &pie]);
        let (code, out, err) = sonde(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        let report = json(&out);
        let row = &report["functions"][0];
        assert_eq!(row["name"], "fx_delta");
        row["histogram"]
            .as_array()
            .expect("histogram")
            .iter()
            .map(|b| {
                (
                    b["ge"].as_u64().expect("ge"),
                    b["lt"].as_u64(),
                    b["count"].as_u64().expect("count"),
                )
            })
            .collect()
    };
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        // fx_delta(x) for x in 0..4: log2 buckets of the argument.
        assert_eq!(
            buckets(&["--tier", tier.name(), "--of", "arg0"]),
            vec![(0, Some(1), 1), (1, Some(2), 1), (2, Some(4), 2)],
            "{tier}"
        );
        // It returns x * 5 + 3: 3, 8, 13, 18, one per linear bucket of 5.
        assert_eq!(
            buckets(&["--tier", tier.name(), "--of", "ret", "--linear", "5"]),
            vec![(0, Some(5), 1), (5, Some(10), 1), (10, Some(15), 1), (15, Some(20), 1)],
            "{tier}"
        );
    }
}

/// #15: `--filter` evaluated in the program: exact counts of the calls it
/// selects (arguments, func, comm, string arguments, return values), on every
/// tier; a bad expression points at its column.
#[test]
fn filters_count_exactly_the_calls_they_select() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let count = |filter: &str| -> Vec<(String, u64)> {
            let (code, out, err) = sonde(&[
                "count",
                "--json",
                "--tier",
                tier.name(),
                "--filter",
                filter,
                &pie,
                "fx_*",
                "--",
                &pie,
            ]);
            assert_eq!(code, 0, "{tier} --filter {filter}: {err}");
            let mut c = counts(&json(&out));
            c.retain(|(_, n)| *n > 0);
            c.sort();
            c
        };
        let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> { v.iter().map(|(n, c)| (n.to_string(), *c)).collect() };
        // fx_delta(x), x in 0..4; fx_gamma 0..3; fx_beta 0..2; fx_alpha 0.
        assert_eq!(count("arg0 >= 2"), owned(&[("fx_delta", 2), ("fx_gamma", 1)]), "{tier}");
        assert_eq!(
            count("func == \"fx_a*\" || arg0 == 3"),
            owned(&[("fx_alpha", 1), ("fx_delta", 1)]),
            "{tier}"
        );
        assert_eq!(
            count("(arg0 == 1 || arg0 == 2) && func != \"fx_gamma\""),
            owned(&[("fx_beta", 1), ("fx_delta", 2)]),
            "{tier}"
        );
        assert_eq!(
            count("comm == \"fixture*\" && arg0 < 1"),
            owned(&[("fx_alpha", 1), ("fx_beta", 1), ("fx_delta", 1), ("fx_gamma", 1)]),
            "{tier}"
        );
        assert_eq!(count("comm != \"fixture-pie\""), owned(&[]), "{tier}");
        // A string argument, and the return value at return.
        let (code, out, err) = sonde(&[
            "trace",
            "--json",
            "--tier",
            tier.name(),
            "--args",
            "s,i",
            "--filter",
            "arg0 == \"hel*\"",
            &pie,
            "str_echo",
            "--",
            &pie,
            "strings",
        ]);
        assert_eq!(code, 0, "{err}");
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 1, "{tier}: {out}");
        assert_eq!(lines[0]["args"], serde_json::json!(["hello", 5]));
        let (code, out, err) = sonde(&[
            "hist",
            "--json",
            "--tier",
            tier.name(),
            "--of",
            "ret",
            "--filter",
            "ret > 10",
            &pie,
            "fx_delta",
            "--",
            &pie,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(json(&out)["functions"][0]["count"], 2, "{tier}: 13 and 18: {out}");
    }
    // Errors name the column.
    let (code, _, err) = sonde(&["count", "--filter", "arg0 > x1", &pie, "fx_*", "-d", "0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("column 8") && err.contains("^"), "{err}");
    let (code, _, err) = sonde(&["count", "--filter", "ret == 0", &pie, "fx_*", "-d", "0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("ret is only known at return"), "{err}");
}

/// #15: user stacks captured in the program and named: `trace --stack` and
/// `count --by stack` show the known callers (a fixture built with frame
/// pointers: main -> stack_outer -> stack_inner -> stack_leaf).
#[test]
fn stacks_name_the_known_callers() {
    let _s = serial();
    require_root();
    let app = fixture_arg("fixture-stack");
    let best = Tier::ALL.into_iter().find(|t| tier_supported(*t)).expect("a tier");
    let (code, out, err) = sonde(&[
        "trace",
        "--json",
        "--tier",
        best.name(),
        "--stack",
        &app,
        "stack_leaf",
        "--",
        &app,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    let names = |frames: &Value| -> Vec<String> {
        frames
            .as_array()
            .expect("frames")
            .iter()
            .map(|f| {
                f.as_str()
                    .expect("frame")
                    .split('+')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    for l in &lines {
        let frames = names(&l["stack"]);
        // At a function's entry the frame-pointer walk skips its direct caller
        // (the return address is on the stack, not yet behind a frame).
        assert_eq!(frames[..3], ["stack_leaf", "stack_outer", "main"], "{l}");
        assert!(
            l["stack"][0].as_str().is_some_and(|f| f.contains("stack.c:")),
            "file:line from DWARF: {l}"
        );
    }
    let (code, out, err) = sonde(&[
        "count",
        "--json",
        "--tier",
        best.name(),
        "--by",
        "stack",
        &app,
        "stack_leaf",
        "--",
        &app,
    ]);
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    let rows = report["functions"].as_array().expect("rows");
    assert_eq!(
        rows.iter().map(|r| r["count"].as_u64().expect("count")).sum::<u64>(),
        3,
        "{report}"
    );
    for r in rows {
        assert_eq!(names(&r["stack"])[..3], ["stack_leaf", "stack_outer", "main"], "{r}");
    }
}

/// #16: USDT probes (`<sys/sdt.h>`): exact counts including a semaphore-guarded
/// probe, arguments read as their specs say (register, memory, constant,
/// string), on every tier; a probe in a shared library attached for every
/// process; python3's own probes when python3 is there.
#[test]
fn usdt_probes_count_and_read_their_arguments_on_every_tier() {
    let _s = serial();
    require_root();
    let app = fixture_arg("fixture-usdt");
    let lib = fixture_arg("libusdt.so");
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let (code, out, err) = sonde(&[
            "count",
            "--json",
            "--tier",
            tier.name(),
            &app,
            "usdt:sondefx:*",
            "--",
            &app,
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        let mut got = counts(&json(&out));
        got.sort();
        assert_eq!(
            got,
            [
                ("usdt:sondefx:guarded", 3),
                ("usdt:sondefx:request", 3),
                ("usdt:sondefx:text", 1)
            ]
            .map(|(n, c)| (n.to_string(), c))
            .to_vec(),
            "{tier}: the guarded probe fires because its semaphore is raised"
        );
        let (code, out, err) = sonde(&[
            "trace",
            "--json",
            "--tier",
            tier.name(),
            "--args",
            "i,l,i",
            "--args",
            "usdt:sondefx:text=s,i",
            &app,
            "usdt:sondefx:*",
            "--",
            &app,
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        let lines: Vec<(String, Value)> = json_lines(&out)
            .iter()
            .map(|l| (l["function"].as_str().expect("function").to_string(), l["args"].clone()))
            .collect();
        let expected: Vec<(String, Value)> = vec![
            ("usdt:sondefx:request".into(), serde_json::json!([0, 100, -7])),
            ("usdt:sondefx:guarded".into(), serde_json::json!([0, 0, 0])),
            ("usdt:sondefx:request".into(), serde_json::json!([1, 101, -7])),
            ("usdt:sondefx:guarded".into(), serde_json::json!([10, 0, 0])),
            ("usdt:sondefx:request".into(), serde_json::json!([2, 102, -7])),
            ("usdt:sondefx:guarded".into(), serde_json::json!([20, 0, 0])),
            ("usdt:sondefx:text".into(), serde_json::json!(["hello usdt", 42])),
        ];
        assert_eq!(lines, expected, "{tier}: {out}");
        // The library's probe for every process (no pid, no command).
        let waiting = sonde_tests::Waiting::spawn_path(std::path::Path::new(&app), &[]).until_blocked();
        let mut child = Command::new(sonde_bin())
            .args([
                "count",
                "--json",
                "--tier",
                tier.name(),
                "-d",
                "3",
                &lib,
                "usdt:sondelib:fire",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sonde");
        let (_, err) = until_attached(&mut child);
        waiting.run();
        let (code, out, rest) = sonde_tests::finish_within(&mut child, err, Duration::from_secs(20));
        assert_eq!(code, Some(0), "{rest}");
        assert_eq!(
            counts(&json(&out)),
            vec![("usdt:sondelib:fire".to_string(), 2)],
            "{tier}"
        );
    }
    // list shows the probes with their argument specs and semaphores.
    let (code, out, _) = sonde(&["list", &app, "usdt:*"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("usdt:sondefx:guarded") && out.contains("semaphore at"),
        "{out}"
    );
    // A real interpreter's probes, when there is one.
    if let Ok(py) = std::fs::canonicalize("/usr/bin/python3") {
        let py = py.to_string_lossy().into_owned();
        let (code, out, err) = sonde(&[
            "count",
            "--json",
            &py,
            "usdt:python:function__entry",
            "--",
            &py,
            "-c",
            "import json",
        ]);
        assert_eq!(code, 0, "{err}");
        let n = counts(&json(&out))[0].1;
        assert!(n > 10, "python3 imports json through many functions: {n}");
    }
}
