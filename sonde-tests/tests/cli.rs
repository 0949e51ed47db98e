//! The `sonde` command end to end (#6): exact counts on every tier pinned, SIGINT
//! mid-run, JSON validated, reports to files, several binaries, intervals, errors.

use std::io::Read;
use std::process::{Command, Stdio};

use serde_json::Value;
use sonde::Tier;
use sonde_tests::cli::*;
use sonde_tests::{fixture_arg, fixtures, link_count, require_root, sonde_bin, spawn_fixture, tier_supported};

#[test]
fn count_with_a_command_gives_exact_counts_on_every_tier() {
    let _s = serial();
    require_root();
    let before = link_count();
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
    assert_eq!(link_count(), before, "every link detached");
    no_tracefs_entries_left();
}

#[test]
fn sigint_mid_run_prints_the_summary_and_leaves_nothing_attached() {
    let _s = serial();
    require_root();
    let before = link_count();
    // Every process (with -p, sonde would end by itself when the process exits).
    let app = spawn_fixture("fixture-pie");
    let mut child = Command::new(sonde_bin())
        .args(["count", "--json", &fixture_arg("fixture-pie"), "fx_*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let (_, mut err) = until_attached(&mut child);
    assert!(link_count() > before || sonde::Features::current().kernel_release.starts_with("5."));
    // Counting in every process (no tree followed, no cgroup), sonde loads the
    // counter alone: the kernel lists it by name.
    let names = sonde::inspect::program_names().expect("programs");
    assert!(names.iter().any(|(_, n)| n == "count_all"), "{names:?}");
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
    assert_eq!(link_count(), before);
    no_tracefs_entries_left();
}

#[test]
fn list_and_features_report_without_attaching() {
    let _s = serial();
    require_root();
    let before = link_count();
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
    assert_eq!(link_count(), before);
}

#[test]
fn errors_name_the_problem_exit_non_zero_and_leave_nothing() {
    let _s = serial();
    require_root();
    let before = link_count();
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
    assert_eq!(link_count(), before);
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

/// #31, #30: the static binary `cargo xtask dist` makes for this machine
/// (`SONDE_DIST_BIN`: the guests carry it; x86-64's also runs alone in an
/// empty root during dist) counts exactly, on every tier this kernel has, and
/// leaves nothing attached.
#[test]
fn the_static_dist_binary_counts_exactly_on_every_tier() {
    let _s = serial();
    require_root();
    let Some(bin) = std::env::var_os("SONDE_DIST_BIN") else {
        sonde_tests::skip(
            "the dist binary",
            "SONDE_DIST_BIN is unset (the guests set it; on the host dist checks its own run)",
        );
        return;
    };
    let before = link_count();
    let pie = fixture_arg("fixture-pie");
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let mut child = Command::new(&bin)
            .args(["count", "--json", "--tier", tier.name(), &pie, "fx_*", "--", &pie])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the dist binary");
        let _ = std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), b"go\n");
        let out = child.wait_with_output().expect("wait");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{tier}: {stderr}");
        let report = json(&stdout);
        assert_eq!(report["tier"], tier.name(), "{report}");
        assert_eq!(counts(&report), owned(&FX_COUNTS), "{tier}: {report}");
    }
    assert_eq!(link_count(), before, "every link detached");
}
