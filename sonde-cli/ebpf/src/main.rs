//! The `sonde` command's eBPF programs: one program per job, the function told
//! apart by its cookie (its index in the resolved list). User space sizes the
//! per-function maps to the number of functions before loading.
#![no_std]
#![no_main]

use sonde_ebpf::helpers::ktime_get_ns;
use sonde_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use sonde_ebpf::{map, uprobe, uretprobe, ProbeContext, RetProbeContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

#[path = "../../src/record.rs"]
mod record;

use record::{CallRecord, BUCKETS};

/// Calls per function (`sonde count`), per CPU: no shared cache line per hit.
#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Latency histogram: function `i`'s bucket `b` (`[2^b, 2^(b+1))` ns) at `i * 64 + b`.
#[map]
static HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Largest latency per function, per CPU.
#[map]
static MAX_NS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Nesting depth per thread (recursion and nested probed calls).
#[map]
static DEPTH: HashMap<u32, u32> = HashMap::with_max_entries(16384);

/// Entry time per (thread, depth): key `tid << 32 | depth`.
#[map]
static START: HashMap<u64, u64> = HashMap::with_max_entries(65536);

/// Call records (`sonde trace`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22);

/// Records the ring buffer had no room for, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);


#[uprobe]
fn count(ctx: ProbeContext) -> u32 {
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

#[uprobe]
fn latency_entry(ctx: ProbeContext) -> u32 {
    let tid = ctx.pid_tgid() as u32;
    let depth = DEPTH.get(&tid).unwrap_or(0);
    let now = ktime_get_ns();
    let _ = START.insert(&((tid as u64) << 32 | depth as u64), &now, 0);
    let _ = DEPTH.insert(&tid, &(depth + 1), 0);
    0
}

#[uretprobe]
fn latency_return(ctx: RetProbeContext) -> u32 {
    let now = ktime_get_ns();
    let tid = ctx.pid_tgid() as u32;
    let depth = match DEPTH.get(&tid) {
        Some(d) if d > 0 => d - 1,
        // A return whose entry was not seen (attached mid-call): ignore it.
        _ => return 0,
    };
    let _ = DEPTH.insert(&tid, &depth, 0);
    let key = (tid as u64) << 32 | depth as u64;
    let Some(start) = START.get(&key) else { return 0 };
    let _ = START.remove(&key);
    let delta = now.saturating_sub(start);
    let cookie = ctx.cookie() as u32;
    if let Some(p) = HIST.get_ptr_mut(cookie.wrapping_mul(BUCKETS) + log2(delta)) {
        // SAFETY: this CPU's bucket.
        unsafe { *p += 1 };
    }
    if let Some(p) = MAX_NS.get_ptr_mut(cookie) {
        // SAFETY: this CPU's maximum.
        unsafe {
            if delta > *p {
                *p = delta;
            }
        }
    }
    0
}

/// floor(log2(v)), 0 for 0: six shifts, no loop, no clz (BPF has none).
#[inline(always)]
fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if v >> shift != 0 {
            v >>= shift;
            r += shift;
        }
    }
    r
}

#[uprobe]
fn trace(ctx: ProbeContext) -> u32 {
    match EVENTS.reserve::<CallRecord>(0) {
        Some(mut entry) => {
            entry.write(CallRecord {
                ts_ns: ktime_get_ns(),
                pid_tgid: ctx.pid_tgid(),
                cookie: ctx.cookie(),
                args: [
                    ctx.arg::<u64>(0).unwrap_or(0),
                    ctx.arg::<u64>(1).unwrap_or(0),
                    ctx.arg::<u64>(2).unwrap_or(0),
                    ctx.arg::<u64>(3).unwrap_or(0),
                    ctx.arg::<u64>(4).unwrap_or(0),
                    ctx.arg::<u64>(5).unwrap_or(0),
                ],
                comm: ctx.comm(),
            });
            entry.submit(0);
        }
        None => {
            if let Some(p) = LOST.get_ptr_mut(0) {
                // SAFETY: this CPU's counter.
                unsafe { *p += 1 };
            }
        }
    }
    0
}
