//! Measures one program attached to N functions of libc (scoped to an idle
//! process) in each tier: attach time and programs loaded.
//! `cargo run --release -p sonde-tests --example attach_cost [N]`

use std::time::Instant;

use sonde::resolve::SymbolTable;
use sonde::{AttachOptions, Object, Target, Tier};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let libc = "/lib/x86_64-linux-gnu/libc.so.6";
    let table = SymbolTable::read(libc.as_ref()).expect("libc symbols");
    let mut seen = std::collections::HashSet::new();
    let targets: Vec<Target> = table
        .functions()
        .iter()
        .filter(|f| f.size > 0 && seen.insert(f.file_offset))
        .take(n)
        .zip(1u64..)
        .map(|(f, c)| Target::symbol(libc, &*f.name).cookie(c))
        .collect();
    let mut idle = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let mut pending = Vec::new();
    println!(
        "{:<10} {:>10} {:>16} {:>14}",
        "tier", "targets", "attach ms", "programs"
    );
    for tier in Tier::ALL {
        let mut object = Object::load(sonde_tests::PROBES).expect("object");
        let probe = object.uprobe("count_calls").expect("program");
        let start = Instant::now();
        let a = probe
            .attach(&targets, &AttachOptions::default().pid(idle.id()).tier(tier))
            .expect("attach");
        let t = start.elapsed();
        println!(
            "{:<10} {:>10} {:>16.2} {:>14}",
            tier,
            targets.len(),
            t.as_secs_f64() * 1e3,
            a.programs().len()
        );
        pending.push(a.detach_in_background());
    }
    let start = Instant::now();
    for p in pending {
        p.wait();
    }
    println!(
        "detach of all tiers (concurrently): {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let _ = idle.kill();
    let _ = idle.wait();
}
