//! Every program of the guide (docs/guide.md), in the eBPF crate of a
//! `sonde new` project: one object, one `#[uprobe]`-style function per job.
#![no_std]
#![no_main]

use sonde_ebpf::helpers::ktime_get_ns;
use sonde_ebpf::log::UserStr;
use sonde_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use sonde_ebpf::{map, tracepoint, uprobe, uprobe_session, uretprobe, usdt};
use sonde_ebpf::{ProbeContext, RetProbeContext, SessionContext, TracePointContext, UsdtContext};

#[path = "../../src/event.rs"]
mod event;

use event::Event;

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

// §2: one program, many functions.
#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1); // resized at load

#[uprobe]
fn count(ctx: ProbeContext) -> u32 {
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

// §3: returns.
#[map]
static LAST_RETURN: HashMap<u64, u64> = HashMap::with_max_entries(1024);

#[uretprobe]
fn returns(ctx: RetProbeContext) -> u32 {
    let value: u64 = ctx.ret();
    let cookie = ctx.cookie(); // the same cookie scheme at return
    let _ = LAST_RETURN.insert(&cookie, &value, 0);
    0
}

// §3: entry and return in one program.
#[map]
static TIMED: HashMap<u64, u64> = HashMap::with_max_entries(1024);

#[map]
static TIMED_NS: HashMap<u64, u64> = HashMap::with_max_entries(1024);

#[uprobe_session]
fn timed(ctx: SessionContext) -> u32 {
    if !ctx.is_return() {
        if ctx.arg::<u32>(0) == Some(0) {
            return 1; // not interested: this call's return does not run
        }
        ctx.set_session_cookie(ktime_get_ns());
        return 0;
    }
    TIMED.increment(&ctx.cookie());
    TIMED_NS.add(&ctx.cookie(), ktime_get_ns() - ctx.session_cookie());
    0
}

// §4: typed events through a ring buffer (Linux 5.8).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20);

#[uprobe]
fn record(ctx: ProbeContext) -> u32 {
    if let Some(mut e) = EVENTS.reserve::<Event>(0) {
        e.write(Event {
            ts_ns: ktime_get_ns(),
            pid_tgid: ctx.pid_tgid(),
            cookie: ctx.cookie(),
            arg0: ctx.arg(0).unwrap_or(0),
        });
        e.submit(0);
    }
    0
}

// §6: logging, a string of the traced process included.
#[uprobe]
fn logged(ctx: ProbeContext) -> u32 {
    let text = UserStr(ctx.arg::<u64>(0).unwrap_or(0));
    sonde_ebpf::info!("call {} with {}", ctx.cookie(), text);
    0
}

// §7: a kernel tracepoint beside the uprobes.
/// Where `child_pid` is in the event's record (set by user space: layouts
/// differ between kernels).
#[map]
static CHILD_PID_OFFSET: Array<u32> = Array::with_max_entries(1);

/// Each child forked, with its parent's process id.
#[map]
static CHILDREN: HashMap<u32, u32> = HashMap::with_max_entries(4096);

#[tracepoint(category = "sched", event = "sched_process_fork")]
fn forks(ctx: TracePointContext) -> u32 {
    let parent = (ctx.pid_tgid() >> 32) as u32;
    let offset = CHILD_PID_OFFSET.get(0).unwrap_or(0) as usize;
    if let Ok(child) = ctx.read_at::<u32>(offset & 0xfff) {
        let _ = CHILDREN.insert(&child, &parent, 0);
    }
    0
}

// §8: USDT probes, the arguments as each site's note says.
#[usdt]
fn request(ctx: UsdtContext) -> u32 {
    let e = Event {
        ts_ns: ktime_get_ns(),
        pid_tgid: ctx.probe().pid_tgid(),
        cookie: ctx.cookie(), // kept in the site's spec
        arg0: ctx.arg(0).unwrap_or(0),
    };
    let _ = EVENTS.output(&e, 0);
    0
}
