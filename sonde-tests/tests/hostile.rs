//! The `sonde` command against binaries and processes that attack it: names
//! and strings that would drive the operator's terminal, two `static`
//! functions of one name, a USDT note pointing inside an instruction, a
//! binary rewritten in place while probed, Go programs (never a return
//! probe), and `--filter` text built to exhaust the parser.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sonde_tests::*;

/// Tests here count links: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// No byte of `text` could move a cursor, retitle a terminal or start a line
/// the tool did not write: no C0 control but the newline, no DEL, no C1.
fn assert_terminal_safe(what: &str, text: &str) {
    let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(bad.is_empty(), "{what}: control characters {bad:?} in:\n{text}");
}

#[test]
fn names_comms_and_strings_never_reach_the_terminal_raw() {
    let _s = serial();
    require_root();
    let hostile = fixture_arg("fixture-hostile");
    // list: names from the symbol table.
    let (code, out, err) = run_sonde(&["list", &hostile, "hostile_*"]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe("list", &out);
    assert!(
        out.contains("hostile_screen_\\e]0;owned\\x07\\e[2J\\rFORGED\\nfx_alpha 999999\\u{9b}31m"),
        "{out}"
    );
    // One line per function, the header and the total: nothing forged.
    assert_eq!(out.lines().count(), 2 + 5, "{out}");
    // count: names; trace: the comm set with prctl and a string argument.
    let (code, out, err) = run_sonde(&["count", &hostile, "hostile_*", "--", &hostile]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe("count stdout", &out);
    assert_terminal_safe("count stderr", &err);
    assert!(!out.lines().any(|l| l.starts_with("fx_alpha")), "{out}");
    let (code, out, err) = run_sonde(&["trace", "--args", "s", &hostile, "hostile_say", "--", &hostile]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe("trace", &out);
    assert!(out.contains("\\e]0;owned\\x07\\e[2J"), "comm escaped: {out}");
    assert!(
        out.contains("hostile_say(\"\\e[31mred\\r\\n\\tforged line\\x07 back\\\\slash\")"),
        "string escaped: {out}"
    );
    // --by comm, and JSON keeps the raw text (escaped by JSON itself).
    let (code, out, err) = run_sonde(&["count", "--by", "comm", &hostile, "hostile_say", "--", &hostile]);
    assert_eq!(code, 0, "{err}");
    assert_terminal_safe("count --by comm", &out);
    let (code, out, err) = run_sonde(&[
        "trace",
        "--json",
        "--args",
        "s",
        &hostile,
        "hostile_say",
        "--",
        &hostile,
    ]);
    assert_eq!(code, 0, "{err}");
    let line: Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).expect("a JSON line")).expect("JSON");
    assert_eq!(line["comm"], "\u{1b}]0;owned\u{7}\u{1b}[2J", "{line}");
}

#[test]
fn two_static_functions_of_one_name_are_both_probed_and_told_apart() {
    let _s = serial();
    require_root();
    let hostile = fixture_arg("fixture-hostile");
    let (code, out, err) = run_sonde(&["count", "--json", &hostile, "helper", "--", &hostile]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
    let mut rows: Vec<(u64, u64)> = report["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            assert_eq!(f["name"], "helper");
            (
                f["count"].as_u64().expect("count"),
                f["offset"].as_u64().expect("offset"),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(rows.len(), 2, "{report}");
    assert_eq!((rows[0].0, rows[1].0), (1, 3), "{report}");
    assert_ne!(rows[0].1, rows[1].1);
    // The table names each by its offset.
    let (_, out, _) = run_sonde(&["count", &hostile, "helper", "--", &hostile]);
    for (count, offset) in rows {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("helper [{offset:#x}]")) && l.trim_end().ends_with(&count.to_string())),
            "{out}"
        );
    }
}

#[test]
fn a_usdt_note_pointing_inside_an_instruction_is_refused() {
    let _s = serial();
    require_root();
    let hostile = fixture_arg("fixture-hostile");
    let before = link_count();
    for cmd in ["count", "latency"] {
        let (code, _, err) = run_sonde(&[cmd, "-d", "1", &hostile, "usdt:hostile:inside"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("inside an instruction"), "{cmd}: {err}");
    }
    assert_eq!(link_count(), before);
    // The real probe of the same binary still counts.
    let (code, out, err) = run_sonde(&["count", "--json", &hostile, "usdt:hostile:fine", "--", &hostile]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
    assert_eq!(report["functions"][0]["count"], 1, "{report}");
}

#[test]
fn a_binary_rewritten_in_place_while_counted_is_detached_at_once() {
    let _s = serial();
    require_root();
    let dir = std::env::temp_dir().join(format!("sonde-rewritten-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join("app");
    std::fs::copy(fixtures().join("fixture-pie"), &copy).expect("copy");
    let before = link_count();
    let mut child = Command::new(sonde_bin())
        .args(["count", "-d", "60"])
        .arg(&copy)
        .arg("fx_*")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sonde");
    let err = until_attached(&mut child);
    // Tiers with BPF links (5.15+) show them in the kernel's link list.
    assert!(link_count() > before || !tier_supported(sonde::Tier::PerfLink));
    let written = Instant::now();
    std::fs::write(&copy, std::fs::read(fixtures().join("fixture-nopie")).expect("read")).expect("rewrite in place");
    let (code, _, err) = finish_within(&mut child, err, Duration::from_secs(20));
    let took = written.elapsed();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("rewritten in place"), "{err}");
    assert!(took < Duration::from_secs(2), "sonde noticed after {took:?}");
    assert_eq!(link_count(), before, "nothing left attached");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn go_programs_never_get_a_return_probe() {
    let _s = serial();
    require_root();
    let go = fixture_arg("fixture-go");
    let before = link_count();
    // Every command with a return half: probed at the return instructions,
    // never by uretprobe; the program, whose goroutines grow (copy) their
    // stacks under the probes, runs to its end (prints its total, 4024).
    for args in [
        vec!["latency", go.as_str(), "main.grow", "main.nap"],
        vec!["trace", "--ret", go.as_str(), "main.grow", "main.nap"],
        vec!["hist", "--of", "ret", go.as_str(), "main.grow"],
    ] {
        let mut full = args.clone();
        full.extend(["--", go.as_str()]);
        let (code, out, err) = run_sonde(&full);
        if cfg!(target_arch = "aarch64") {
            // arm64: refused by name (data between Go's instructions).
            assert!(code != 0 && err.contains("not found on arm64"), "{args:?}: {err}");
            assert_eq!(link_count(), before, "{args:?}");
            continue;
        }
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.lines().any(|l| l.trim() == "4024"),
            "{args:?}: the Go program ended well: {out}"
        );
        assert!(!err.contains("unexpected return pc"), "{args:?}: {err}");
        assert_eq!(link_count(), before, "{args:?}");
    }
    // The library refuses it too, stripped or not.
    for name in ["fixture-go", "fixture-go-stripped"] {
        let binary = sonde::resolve::BinaryFile::open(&fixtures().join(name)).expect("open");
        assert!(binary.is_go(), "{name} recognised as Go");
    }
    assert!(!sonde::resolve::BinaryFile::open(&fixtures().join("fixture-pie"))
        .expect("open")
        .is_go());
    // Entry probes are safe: exact counts, and the program ends well.
    let (code, out, err) = run_sonde(&["count", "--json", &go, "main.grow", "main.nap", "--", &go]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
    let count = |n: &str| {
        report["functions"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["name"] == n))
            .and_then(|f| f["count"].as_u64())
    };
    // Each growth of a goroutine's stack re-runs the function from its entry
    // (morestack): the probe sits past that stack check, so each call is
    // seen once, however often its stack grew.
    assert_eq!(count("main.grow"), Some(4 * 2001), "{report}");
    assert_eq!(count("main.nap"), Some(4), "{report}");
}

#[test]
fn filter_text_built_to_exhaust_the_parser_is_refused_quickly() {
    // Its first case attaches: other tests count links.
    let _s = serial();
    let pie = fixture_arg("fixture-pie");
    let nested = format!("{}pid == 1{}", "(".repeat(40_000), ")".repeat(40_000));
    let exploding = (0..24)
        .map(|i| format!("(arg0 == {i} || arg1 == {i})"))
        .collect::<Vec<_>>()
        .join(" && ");
    let cases = [
        ("pid\u{3000}== 1 &&\u{a0}arg0 > 2\u{2003}", None),
        (nested.as_str(), Some("nested")),
        (exploding.as_str(), Some("alternatives")),
        ("pid == 1 || ".repeat(5_000).as_str(), Some("comparisons")),
    ]
    .map(|(t, why)| (t.to_string(), why));
    for (text, why) in cases {
        let start = Instant::now();
        let out = Command::new(sonde_bin())
            .args(["count", "-d", "1", "--filter", &text, &pie, "fx_alpha"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        let short: String = text.chars().take(60).collect();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{short}: took {:?}",
            start.elapsed()
        );
        // Refused with a reason, or run: never a panic (101) or a signal.
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{short}: {:?} {err}",
            out.status
        );
        if let Some(why) = why {
            assert_eq!(out.status.code(), Some(2), "{short}: {err}");
            assert!(err.contains(why), "{short}: {err}");
        }
    }
}

#[test]
fn a_bare_ret_before_the_binary_is_not_taken_as_its_type() {
    let _s = serial();
    require_root();
    let pie = fixture_arg("fixture-pie");
    let (code, out, err) = run_sonde(&["trace", "--ret", &pie, "fx_alpha", "--", &pie]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fx_alpha() = 0x1"), "{out}");
}

/// Recursion deeper than the kernel's 64 nested return probes: the calls
/// past it are counted and reported untimed, and the 64 that are timed pair
/// with their own entries (the outermost call spans all 100 levels), on every
/// tier, native and emulated sessions alike.
#[test]
fn recursion_past_the_return_probe_limit_is_counted_and_timed_right() {
    let _s = serial();
    require_root();
    let hostile = fixture_arg("fixture-hostile");
    let mut ran = Vec::new();
    for tier in [
        sonde::Tier::Multi,
        sonde::Tier::PerfLink,
        sonde::Tier::Emulated,
        sonde::Tier::Tracefs,
    ] {
        if !tier_supported(tier) {
            continue;
        }
        let (code, out, err) = run_sonde(&[
            "latency",
            "--json",
            "--tier",
            tier.name(),
            &hostile,
            "hostile_recurse",
            "--",
            &hostile,
            "recurse",
            "100",
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
        let f = &report["functions"][0];
        assert_eq!(f["count"], 100, "{tier}: {report}");
        assert_eq!(f["timed"], 64, "{tier}: {report}");
        assert_eq!(f["untimed"], 36, "{tier}: {report}");
        // 100 levels of at least 50 µs each: the outermost call's own time.
        let max = f["max_ns"].as_u64().unwrap_or(0);
        assert!(
            max >= 5_000_000,
            "{tier}: the longest timed call {max} ns is not the outermost: {report}"
        );
        ran.push(format!("{tier} ({})", report["session"]));
    }
    println!("timed on {}", ran.join(", "));
    assert!(!ran.is_empty());
}

#[test]
fn threads_single_stepping_different_instructions_under_signals_run_right() {
    let _s = serial();
    require_root();
    let threads = fixture_arg("fixture-threads");
    let before = link_count();
    // Three threads, 3,000 rounds each of st_mov, st_lea, st_sub (entries
    // the kernel single-steps out of line, each a different instruction),
    // SIGURG storms from the main thread: every tier, exact counts, and the
    // program's own result unchanged (3 x (3 x 4,498,500 + 18,000)).
    for tier in sonde::Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let (code, out, err) = run_sonde(&[
            "count",
            "--json",
            "--tier",
            tier.name(),
            &threads,
            "st_*",
            "--",
            &threads,
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        assert!(
            out.lines().chain(err.lines()).any(|l| l.trim() == "sum 40540500"),
            "{tier}: the program's result changed or it died:\n{out}\n{err}"
        );
        let report: Value = serde_json::from_str(out.lines().last().expect("a line")).expect("JSON");
        for f in report["functions"].as_array().expect("functions") {
            assert_eq!(f["count"], 9000, "{tier}: {report}");
        }
        assert_eq!(report["functions"].as_array().map(Vec::len), Some(3), "{report}");
    }
    assert_eq!(link_count(), before, "nothing left attached");
}
