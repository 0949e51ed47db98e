//! eBPF programs for sonde's integration tests.
#![no_std]
#![no_main]

use sonde_ebpf::maps::stack_trace::BPF_F_USER_STACK;
use sonde_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, PerfEventArray, RingBuf, StackTrace};
use sonde_ebpf::{map, uprobe, uprobe_session, uretprobe, usdt, ProbeContext, RetProbeContext, SessionContext, UsdtContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

/// Calls per cookie.
#[map]
static COUNTS: HashMap<u64, u64> = HashMap::with_max_entries(1024);

/// Returns per cookie.
#[map]
static RET_COUNTS: HashMap<u64, u64> = HashMap::with_max_entries(1024);

/// One record per hit, in order.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024);

/// Per-CPU hit counter, slot 0.
#[map]
static HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Values read through global data.
#[map]
static SEEN: Array<u64> = Array::with_max_entries(4);

/// User stacks of the probed calls.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(256);

/// Calls per stack id (LRU: a bounded map for unbounded keys).
#[map]
static BY_STACK: LruHashMap<i64, u64> = LruHashMap::with_max_entries(64);

/// Counts calls by user stack.
#[uprobe]
fn count_stacks(ctx: ProbeContext) -> u32 {
    if let Ok(id) = STACKS.get_stackid(&ctx, BPF_F_USER_STACK) {
        BY_STACK.increment(&id);
    }
    0
}

/// Logs every call: its cookie and first argument, formatted in user space.
#[uprobe]
fn log_calls(ctx: ProbeContext) -> u32 {
    sonde_ebpf::info!("call {} arg {:#x}", ctx.cookie(), ctx.arg::<u64>(0).unwrap_or(0));
    sonde_ebpf::debug!("no arguments at all");
    0
}

/// Logs the C string a call's first argument points to (twice: two string
/// slots in one line), read in the program.
#[uprobe]
fn log_strings(ctx: ProbeContext) -> u32 {
    let s = sonde_ebpf::log::UserStr(ctx.arg::<u64>(0).unwrap_or(0));
    sonde_ebpf::info!("echo {} from {}", s, ctx.cookie());
    sonde_ebpf::info!("{} and {}", s, s);
    sonde_ebpf::info!("bad {}", sonde_ebpf::log::UserStr(8));
    0
}

#[path = "../../src/event.rs"]
mod event;

use event::Event;

/// The same records as `EVENTS`, through per-CPU perf buffers.
#[map]
static PERF_EVENTS: PerfEventArray<Event> = PerfEventArray::new();

/// One `Event` per call into the perf event array.
#[uprobe]
fn perf_calls(ctx: ProbeContext) -> u32 {
    let ev = Event {
        cookie: ctx.cookie(),
        pid_tgid: ctx.pid_tgid(),
        value: ctx.arg::<u64>(0).unwrap_or(u64::MAX),
        kind: 0,
    };
    let _ = PERF_EVENTS.output(&ctx, &ev);
    0
}

/// Read-only global data: the loader turns `.rodata` into a frozen array map.
static SCALE: [u64; 4] = [10, 20, 30, 40];

#[uprobe]
fn count_calls(ctx: ProbeContext) -> u32 {
    COUNTS.increment(&ctx.cookie());
    HITS.add(0, 1);
    0
}

#[uprobe]
fn record_calls(ctx: ProbeContext) -> u32 {
    let cookie = ctx.cookie();
    COUNTS.increment(&cookie);
    let ev = Event {
        cookie,
        pid_tgid: ctx.pid_tgid(),
        value: ctx.arg::<u64>(0).unwrap_or(u64::MAX),
        kind: 0,
    };
    let _ = EVENTS.output(&ev, 0);
    0
}

#[uretprobe]
fn record_returns(ctx: RetProbeContext) -> u32 {
    let cookie = ctx.cookie();
    RET_COUNTS.increment(&cookie);
    if let Some(mut entry) = EVENTS.reserve::<Event>(0) {
        entry.write(Event {
            cookie,
            pid_tgid: ctx.pid_tgid(),
            value: ctx.ret::<u64>(),
            kind: 1,
        });
        entry.submit(0);
    }
    0
}

#[uprobe]
fn read_global_data(ctx: ProbeContext) -> u32 {
    let i = (ctx.cookie() & 3) as usize;
    // A volatile read keeps the access a real load from the `.rodata` map.
    let v = unsafe { core::ptr::read_volatile(&SCALE[i]) };
    if let Some(p) = SEEN.get_ptr_mut(i as u32) {
        unsafe { *p = v };
    }
    0
}

#[uprobe]
fn rejected_by_verifier(_ctx: ProbeContext) -> u32 {
    // Dereferences a map lookup without the null check the verifier demands.
    unsafe {
        let p = COUNTS.get_ptr_mut(&0).unwrap_unchecked();
        *p += 1;
    }
    0
}

/// A `#[usdt]` program: the user's cookie, and the first two arguments as the
/// probe's specs say (into `value` and `kind`).
#[usdt]
fn usdt_args(ctx: UsdtContext) -> u32 {
    let ev = Event {
        cookie: ctx.cookie(),
        pid_tgid: ctx.probe().pid_tgid(),
        value: ctx.arg(0).unwrap_or(u64::MAX),
        kind: ctx.arg(1).unwrap_or(u64::MAX),
    };
    let _ = EVENTS.output(&ev, 0);
    0
}

/// A session program: at entry an event with the argument (kind 0) and the
/// session value `arg + 1_000_000`; at return an event with the return value
/// and that session value as `kind`. A cookie with bit 62 set skips its returns.
#[uprobe_session]
fn session_calls(ctx: SessionContext) -> u32 {
    let cookie = ctx.cookie();
    if !ctx.is_return() {
        let arg = ctx.arg::<u64>(0).unwrap_or(u64::MAX);
        ctx.set_session_cookie(arg + 1_000_000);
        let ev = Event {
            cookie,
            pid_tgid: ctx.pid_tgid(),
            value: arg,
            kind: 0,
        };
        let _ = EVENTS.output(&ev, 0);
        return u32::from(cookie & (1 << 62) != 0);
    }
    let ev = Event {
        cookie,
        pid_tgid: ctx.pid_tgid(),
        value: ctx.ret::<u64>(),
        kind: ctx.session_cookie(),
    };
    let _ = EVENTS.output(&ev, 0);
    0
}
