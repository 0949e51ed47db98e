//! `sonde-bench`: what cookies and uprobe_multi buy, measured side by side in one
//! run (`cargo xtask bench`, as root). Writes `report.md`, `results.json` and PNG
//! charts to the output directory (default `target/bench`).
//!
//! Every figure is the median of several runs; comparisons are ratios of figures
//! measured in the same run. Where a figure would take minutes (per-target
//! detach costs ~0.1 s per probe in the kernel), it is extrapolated from a
//! smaller N and marked so.

mod charts;
mod measure;
mod opts;
mod peers;
/// The CLI object's programs and maps, named once.
#[allow(dead_code, unused_imports)]
#[path = "../../sonde-cli/src/probes/mod.rs"]
mod probes;
/// The CLI object's shared layouts.
#[allow(dead_code)]
#[path = "../../sonde-cli/src/record.rs"]
mod record;
mod sites;
mod target;
mod util;

use std::path::PathBuf;

use anyhow::{bail, Result};

use opts::Opts;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    // The child of the first-attach figure: one library, one fresh process.
    let all: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, lib, exe] = all.as_slice() {
        if flag == "--first-attach" {
            return peers::first_attach_child(lib, std::path::Path::new(exe));
        }
    }
    // For a profiler (`perf record -g -- sonde-bench --attach-loop N ROUNDS EXE [names] [quiet] [libbpf|both] [phases] [resolve-only]`):
    // the multi attach and detach of the first N functions (by offsets, or by
    // names resolved cold each round), ROUNDS times (`peers::attach_loop`).
    // The same for loading the cookie program (`--load-loop N ROUNDS`: its
    // counter map sized N), against libbpf's load of the peer program.
    if let [flag, n, rounds, only @ ..] = all.as_slice() {
        if flag == "--load-loop" {
            return peers::load_loop(n.parse()?, rounds.parse()?, only.first().map(String::as_str));
        }
    }
    if let [flag, n, rounds, exe, rest @ ..] = all.as_slice() {
        if flag == "--attach-loop" {
            return peers::attach_loop(n.parse()?, rounds.parse()?, std::path::Path::new(exe), rest);
        }
    }
    let mut opts = Opts {
        quick: false,
        out: PathBuf::from("target/bench"),
        sonde: PathBuf::from("target/release/sonde"),
        peers_only: false,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--peers" => opts.peers_only = true,
            "--out" => opts.out = args.next().map(PathBuf::from).unwrap_or(opts.out),
            "--sonde" => opts.sonde = args.next().map(PathBuf::from).unwrap_or(opts.sonde),
            other => {
                bail!("unknown argument {other} (usage: sonde-bench [--quick] [--peers] [--out DIR] [--sonde PATH])")
            }
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs and attach uprobes: run as root (sudo -E cargo xtask bench)");
    }
    std::fs::create_dir_all(&opts.out)?;
    if opts.peers_only {
        let figures = measure::peers_only(&opts)?;
        std::fs::write(opts.out.join("peers.json"), serde_json::to_string_pretty(&figures)?)?;
        println!("{}", peers::table(&figures));
        return Ok(());
    }
    let results = measure::all(&opts)?;
    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(opts.out.join("results.json"), json)?;
    let charts = charts::draw(&results, &opts.out)?;
    let report = measure::report(&results, &charts);
    std::fs::write(opts.out.join("report.md"), &report)?;
    println!("{report}");
    println!("wrote {}", opts.out.join("report.md").display());
    Ok(())
}
