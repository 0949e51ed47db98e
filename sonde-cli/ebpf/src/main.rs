//! The `sonde` command's eBPF programs: one program per job, the function told
//! apart by its cookie (its index in the resolved list). User space sizes the
//! per-function maps to the number of functions before loading.
#![no_std]
#![no_main]

use sonde_ebpf::helpers::{current_pid_tgid, ktime_get_ns};
use sonde_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use sonde_ebpf::{map, tracepoint, uprobe, uretprobe, ProbeContext, RetProbeContext, TracePointContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

#[path = "../../src/record.rs"]
mod record;

use record::{ByKey, CallRecord, TraceConfig, BUCKETS, BY_ARG, BY_COMM, BY_PID, BY_TID, ENTRY, RETURN, TEXT};

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

/// Following a process tree (`-- COMMAND`, `-p PID --follow`): `FOLLOW[0]` is 1
/// when only the processes in `TRACED` count; `FOLLOW[1]` is the offset of
/// `child_pid` in the `sched_process_fork` record (from tracefs: it differs
/// between kernels).
#[map]
static FOLLOW: Array<u64> = Array::with_max_entries(2);

/// The processes (tgids) of the followed tree: the root, seeded by user space,
/// then every child forked by a member. Threads' ids land here too (a fork
/// record cannot tell), harmlessly: a uprobe hit is keyed by its tgid.
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536);

/// Whether the current process counts: always, unless following a tree.
#[inline(always)]
fn traced() -> bool {
    match FOLLOW.get(0) {
        Some(1) => TRACED.get(&((current_pid_tgid() >> 32) as u32)).is_some(),
        _ => true,
    }
}

/// A member forked: its child joins the tree before the child first runs (the
/// tracepoint fires before the new task is woken).
#[tracepoint(category = "sched", event = "sched_process_fork")]
fn follow_fork(ctx: TracePointContext) -> u32 {
    let parent = (ctx.pid_tgid() >> 32) as u32;
    if TRACED.get(&parent).is_none() {
        return 0;
    }
    let Some(offset) = FOLLOW.get(1) else { return 0 };
    if let Ok(child) = ctx.read_at::<u32>(offset as usize & 0xfff) {
        let _ = TRACED.insert(&child, &1, 0);
    }
    0
}

/// A task of the tree exited: its id leaves (for a process, when its main
/// thread exits), so a reused pid is not counted.
#[tracepoint(category = "sched", event = "sched_process_exit")]
fn follow_exit(ctx: TracePointContext) -> u32 {
    let tid = ctx.pid_tgid() as u32;
    let _ = TRACED.remove(&tid);
    0
}

/// `--by`: `[kind, argument index]` (kind 0: no breakdown).
#[map]
static COUNT_BY: Array<u64> = Array::with_max_entries(2);

/// Calls per (function, key) with `--by`.
#[map]
static BY_KEY: HashMap<ByKey, u64> = HashMap::with_max_entries(BY_KEYS);

/// Calls a full `BY_KEY` had no room for.
#[map]
static BY_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Keys `--by` can hold.
const BY_KEYS: u32 = 16384;

/// The `--by` key of this call, or `None` without a breakdown.
#[inline(always)]
fn by_key(ctx: &ProbeContext, cookie: u64) -> Option<ByKey> {
    let kind = COUNT_BY.get(0).unwrap_or(0);
    if kind == 0 {
        return None;
    }
    let pid_tgid = ctx.pid_tgid();
    // All six read at their fixed offsets, then one picked.
    let args = ctx.args();
    let value = match kind {
        BY_PID => pid_tgid >> 32,
        BY_TID => pid_tgid & 0xffff_ffff,
        BY_ARG => match COUNT_BY.get(1).unwrap_or(0) {
            0 => args[0],
            1 => args[1],
            2 => args[2],
            3 => args[3],
            4 => args[4],
            _ => args[5],
        },
        _ => 0,
    };
    let (comm_lo, comm_hi) = if kind == BY_COMM {
        let c = ctx.comm();
        (
            u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            u64::from_ne_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        )
    } else {
        (0, 0)
    };
    Some(ByKey {
        cookie: cookie as u32,
        kind: kind as u32,
        value,
        comm_lo,
        comm_hi,
    })
}

