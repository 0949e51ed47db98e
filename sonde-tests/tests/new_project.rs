//! `sonde new` (#18): the project it writes builds and counts calls exactly.

use sonde_tests::{fixtures, project, require_root, run_sonde};

#[test]
fn a_new_project_builds_and_counts_calls_exactly() {
    require_root();
    if project::cargo().is_none() {
        // The QEMU guests run the test binaries without a toolchain; the host
        // run of `cargo xtask test` builds the project.
        eprintln!("no cargo here: the new project is built by the host's test run");
        return;
    }
    let dir = project::new("new-project", "counter");
    let d = dir.to_string_lossy().into_owned();
    for f in [
        "Cargo.toml",
        "build.rs",
        "src/main.rs",
        "ebpf/Cargo.toml",
        "ebpf/src/main.rs",
    ] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    // A directory with files in it is refused, and left alone.
    let (code, _, err) = run_sonde(&["new", &d]);
    assert_eq!(code, 2);
    assert!(err.contains("is not empty"), "{err}");

    // Built as a user would, in a target directory kept between runs.
    let target = project::target(&dir);
    project::build(&dir, &target);

    // Its example counts the fixture's calls, one program, a cookie per function.
    let want = |times: u64| {
        [("fx_alpha", 1), ("fx_beta", 2), ("fx_delta", 4), ("fx_gamma", 3)]
            .map(|(n, c)| (n.to_string(), c * times))
            .to_vec()
    };
    assert_eq!(run_counter(&target), want(1));

    // A file shared with the host, pulled in by `#[path]` (as a record type
    // is): editing it alone rebuilds the eBPF object at the next `cargo
    // build`, with no step of the user's.
    let main = dir.join("ebpf/src/main.rs");
    let text = std::fs::read_to_string(&main).expect("ebpf main.rs");
    let text = text
        .replace(
            "sonde_ebpf::license!",
            "#[path = \"../../src/step.rs\"]\nmod step;\n\nsonde_ebpf::license!",
        )
        .replace("*p += 1", "*p += step::STEP");
    std::fs::write(&main, text).expect("edit ebpf main.rs");
    for step in [2, 3] {
        std::fs::write(dir.join("src/step.rs"), format!("pub const STEP: u64 = {step};\n")).expect("step.rs");
        project::build(&dir, &target);
        assert_eq!(run_counter(&target), want(step), "after src/step.rs said {step}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The counts `counter fixture-pie 'fx_*' -- fixture-pie` prints, sorted.
fn run_counter(target: &std::path::Path) -> Vec<(String, u64)> {
    let pie = fixtures().join("fixture-pie");
    let pie = pie.to_string_lossy();
    let out = project::run(&target.join("release/counter"), &[&pie, "fx_*", "--", &pie]);
    let mut counts: Vec<(String, u64)> = out
        .lines()
        .filter_map(|l| {
            let (name, n) = l.rsplit_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect();
    counts.sort();
    counts
}
