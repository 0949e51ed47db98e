//! `cargo xtask bench`: builds `sonde` and `sonde-bench` in release, runs the
//! suite as root, and refreshes `BENCHMARKS.md` and `docs/bench/*.png` from
//! `target/bench/report.md`. `smoke()` is the quick run `cargo xtask test` does.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{cargo, root, run_cmd};

fn build() -> Result<()> {
    if !Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() && Path::new("/usr/bin/apt-get").exists()
    {
        println!("bench: apt-get install fonts-dejavu-core (chart labels)");
        let _ = run_cmd(Command::new("apt-get").args(["update", "-qq"]));
        let _ = run_cmd(Command::new("apt-get").args(["install", "-y", "-qq", "fonts-dejavu-core"]));
    }
    run_cmd(cargo().args(["build", "--release", "-p", "sonde-cli", "-p", "sonde-bench"]))
}

/// The full suite; writes the report and refreshes BENCHMARKS.md.
pub fn run() -> Result<()> {
    build()?;
    let out = root().join("target/bench");
    let _ = std::fs::remove_dir_all(out.join("targets"));
    run_cmd(
        Command::new(root().join("target/release/sonde-bench"))
            .current_dir(root())
            .args(["--out", "target/bench", "--sonde", "target/release/sonde"]),
    )?;
    let report = std::fs::read_to_string(out.join("report.md")).context("report.md")?;
    let docs = root().join("docs/bench");
    std::fs::create_dir_all(&docs)?;
    let mut text = report.clone();
    for chart in ["load.png", "memory.png", "tiers.png"] {
        if out.join(chart).exists() {
            std::fs::copy(out.join(chart), docs.join(chart))?;
            text = text.replace(&format!("]({chart})"), &format!("](docs/bench/{chart})"));
        }
    }
    std::fs::write(root().join("BENCHMARKS.md"), text)?;
    println!("bench: BENCHMARKS.md and docs/bench/ refreshed; raw figures in target/bench/results.json");
    Ok(())
}

/// The harness on small N (seconds), so it cannot rot; returns (passed, failed).
pub fn smoke() -> Result<(u64, u64)> {
    build()?;
    println!("== benchmark smoke run (sonde-bench --quick)");
    let status = Command::new(root().join("target/release/sonde-bench"))
        .current_dir(root())
        .args([
            "--quick",
            "--out",
            "target/bench-smoke",
            "--sonde",
            "target/release/sonde",
        ])
        .status()
        .context("run sonde-bench")?;
    if !status.success() {
        bail!("benchmark smoke run failed: {status}");
    }
    Ok((1, 0))
}