#[uprobe]
fn count(ctx: ProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    if let Some(key) = by_key(&ctx, ctx.cookie()) {
        if let Some(p) = BY_KEY.get_ptr_mut(&key) {
            // SAFETY: the value the lookup returned.
            unsafe { sonde_ebpf::maps::atomic_add(p, 1) };
        } else if BY_KEY.insert(&key, &1, sonde_ebpf::maps::BPF_NOEXIST).is_err() {
            match BY_KEY.get_ptr_mut(&key) {
                // Another CPU created it meanwhile.
                // SAFETY: the value the lookup returned.
                Some(p) => unsafe { sonde_ebpf::maps::atomic_add(p, 1) },
                None => {
                    if let Some(p) = BY_LOST.get_ptr_mut(0) {
                        // SAFETY: this CPU's counter.
                        unsafe { *p += 1 };
                    }
                }
            }
        }
        return 0;
    }
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

#[uprobe]
fn latency_entry(ctx: ProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    let tid = ctx.pid_tgid() as u32;
    let depth = DEPTH.get(&tid).unwrap_or(0);
    let now = ktime_get_ns();
    let _ = START.insert(&((tid as u64) << 32 | depth as u64), &now, 0);
    let _ = DEPTH.insert(&tid, &(depth + 1), 0);
    0
}

#[uretprobe]
fn latency_return(ctx: RetProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
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

/// `sonde trace`'s settings per function (index: cookie), sized to the job.
#[map]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(1);

/// Writes one call record into the ring buffer: the common fields, then the
/// string at `text` when `want_text` (read straight into the record). Every
/// store is volatile: no `memset` for the verifier to refuse.
#[inline(always)]
fn emit(pid_tgid: u64, cookie: u64, kind: u32, args: [u64; 6], comm: [u8; 16], text: Option<u64>) {
    let Some(mut entry) = EVENTS.reserve::<CallRecord>(0) else {
        if let Some(p) = LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's counter.
            unsafe { *p += 1 };
        }
        return;
    };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` is the reserved record, valid for writes of a whole CallRecord.
    unsafe {
        use core::ptr::{addr_of_mut, write_volatile};
        write_volatile(addr_of_mut!((*r).ts_ns), ktime_get_ns());
        write_volatile(addr_of_mut!((*r).pid_tgid), pid_tgid);
        write_volatile(addr_of_mut!((*r).cookie), cookie);
        let mut i = 0;
        while i < 6 {
            write_volatile(addr_of_mut!((*r).args[i]), args[i]);
            i += 1;
        }
        write_volatile(addr_of_mut!((*r).comm), comm);
        write_volatile(addr_of_mut!((*r).kind), kind);
        let len = match text {
            Some(p) => {
                let dst = core::slice::from_raw_parts_mut(addr_of_mut!((*r).text).cast::<u8>(), TEXT);
                match sonde_ebpf::helpers::probe_read_user_str(p as *const u8, dst) {
                    Ok(n) => n as i32,
                    Err(e) => e as i32,
                }
            }
            None => 0,
        };
        write_volatile(addr_of_mut!((*r).text_len), len);
    }
    entry.submit(0);
}

#[uprobe]
fn trace(ctx: ProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    let cookie = ctx.cookie();
    let args = [
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
        ctx.arg::<u64>(3).unwrap_or(0),
        ctx.arg::<u64>(4).unwrap_or(0),
        ctx.arg::<u64>(5).unwrap_or(0),
    ];
    let text = match TRACE_CONFIG.get(cookie as u32).map_or(0, |c| c.text_arg) {
        1 => Some(args[0]),
        2 => Some(args[1]),
        3 => Some(args[2]),
        4 => Some(args[3]),
        5 => Some(args[4]),
        6 => Some(args[5]),
        _ => None,
    };
    emit(ctx.pid_tgid(), cookie, ENTRY, args, ctx.comm(), text);
    0
}

#[uretprobe]
fn trace_ret(ctx: RetProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    let cookie = ctx.cookie();
    let ret: u64 = ctx.ret();
    let text = match TRACE_CONFIG.get(cookie as u32) {
        Some(c) if c.text_ret == 1 => Some(ret),
        _ => None,
    };
    emit(ctx.pid_tgid(), cookie, RETURN, [ret, 0, 0, 0, 0, 0], ctx.comm(), text);
    0
}

/// `sonde hist`: `[what, linear step]`; `what` 0..=5 is an argument, 6 the
/// return value; step 0 means log2 buckets.
#[map]
static HIST_CONFIG: Array<u64> = Array::with_max_entries(2);

/// `sonde hist`: function `i`'s bucket `b` at `i * BUCKETS + b`.
#[map]
static VALUES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// The bucket of `v`: log2, or `v / step` capped at the last (overflow) bucket.
#[inline(always)]
fn bucket(v: u64) -> u32 {
    let step = HIST_CONFIG.get(1).unwrap_or(0);
    if step == 0 {
        log2(v) + u32::from(v != 0)
    } else {
        let b = v / step;
        if b >= (BUCKETS - 1) as u64 {
            BUCKETS - 1
        } else {
            b as u32
        }
    }
}

#[inline(always)]
fn hist_add(cookie: u64, v: u64) {
    if let Some(p) = VALUES.get_ptr_mut((cookie as u32).wrapping_mul(BUCKETS) + bucket(v)) {
        // SAFETY: this CPU's bucket.
        unsafe { *p += 1 };
    }
}

#[uprobe]
fn hist_arg(ctx: ProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    let args = ctx.args();
    let v = match HIST_CONFIG.get(0).unwrap_or(0) {
        0 => args[0],
        1 => args[1],
        2 => args[2],
        3 => args[3],
        4 => args[4],
        _ => args[5],
    };
    hist_add(ctx.cookie(), v);
    0
}

#[uretprobe]
fn hist_ret(ctx: RetProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    hist_add(ctx.cookie(), ctx.ret());
    0
}
