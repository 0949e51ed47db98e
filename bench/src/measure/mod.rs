//! The measurements.

use crate::opts::Opts;
use crate::target::{self, Prologue};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::Instant;

mod command;
mod library;
mod report;

use crate::sites::*;
use command::*;
use library::*;
pub use report::report;

/// Every figure of a run.
#[derive(Serialize)]
pub struct Results {
    pub kernel: String,
    pub quick: bool,
    pub cookies: Vec<CookieRow>,
    pub tiers: Vec<TierRow>,
    pub per_hit: Vec<HitRow>,
    pub resolution: Vec<ResolutionRow>,
    pub events: EventsRow,
    pub cli: CliRow,
    pub agent: Vec<AgentRow>,
    pub sessions: Vec<SessionRow>,
    /// sonde beside libbpf and aya: one record per figure.
    pub figures: Vec<crate::peers::Figure>,
    pub seconds: f64,
}

#[derive(Serialize, Clone, Default)]
pub struct Side {
    pub programs: usize,
    pub load_ms: f64,
    pub verified_insns: u64,
    pub memlock_bytes: u64,
    pub attach_ms: f64,
    pub detach_ms: f64,
    pub detach_extrapolated: bool,
    pub attach_extrapolated: bool,
    pub open_fds: usize,
}

#[derive(Serialize)]
pub struct CookieRow {
    pub n: usize,
    pub cookies: Side,
    pub per_function: Side,
}

#[derive(Serialize)]
pub struct TierRow {
    pub tier: &'static str,
    pub n: usize,
    pub attach_ms: f64,
    pub detach_ms: f64,
    pub extrapolated: bool,
    pub runs: usize,
}

#[derive(Serialize)]
pub struct HitRow {
    pub prologue: &'static str,
    pub unprobed_ns: f64,
    pub cookie_probe_ns: f64,
    pub baked_probe_ns: f64,
    pub cookie_prog_ns: f64,
    pub baked_prog_ns: f64,
}

#[derive(Serialize)]
pub struct ResolutionRow {
    pub binary: String,
    pub file_mb: f64,
    pub symbols: usize,
    pub functions: usize,
    pub cold_ms: f64,
    pub symbols_per_s: f64,
    pub glob: String,
    pub glob_matches: usize,
    pub glob_ms: f64,
}

#[derive(Serialize, Default)]
pub struct EventsRow {
    pub calls: u64,
    pub delivered: u64,
    pub lost: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

#[derive(Serialize, Default)]
pub struct SessionRow {
    /// `native` (6.13+ session link) or `emulated` (entry + return copies).
    pub mode: &'static str,
    pub programs: usize,
    pub links: usize,
    /// Time per call of a `push %rbp` function timed by `sonde latency`'s
    /// program, probe included, minus the unprobed call.
    pub per_call_ns: f64,
    /// Calls the program's histogram counted (must be all of them).
    pub timed: u64,
}

#[derive(Serialize, Default)]
pub struct AgentRow {
    /// What the probes did: `count` alone or with `latency`.
    pub probes: &'static str,
    /// The probed function's first instruction.
    pub prologue: &'static str,
    pub calls: u64,
    pub calls_per_s: f64,
    /// Scrapes of /metrics during the run (one a second).
    pub scrapes: u64,
    /// The agent's user + system CPU time over the run, in % of one CPU.
    pub agent_cpu_percent: f64,
    /// The calls the agent's counter showed at the end (must be `calls`).
    pub counted: u64,
}

#[derive(Serialize, Default)]
pub struct CliRow {
    pub functions: usize,
    pub start_to_counting_ms: f64,
    pub sigint_to_summary_ms: f64,
    pub sigint_to_exit_ms: f64,
    pub counted: u64,
    /// `sonde count ... -- COMMAND` (children followed), start to exit.
    pub command_start_to_exit_ms: f64,
    /// Calls it counted (one per function).
    pub command_counted: u64,
}

/// Runs every section.
pub fn all(opts: &Opts) -> Result<Results> {
    let t = Instant::now();
    let dir = opts.out.join("targets");
    let n_max = if opts.quick { 100 } else { 10_000 };
    let big = target::build(&dir, n_max, Prologue::Mov)?;
    let all = resolve_numbered(&big)?;
    if all.len() != n_max {
        bail!("{} resolved {} of {n_max} functions", big.display(), all.len());
    }
    Ok(Results {
        kernel: sonde::features::kernel_release(),
        quick: opts.quick,
        cookies: cookies(opts, &all)?,
        tiers: tiers(opts, &big)?,
        per_hit: per_hit(opts, &dir)?,
        resolution: resolution(opts)?,
        events: events(opts, &dir)?,
        cli: cli(opts, &dir)?,
        agent: agent(opts, &dir)?,
        sessions: sessions(opts, &dir)?,
        figures: crate::peers::all(opts, &big, &all)?,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Only the figures beside libbpf and aya.
pub fn peers_only(opts: &Opts) -> Result<Vec<crate::peers::Figure>> {
    let dir = opts.out.join("targets");
    let n_max = if opts.quick { 100 } else { 10_000 };
    let big = target::build(&dir, n_max, Prologue::Mov)?;
    let all = resolve_numbered(&big)?;
    crate::peers::all(opts, &big, &all)
}
