//! `sonde new` (#18): the project it writes builds and counts calls exactly.

use std::process::{Command, Stdio};

use sonde_tests::{fixtures, require_root, run_sonde};

#[test]
fn a_new_project_builds_and_counts_calls_exactly() {
    require_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if Command::new(&cargo).arg("--version").output().is_err() {
        // The QEMU guests run the test binaries without a toolchain; the host
        // run of `cargo xtask test` builds the project.
        eprintln!("no cargo here: the new project is built by the host's test run");
        return;
    }
    let dir = fixtures().join("new-project");
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let (code, out, err) = run_sonde(&["new", &d, "--name", "counter"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created counter"), "{out}");
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
    let target = fixtures()
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| dir.join("target"), |t| t.join("new-project"));
    build(&dir, &target);

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
        build(&dir, &target);
        assert_eq!(run_counter(&target), want(step), "after src/step.rs said {step}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cargo build --release` of the project at `dir`, as a user runs it.
fn build(dir: &std::path::Path, target: &std::path::Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "--release"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo");
    assert!(
        built.status.success(),
        "the project builds:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// The counts `counter fixture-pie 'fx_*' -- fixture-pie` prints, sorted.
fn run_counter(target: &std::path::Path) -> Vec<(String, u64)> {
    let pie = fixtures().join("fixture-pie");
    let mut run = Command::new(target.join("release/counter"))
        .arg(&pie)
        .arg("fx_*")
        .arg("--")
        .arg(&pie)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the new project");
    {
        use std::io::Write;
        let _ = run.stdin.take().expect("stdin").write_all(b"go\n");
    }
    let out = run.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut counts: Vec<(String, u64)> = stdout
        .lines()
        .filter_map(|l| {
            let (name, n) = l.rsplit_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect();
    counts.sort();
    counts
}
