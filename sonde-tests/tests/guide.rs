//! The guide (docs/guide.md) cannot go stale (#28): every Rust snippet in it
//! is a piece of the guide's project (examples/guide, or what `sonde new`
//! writes), and that project — a fresh `sonde new` project with the guide's
//! files copied in, nothing else — builds and runs each section's example
//! against the real kernel with exact output.

use std::path::{Path, PathBuf};

use sonde_tests::{fixtures, project, require_root};

/// The checkout, when the tests run inside it (not in the QEMU guests).
fn checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    root.join("docs/guide.md").is_file().then_some(root)
}

/// The files the guide tells a reader to write into a new project.
fn guide_files(root: &Path) -> Vec<PathBuf> {
    let base = root.join("examples/guide");
    let mut files = vec![PathBuf::from("ebpf/src/main.rs"), PathBuf::from("src/event.rs")];
    let bins = std::fs::read_dir(base.join("src/bin")).expect("examples/guide/src/bin");
    for entry in bins.flatten() {
        files.push(Path::new("src/bin").join(entry.file_name()));
    }
    files.sort();
    files
}

/// Copies the guide's files over the project at `dir`.
fn apply_guide(root: &Path, dir: &Path) {
    for f in guide_files(root) {
        let to = dir.join(&f);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(root.join("examples/guide").join(&f), &to).expect("copy a guide file");
    }
}

/// The ```rust blocks of `markdown`, each with the line it starts on.
fn rust_blocks(markdown: &str) -> Vec<(usize, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some(block) if fence => blocks.push(block),
            Some(mut block) => {
                block.1.push(line);
                open = Some(block);
            }
            None if fence && line.trim_start().trim_start_matches('`').trim() == "rust" => {
                open = Some((n + 1, Vec::new()));
            }
            None => {}
        }
    }
    blocks
}

/// `text` without any whitespace (snippets and files may wrap differently).
fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Every Rust snippet starts with `// FILE` (a file of the guide's project,
/// or of what `sonde new` writes) and its lines, in pieces separated by
/// `// ...`, appear in that file in order.
#[test]
fn every_snippet_of_the_guide_is_in_the_guide_project() {
    let Some(root) = checkout() else {
        eprintln!("no checkout here (a QEMU guest): the host's run checks the guide");
        return;
    };
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).expect("guide");
    let template = fixtures().join("guide-template");
    let _ = std::fs::remove_dir_all(&template);
    let t = template.to_string_lossy().into_owned();
    let (code, _, err) = sonde_tests::run_sonde(&["new", &t, "--name", "guide"]);
    assert_eq!(code, 0, "{err}");
    let blocks = rust_blocks(&guide);
    assert!(blocks.len() >= 8, "the guide's snippets were found ({})", blocks.len());
    for (line, block) in blocks {
        let file = block
            .first()
            .and_then(|l| l.trim().strip_prefix("// "))
            .and_then(|l| l.split_whitespace().next())
            .map(|f| f.trim_end_matches([',', ':', ';']))
            .filter(|f| f.ends_with(".rs"))
            .unwrap_or_else(|| panic!("docs/guide.md:{line}: a Rust snippet starts with `// FILE`"));
        let path = [root.join("examples/guide").join(file), template.join(file)]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!("docs/guide.md:{line}: {file} is neither in examples/guide nor written by sonde new")
            });
        let text = squeeze(&std::fs::read_to_string(&path).expect("read"));
        let mut at = 0;
        for piece in block[1..].split(|l| l.trim() == "// ...") {
            let piece = squeeze(&piece.join("\n"));
            match text[at..].find(&piece) {
                Some(i) => at += i + piece.len(),
                None => panic!(
                    "docs/guide.md:{line}: this piece of the snippet is not in {} (after what came before):\n{}",
                    path.display(),
                    block[1..].join("\n")
                ),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&template);
}

