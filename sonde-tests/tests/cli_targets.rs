//! What the `sonde` command probes: binaries seen from a process's or a
//! container's mount namespace, process trees followed, ifuncs, USDT probes.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sonde::Tier;
use sonde_tests::cli::*;
use sonde_tests::{fixture_arg, fixtures, link_count, require_root, sonde_bin, spawn_fixture, tier_supported};

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
    // The mount point goes with the namespace's last process: nothing left.
    let _ = std::fs::remove_dir(&dir);
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

/// #14: `-- COMMAND` follows the processes it forks, through fork alone (workers)
/// and fork + exec (`sh -c`), exactly, on every tier; `--no-follow` traces only
/// the command's own process; `-p PID --follow` takes in the children a running
/// process forks.
#[test]
fn a_command_is_followed_into_every_process_it_forks() {
    let _s = serial();
    require_root();
    let before = link_count();
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
    assert_eq!(link_count(), before, "every link detached");
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

/// #26: a function built with CET starts with `endbr64`, which the kernel
/// single-steps out of line (a second trap per hit); its entry probe goes on
/// the `push` after it, which the kernel emulates. `list` says where, and the
/// data is what the entry gives: counts, return values, stacks (frame 0 at
/// +4), on every tier; a function without `endbr64` keeps its entry.
#[test]
fn an_endbr64_entry_is_probed_on_its_push_with_the_same_data() {
    let _s = serial();
    require_root();
    if !cfg!(target_arch = "x86_64") {
        sonde_tests::skip(
            "endbr64 entries",
            "x86-64 only (arm64 keeps every entry: docs/kernel-support.md)",
        );
        return;
    }
    let (cet, plain) = (fixture_arg("fixture-cet"), fixture_arg("fixture-stack"));
    let placed = |binary: &str| -> Vec<u64> {
        let (code, out, err) = sonde(&["list", "--json", binary, "stack_*"]);
        assert_eq!(code, 0, "{err}");
        json(&out)["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| f["probe_offset"].as_u64().unwrap_or(0) - f["file_offset"].as_u64().unwrap_or(0))
            .collect()
    };
    // stack_leaf (a leaf: endbr64; lea; ret) keeps its entry; the others
    // (endbr64; push %rbp) are probed past the endbr64.
    assert_eq!(placed(&cet), [0, 4, 4]);
    assert_eq!(placed(&plain), [0, 0, 0], "push %rbp first: the entry");
    let (code, out, _) = sonde(&["list", &cet, "stack_inner"]);
    assert!(code == 0 && out.contains("probed at +4, past endbr64"), "{out}");
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let (code, out, err) = sonde(&["count", "--json", "--tier", tier.name(), &cet, "stack_*", "--", &cet]);
        assert_eq!(code, 0, "{tier}: {err}");
        let mut counts: Vec<(String, u64)> = json(&out)["functions"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap_or("").to_string(),
                    f["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [("stack_inner", 3), ("stack_leaf", 3), ("stack_outer", 3)].map(|(n, c)| (n.to_string(), c)),
            "{tier}"
        );
        // stack_inner(x) = 2 (x + 1) for x in 0..3; its stack from the push on.
        let (code, out, err) = sonde(&[
            "trace",
            "--json",
            "--tier",
            tier.name(),
            "--args",
            "i",
            "--ret",
            "i",
            "--stack",
            &cet,
            "stack_inner",
            "--",
            &cet,
        ]);
        assert_eq!(code, 0, "{tier}: {err}");
        let lines = json_lines(&out);
        let calls: Vec<(i64, i64)> = lines
            .iter()
            .map(|l| (l["args"][0].as_i64().unwrap_or(-1), l["ret"].as_i64().unwrap_or(-1)))
            .collect();
        assert_eq!(calls, [(0, 2), (1, 4), (2, 6)], "{tier}: {out}");
        for l in &lines {
            let frames: Vec<&str> = l["stack"]
                .as_array()
                .expect("stack")
                .iter()
                .map(|f| f.as_str().unwrap_or(""))
                .collect();
            assert!(frames[0].starts_with("stack_inner+0x4 "), "{tier}: {frames:?}");
            let names: Vec<&str> = frames.iter().map(|f| f.split('+').next().unwrap_or("")).collect();
            assert_eq!(names[..3], ["stack_inner", "stack_outer", "main"], "{tier}: {frames:?}");
        }
    }
}
