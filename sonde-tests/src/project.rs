//! Projects made by `sonde new` and built as a user builds them (the template
//! and guide tests): cargo from the host's toolchain, a target directory kept
//! between runs beside the fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{fixtures, run_sonde};

/// The cargo that runs the tests, or `None` where there is none (the QEMU
/// guests run test binaries without a toolchain: the host's run builds).
pub fn cargo() -> Option<std::ffi::OsString> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(&cargo).arg("--version").output().ok()?;
    Some(cargo)
}

/// `sonde new DIR --name NAME` into a fresh `fixtures()/DIR`.
pub fn new(dir: &str, name: &str) -> PathBuf {
    let dir = fixtures().join(dir);
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let (code, out, err) = run_sonde(&["new", &d, "--name", name]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("created {name}")), "{out}");
    dir
}

/// The target directory the generated projects share (kept between runs,
/// under the workspace's target directory).
pub fn target(dir: &Path) -> PathBuf {
    fixtures()
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| dir.join("target"), |t| t.join("new-project"))
}

/// `cargo build --release` of the project at `dir`, as a user runs it.
pub fn build(dir: &Path, target: &Path) {
    let cargo = cargo().expect("cargo");
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

/// Runs `program args...`, writes a line to its stdin (the fixtures start on
/// one), and gives its stdout once it succeeded.
pub fn run(program: &Path, args: &[&str]) -> String {
    let mut run = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the project's binary");
    {
        use std::io::Write;
        let _ = run.stdin.take().expect("stdin").write_all(b"go\n");
    }
    let out = run.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
