//! The seed example: one program tells three functions apart by cookie, beside the
//! traditional one-program-per-function version.
#![no_std]
#![no_main]

use sonde_ebpf::maps::Array;
use sonde_ebpf::{map, uprobe, ProbeContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

/// Calls per function: slot 0 for A, 1 for B, 2 for C.
#[map]
static CALLS: Array<u64> = Array::with_max_entries(3);

#[inline(always)]
fn handle_function(slot: u32, _ctx: &ProbeContext) -> u32 {
    CALLS.add(slot, 1);
    0
}

/// One program for every function: the cookie says which one fired.
#[uprobe]
fn generic_probe(ctx: ProbeContext) -> u32 {
    match ctx.cookie() {
        1 => handle_function(0, &ctx),
        2 => handle_function(1, &ctx),
        3 => handle_function(2, &ctx),
        _ => 0,
    }
}

/// The traditional way: one program per function, each loaded and verified.
#[uprobe]
fn probe_function_a(ctx: ProbeContext) -> u32 {
    handle_function(0, &ctx)
}

#[uprobe]
fn probe_function_b(ctx: ProbeContext) -> u32 {
    handle_function(1, &ctx)
}

#[uprobe]
fn probe_function_c(ctx: ProbeContext) -> u32 {
    handle_function(2, &ctx)
}
