//! `cargo xtask <task>`: the project's own commands.
//!
//! - `setup`: installs the eBPF toolchain if missing (idempotent).
//! - `test`: setup, then every test (unit, integration on the real kernel, the
//!   kernel matrix), a smoke run of the benchmark harness, and `dist`.
//! - `bench`: setup, then the benchmarks; refreshes BENCHMARKS.md.
//! - `fuzz`: the object parser under many more mutated objects than `test` runs.
//! - `dist`: the release binary, man pages, completions, a tarball and a
//!   Debian package checked by lintian, in target/dist/.
//! - `demo`: setup, then `sonde count` on the demo target, and the seed example:
//!   one program, three functions, three cookies.

mod bench;
mod cmd;
mod dist;
mod machine;
mod setup;
mod userland;
mod vm;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use cmd::{cargo, is_root, root, run_cmd};

#[derive(Parser)]
#[command(about = "sonde developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain (Debian rustc-web, rust-web-src, llvm-NN-dev, bpf-linker).
    Setup,
    /// Setup, then run all tests (needs root: they attach real uprobes).
    Test {
        /// Skip the kernel matrix (a quick local loop; CI runs it).
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Setup, then `sonde count` and the seed example on the demo target.
    Demo,
    /// The release binary, man pages, shell completions, a tarball and a Debian
    /// package (lintian-checked), in target/dist/.
    Dist,
    /// Setup, then the benchmarks (as root, a few minutes): target/bench/report.md,
    /// results.json, charts; refreshes BENCHMARKS.md.
    Bench,
    /// Fuzz the object parser longer than `test` does (mutated real objects; any
    /// panic, abort or input over 100 ms fails, the input kept in
    /// target/tmp/fuzz/spec-current.bin).
    Fuzz {
        /// How many inputs.
        #[arg(long, default_value_t = 2_000_000)]
        inputs: u64,
        /// Seed (default: from the clock, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run the integration tests on Debian's 5.10 and 6.1 kernels under QEMU.
    Vm {
        /// 5.10, 6.1, arm64-6.1 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test { no_vm, args } => {
            setup::run()?;
            let (mut passed, mut failed) = test(&args)?;
            let (p, f) = bench::smoke()?;
            passed += p;
            failed += f;
            println!("== cargo xtask dist (binary, man pages, completions, tarball, lintian-checked .deb)");
            dist::run()?;
            println!("== the .deb in a Debian 11 root (bullseye, glibc 2.31) on this kernel");
            let (p, f) = userland_test("bullseye")?;
            passed += p;
            failed += f;
            if no_vm {
                println!("== kernel matrix skipped (--no-vm)");
            } else {
                println!("== kernel matrix (x86-64 5.10 and 6.1, arm64 6.1, under QEMU)");
                vm::setup()?;
                let (p, f) = vm::run("all")?;
                passed += p;
                failed += f;
            }
            println!("tests: {passed} passed, {failed} failed");
            Ok(())
        }
        Task::Dist => {
            setup::run()?;
            dist::run()
        }
        Task::Demo => {
            setup::run()?;
            demo()
        }
        Task::Bench => {
            setup::run()?;
            if !is_root() {
                bail!("the benchmarks attach real uprobes and need root: run `sudo -E cargo xtask bench`");
            }
            bench::run()
        }
        Task::Fuzz { inputs, seed } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            println!("fuzz: {inputs} inputs, seed {seed:#x} (`cargo xtask fuzz --seed {seed}` repeats it)");
            run_cmd(
                cargo()
                    .args([
                        "test",
                        "--release",
                        "-p",
                        "sonde-tests",
                        "--test",
                        "fuzz_object_file",
                        "--",
                        "--nocapture",
                    ])
                    .env("SONDE_FUZZ_INPUTS", inputs.to_string())
                    .env("SONDE_FUZZ_SEED", seed.to_string()),
            )
        }
        Task::Vm { kernel } => {
            setup::run()?;
            vm::setup()?;
            let (passed, failed) = vm::run(&kernel)?;
            println!("tests: {passed} passed, {failed} failed");
            Ok(())
        }
    }
}

fn test(extra: &[String]) -> Result<(u64, u64)> {
    if !is_root() {
        bail!("the tests attach real uprobes and need root: run `sudo -E cargo xtask test`");
    }
    println!("== cargo fmt --check");
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("== cargo clippy (warnings are errors)");
    run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "-q", "--", "-D", "warnings"]))?;
    println!("== cargo doc (warnings are errors)");
    run_cmd(
        cargo()
            .args(["doc", "--workspace", "--no-deps", "-q"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // The CLI tests run the `sonde` binary: cargo test builds binaries only of
    // packages that have integration tests of their own.
    run_cmd(cargo().args(["build", "-p", "sonde-cli"]))?;
    println!("== cargo test (unit and integration tests, real kernel)");
    let skips = root().join("target/tmp/skipped.log");
    std::fs::create_dir_all(root().join("target/tmp"))?;
    let _ = std::fs::remove_file(&skips);
    let (passed, failed) = cargo_test(
        cargo()
            .args(["test", "--workspace", "--"])
            .args(extra)
            .env("SONDE_SKIP_LOG", &skips),
    )?;
    // Parts of tests this kernel could not run, by test name.
    let skipped = std::fs::read_to_string(&skips).unwrap_or_default();
    println!("== parts skipped on this kernel: {}", skipped.lines().count());
    for line in skipped.lines() {
        println!("  {line}");
    }
    if failed > 0 {
        bail!("{failed} test(s) failed");
    }
    Ok((passed, failed))
}

/// Runs `cargo test`, echoing its output, and adds up its `test result:` lines.
fn cargo_test(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim().strip_suffix(word).map(|n| {
                            n.trim()
                                .trim_start_matches("ok.")
                                .trim()
                                .trim_start_matches("FAILED.")
                                .trim()
                                .parse::<u64>()
                                .unwrap_or(0)
                        })
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("{cmd:?} failed with {status}");
    }
    Ok((passed, failed))
}

/// sonde-tests' `userland.rs` on this kernel, in Debian `suite`'s root.
fn userland_test(suite: &str) -> Result<(u64, u64)> {
    let root_fs = userland::prepare(suite)?;
    let (passed, failed) = cargo_test(
        cargo()
            .args(["test", "-p", "sonde-tests", "--test", "userland"])
            .env("SONDE_USERLAND_ROOT", root_fs)
            .env("SONDE_DEB", dist::deb_path("amd64")?),
    )?;
    if failed > 0 || passed == 0 {
        bail!("the .deb in {suite}'s root failed");
    }
    Ok((passed, failed))
}

fn demo() -> Result<()> {
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "sonde-seed-example",
        "--bins",
        "-p",
        "sonde-cli",
    ]))?;
    if !is_root() {
        bail!("the demo attaches uprobes and needs root: run `sudo -E cargo xtask demo`");
    }
    let release = root().join("target/release");
    let target = release.join("demo-target");
    let target = target.to_string_lossy();
    println!("== sonde count {target} 'function_*' -- {target}");
    run_cmd(Command::new(release.join("sonde")).args(["count", &target, "function_*", "--", &target]))?;
    println!("\n== the seed example: one program with cookies vs one program per function");
    run_cmd(&mut Command::new(release.join("seed")))
}