/// A fresh project plus the guide's files: each section's binary, run on the
/// fixtures, prints exactly what the fixture did.
#[test]
fn the_guide_project_runs_every_section_exactly() {
    require_root();
    let (Some(root), Some(_)) = (checkout(), project::cargo()) else {
        eprintln!("no checkout or cargo here (a QEMU guest): the host's run builds the guide's project");
        return;
    };
    let dir = project::new("guide-project", "guide");
    apply_guide(&root, &dir);
    let target = project::target(&dir);
    project::build(&dir, &target);
    let bin = |name: &str| target.join("release").join(name);
    let pie = fixtures().join("fixture-pie");
    let pie = pie.to_string_lossy();
    // The fixture's own output (a number: the sum it computed) shares stdout.
    let lines = |out: String| {
        out.lines()
            .filter(|l| !l.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let sorted = |out: String| {
        let mut v = lines(out);
        v.sort();
        v
    };

    // §2, the template's own program: calls per function.
    let counts = sorted(project::run(&bin("guide"), &[&pie, "fx_*", "--", &pie]));
    assert_eq!(counts, ["fx_alpha 1", "fx_beta 2", "fx_delta 4", "fx_gamma 3"]);

    // §3: the last value each returned (fx_alpha(0), fx_beta(1), ...).
    let returns = sorted(project::run(&bin("returns"), &[&pie, "fx_*", "--", &pie]));
    assert_eq!(returns, ["fx_alpha 1", "fx_beta 3", "fx_delta 18", "fx_gamma 8"]);

    // §3, sessions: calls with argument 0 are let go at entry, so each
    // function has one timed call fewer than it made; time only where timed.
    let timed = sorted(project::run(&bin("timed"), &[&pie, "fx_*", "--", &pie]));
    let got: Vec<(String, u64, bool)> = timed
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[1].parse().expect("calls"), f[2] != "0")
        })
        .collect();
    let want: Vec<(String, u64, bool)> = [("fx_alpha", 0), ("fx_beta", 1), ("fx_delta", 3), ("fx_gamma", 2)]
        .map(|(n, c)| (n.to_string(), c, c > 0))
        .to_vec();
    assert_eq!(got, want);

    // §4: one event per call, in call order, until the command exited.
    let events = lines(project::run(&bin("events"), &[&pie, "fx_*", "--", &pie]));
    let mut want = Vec::new();
    for (name, n) in [("fx_alpha", 1), ("fx_beta", 2), ("fx_gamma", 3), ("fx_delta", 4)] {
        for i in 0..n {
            want.push(format!("{name} {i:#x}"));
        }
    }
    assert_eq!(events, want);

    // §6: log lines with the traced process's strings, escaped and cut.
    let logs = lines(project::run(&bin("logs"), &[&pie, "str_echo", "--", &pie, "strings"]));
    let long = format!("{}...", "x".repeat(63));
    let want: Vec<String> = ["hello", "w\u{f6}rld \\xff", long.as_str()]
        .iter()
        .map(|s| format!("INFO call 0 with {s}"))
        .collect();
    assert_eq!(logs, want);

    // §7: a tracepoint saw each child the command forked.
    let forks = lines(project::run(&bin("forks"), &["--", &pie, "fork", "3"]));
    assert_eq!(forks, ["3 children"]);

    // §8: USDT arguments where each site's note says they are.
    let usdt_app = fixtures().join("fixture-usdt");
    let usdt_app = usdt_app.to_string_lossy();
    let hits = lines(project::run(
        &bin("usdt"),
        &[&usdt_app, "usdt:sondefx:request", "--", &usdt_app],
    ))
    .into_iter()
    .filter(|l| l != "done") // the fixture's own line
    .collect::<Vec<_>>();
    assert_eq!(hits.len(), 3, "{hits:?}");
    for (i, hit) in hits.iter().enumerate() {
        assert!(hit.contains("request") && hit.ends_with(&format!(" {i}")), "{hits:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
