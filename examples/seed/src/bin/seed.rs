//! Runs the seed example: `generic_probe` attached to `function_a`, `function_b` and
//! `function_c` of the demo target with cookies 1, 2, 3, then the same counts with
//! one program per function, and what each way cost the kernel.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use sonde::maps::Array;
use sonde::{AttachOptions, Object, Target};

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seed-probes.bpf.o"));
const FUNCTIONS: [&str; 3] = ["function_a", "function_b", "function_c"];

struct Cost {
    programs: usize,
    verified_insns: u32,
    load_ms: f64,
    memlock: u64,
}

fn demo_target() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("exe dir")?.join("demo-target"))
}

fn run_target(target: &PathBuf) -> Result<()> {
    let status = Command::new(target).status().context("run demo-target")?;
    anyhow::ensure!(status.success(), "demo-target failed: {status}");
    Ok(())
}

fn print_counts(object: &Object) -> Result<()> {
    let calls = Array::<u64>::new(object.map("CALLS")?)?;
    for (name, n) in FUNCTIONS.iter().zip(calls.to_vec()?) {
        println!("  {name}: {n} calls");
    }
    Ok(())
}

fn with_cookies(target: &PathBuf) -> Result<Cost> {
    let mut object = Object::load_static(OBJECT)?;
    let probe = object.uprobe("generic_probe")?;
    let targets: Vec<Target> = FUNCTIONS
        .iter()
        .zip(1u64..)
        .map(|(f, cookie)| Target::symbol(target, *f).cookie(cookie))
        .collect();
    let start = Instant::now();
    let attachment = probe.attach(&targets, &AttachOptions::default())?;
    let attach_time = start.elapsed();
    println!("One program, three cookies ({}):", attachment.plan());
    run_target(target)?;
    print_counts(&object)?;
    let mut cost = Cost {
        programs: attachment.programs().len(),
        verified_insns: 0,
        load_ms: 0.0,
        memlock: 0,
    };
    for p in attachment.programs() {
        let info = p.info()?;
        cost.verified_insns += info.verified_insns;
        cost.load_ms += p.load_time().as_secs_f64() * 1e3;
        cost.memlock += info.memlock;
    }
    println!("  attach: {:.2} ms", attach_time.as_secs_f64() * 1e3);
    Ok(cost)
}

fn one_program_per_function(target: &PathBuf) -> Result<Cost> {
    let mut object = Object::load_static(OBJECT)?;
    let mut attachments = Vec::new();
    let mut cost = Cost {
        programs: 0,
        verified_insns: 0,
        load_ms: 0.0,
        memlock: 0,
    };
    for f in FUNCTIONS {
        let name = format!("probe_{f}");
        let a = object
            .uprobe(&name)?
            .attach(&[Target::symbol(target, f)], &AttachOptions::default())?;
        for p in a.programs() {
            let info = p.info()?;
            cost.programs += 1;
            cost.verified_insns += info.verified_insns;
            cost.load_ms += p.load_time().as_secs_f64() * 1e3;
            cost.memlock += info.memlock;
        }
        attachments.push(a);
    }
    println!("One program per function ({}):", attachments[0].tier());
    run_target(target)?;
    print_counts(&object)?;
    Ok(cost)
}

fn main() -> Result<()> {
    let target = demo_target()?;
    println!("{}", sonde::Features::current());
    let cookies = with_cookies(&target)?;
    println!();
    let classic = one_program_per_function(&target)?;
    println!();
    println!(
        "{:<28} {:>10} {:>16} {:>10} {:>12}",
        "", "programs", "verified insns", "load ms", "memlock"
    );
    for (label, c) in [("one program + 3 cookies", &cookies), ("3 programs", &classic)] {
        println!(
            "{label:<28} {:>10} {:>16} {:>10.3} {:>10} B",
            c.programs, c.verified_insns, c.load_ms, c.memlock
        );
    }
    Ok(())
}
