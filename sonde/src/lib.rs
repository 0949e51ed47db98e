//! # sonde
//!
//! User-space probes built around BPF cookies: **one** eBPF program attached to
//! many functions, each with its own 64-bit cookie, read in the program with
//! `ctx.cookie()`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sonde::{maps::HashMap, AttachOptions, Object, Target};
//!
//! let mut object = Object::load(&std::fs::read("probes.bpf.o").unwrap())?;
//! let attachment = object.uprobe("generic_probe")?.attach(
//!     &[
//!         Target::symbol("/usr/local/bin/app", "function_a").cookie(1),
//!         Target::symbol("/usr/local/bin/app", "function_b").cookie(2),
//!     ],
//!     &AttachOptions::default(),
//! )?;
//! println!("{}", attachment.plan()); // which mechanism ran, and why
//! let calls = HashMap::<u64, u64>::new(object.map("CALLS")?)?;
//! for entry in calls.iter()? {
//!     let (cookie, n) = entry?;
//!     println!("cookie {cookie}: {n} calls");
//! }
//! # Ok(()) }
//! ```
//!
//! The same program and the same call work from Linux 5.10 to today: the library
//! probes the kernel ([`Features`]) and picks the best [`Tier`] — one uprobe_multi
//! link per binary (6.6+), a perf link per target (5.15+), or per-target perf events
//! with the cookie emulated by a program copy (older kernels) — and the
//! [`Attachment`] says which ran.
//!
//! Layers, bottom up; each imports only from the ones below it:
//!
//! | layer | module | what |
//! | --- | --- | --- |
//! | 1 | [`sys`], [`process`] | every syscall (errors name the [`sys::Call`]; faults injectable), `/proc` facts |
//! | 2 | [`object_file`] | the eBPF object parsed: programs, maps, relocations (pure, fuzzed) |
//! | 3 | [`maps`], [`programs`] | maps created when first needed, and read; programs loaded per [`Load`] |
//! | 4 | [`resolve`] | binaries and names to [`ProbeSite`]s: symbols, debug files, libraries, boundaries |
//! | 5 | [`features`] | what the kernel can do, probed lazily from a table |
//! | 6 | [`attach`] | the plan, one file per mechanism, the RAII [`Attachment`] |
//! | 7 | [`job`], [`command`], [`log`] | programs under one plan on a cookie registry that grows and shrinks; a command held before exec; program log lines formatted |
//!
//! What both sides of the kernel boundary agree on (map definitions, helper ids,
//! attach types, instructions, probe kinds) is the `sonde-abi` crate.

#![warn(missing_docs)]

mod arch;
pub mod attach;
pub mod cgroup;
pub mod command;
mod error;
pub mod features;
pub mod inspect;
pub mod job;
pub mod log;
pub mod maps;
mod object;
pub mod object_file;
pub mod process;
pub mod programs;
pub mod resolve;
pub mod sys;

pub use attach::{
    hand_off_all, AttachError, AttachOptions, AttachPlan, Attachment, DetachHandle, Refusal, Scope, SessionMode, Tier,
};
/// A command started held until the probes are attached: [`command::HeldCommand`].
pub use command::HeldCommand as Command;
pub use error::Error;
pub use features::{Feature, Features};
pub use job::{GroupId, Job, JobBuilder, JobError};
pub use maps::Pod;
pub use object::{LoadError, Object};
pub use process::ProcessError;
pub use programs::{
    AttachType, Cookie, Load, LoadedProgram, ProgramError, ProgramInfo, SessionHalf, TracePoint, TracepointError,
    TracepointLink, UProbe,
};
pub use resolve::{FunctionMatch, FunctionSet, Functions, Location, ProbeSite, Target, TargetError};
