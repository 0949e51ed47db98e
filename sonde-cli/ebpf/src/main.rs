//! The `sonde` command's eBPF programs: one program per job, the function told
//! apart by its cookie (its index in the resolved list). User space sizes the
//! per-function maps to the number of functions before loading.
#![no_std]
#![no_main]

use sonde_ebpf::helpers::{current_cgroup_id, current_pid_tgid, ktime_get_ns};
use sonde_ebpf::maps::stack_trace::BPF_F_USER_STACK;
use sonde_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace};
use sonde_ebpf::{map, tracepoint, uprobe, uprobe_session, uretprobe, ProbeContext, RetProbeContext, SessionContext, TracePointContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

#[path = "../../src/record.rs"]
mod record;

use record::{
    Settings, ByKey, CallRecord, Saved, SCRATCH_BYTES, TEXTS, TEXT_DEFAULT, TEXT_MAX, TEXT_OF_NONE, TEXT_OF_RET, TextRead, SAVED_CALLS, CMP_I32, CMP_I64, CMP_U32, SavedKey, LEN_ARG, LEN_RET, READ_BYTES, READ_BYTES_AT_RETURN, READ_STR, READ_STR_AT_RETURN, TEXT_BYTES, Cond, Filter, Stats, TraceConfig, BUCKETS, BY_KEYS, LATENCY_BUCKETS, latency_bucket, log2, BY_ARG, BY_ARG_STR, BY_CGROUP, BY_COMM, BY_PID, BY_RET, BY_STACK, BY_TEXT, BY_TID, CONDS, ENTRY,
    FILTER_TEXT, STACK_DEPTH, EVENTS_BYTES, STACK_ENTRIES, STACK_IPS_TAG, CGROUP_IDS,
    FILTER_PASS, OP_EQ, OP_GE, OP_GT, OP_LE, OP_LT, OP_NE, RETURN, SRC_ARG_TEXT, SRC_COMM, SRC_PID, SRC_RET, SRC_TID, TERMS,
};

/// Calls per function (`sonde count`; calls entered for `sonde latency`), per
/// CPU: no shared cache line per hit.
#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Latency histogram: function `i`'s log-linear bucket `b` (`record::latency_bucket`)
/// at `i * LATENCY_BUCKETS + b`.
#[map]
static HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// Exact statistics per function (sum, minimum, maximum), per CPU.
#[map]
static STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1);

/// Exact statistics per `latency --by` key (`ByKey` without its bucket), per CPU.
#[map]
static BY_STATS: PerCpuHashMap<ByKey, Stats> = PerCpuHashMap::with_max_entries(BY_KEYS);

/// Call records (`sonde trace`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES);

/// Records the ring buffer had no room for, per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// The job's settings (see `record::Settings`), written by user space before
/// any probe attaches; read with plain loads, no map lookup.
#[link_section = ".data.settings"]
static mut SETTINGS: Settings = Settings {
    follow: 0,
    child_pid_offset: 0,
    filter: 0,
    by_kind: 0,
    by_arg: 0,
    by_kind2: 0,
    by_arg2: 0,
    hist_what: 0,
    hist_step: 0,
    usdt: 0,
    text_size: 0,
    by_caller: 0,
    cgroup: 0,
    go_abi: 0,
};


/// One setting, read from the global (volatile: user space changes it).
macro_rules! setting {
    ($field:ident) => {
        // SAFETY: a plain load from the settings global; programs never write it.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SETTINGS.$field)) }
    };
}

/// Argument `n` of six (`n` past 5: the last), picked with constant indices:
/// the verifier refuses a context or stack load at a computed offset.
#[inline(always)]
fn nth(a: &[u64; 6], n: u64) -> u64 {
    match n {
        0 => a[0],
        1 => a[1],
        2 => a[2],
        3 => a[3],
        4 => a[4],
        _ => a[5],
    }
}

/// Whether this entry hit passes the job's filter; nothing is read (no
/// helper called) unless a filter is on: this runs on every hit.
#[inline(always)]
fn entry_passes(ctx: &ProbeContext) -> bool {
    if setting!(filter) != 1 {
        return true;
    }
    let cookie = ctx.cookie();
    passes(cookie, ctx.pid_tgid(), &ctx.comm(), Some(&call_args(ctx, cookie)), None)
}

/// The cookie and arguments of an entry hit that counts (in the followed tree,
/// passing the filter), else `None`: the start of every program that reads
/// arguments.
#[inline(always)]
fn admitted(ctx: &ProbeContext) -> Option<(u64, [u64; 6])> {
    if !traced() {
        return None;
    }
    let cookie = ctx.cookie();
    let args = call_args(ctx, cookie);
    if setting!(filter) == 1 && !passes(cookie, ctx.pid_tgid(), &ctx.comm(), Some(&args), None) {
        return None;
    }
    Some((cookie, args))
}

/// The first six arguments of this hit: for a USDT probe as its spec says,
/// for a Go function as Go's register ABI passes them, else the C argument
/// registers.
#[inline(always)]
fn call_args(ctx: &ProbeContext, cookie: u64) -> [u64; 6] {
    if setting!(usdt) == 1 {
        if let Some(spec) = sonde_ebpf::usdt::USDT_SPECS.get_ptr_mut(cookie as u32) {
            // SAFETY: the kernel's pointer to this site's spec.
            let spec = unsafe { &*spec };
            if spec.nargs > 0 {
                let regs = ctx.as_ptr();
                let arg = |i: usize| {
                    if (i as u32) < spec.nargs {
                        sonde_ebpf::usdt::read_arg(regs, &spec.args[i]).unwrap_or(0)
                    } else {
                        0
                    }
                };
                return [arg(0), arg(1), arg(2), arg(3), arg(4), arg(5)];
            }
        }
    }
    if setting!(go_abi) == 1 {
        return ctx.go_args();
    }
    ctx.args()
}

/// The processes (tgids) of the followed tree: the root, seeded by user space,
/// then every child forked by a member. Threads' ids land here too (a fork
/// record cannot tell), harmlessly: a uprobe hit is keyed by its tgid.
#[map]
static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536);

/// `--cgroup`: the ids of a cgroup v2 and of its descendants (kept up to date
/// by user space) whose processes count.
#[map]
static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(CGROUP_IDS);

/// Whether the current process counts: always, unless following a tree or
/// scoped to a cgroup.
#[inline(always)]
fn traced() -> bool {
    if setting!(cgroup) == 1 && CGROUPS.get(&current_cgroup_id()).is_none() {
        return false;
    }
    if setting!(follow) == 1 {
        TRACED.get(&((current_pid_tgid() >> 32) as u32)).is_some()
    } else {
        true
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
    let offset = setting!(child_pid_offset);
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

/// `--filter`, compiled per function (index: cookie).
#[map]
static FILTERS: Array<Filter> = Array::with_max_entries(1);

/// A string argument read for a filter, per CPU.
#[map]
static FILTER_SCRATCH: PerCpuArray<[u64; FILTER_TEXT / 8]> = PerCpuArray::with_max_entries(1);

/// Compares `a` with `b` as `op` says (signed when `signed`).
#[inline(always)]
fn compare(a: u64, op: u32, b: u64, mode: u32) -> bool {
    let ord = match mode {
        CMP_I64 => (a as i64).cmp(&(b as i64)),
        CMP_I32 => i64::from(a as u32 as i32).cmp(&(b as i64)),
        CMP_U32 => (a & 0xffff_ffff).cmp(&b),
        _ => a.cmp(&b),
    };
    match op {
        OP_EQ => ord.is_eq(),
        OP_NE => ord.is_ne(),
        OP_LT => ord.is_lt(),
        OP_LE => ord.is_le(),
        OP_GT => ord.is_gt(),
        _ => ord.is_ge(),
    }
}

/// Whether the string in `s` (as words) matches `c` (equal, or its prefix),
/// then `op` (== or !=) applies: four masked word compares, no byte loop.
#[inline(always)]
fn text_matches(s: &[u64; FILTER_TEXT / 8], c: &Cond) -> bool {
    let same = (s[0] & c.mask[0]) == c.words[0]
        && (s[1] & c.mask[1]) == c.words[1]
        && (s[2] & c.mask[2]) == c.words[2]
        && (s[3] & c.mask[3]) == c.words[3];
    if c.op == OP_EQ {
        same
    } else {
        !same
    }
}

/// Whether this hit passes its function's filter. `args` at entry, `ret` at
/// return (`None` where unknown).
#[inline(always)]
fn passes(cookie: u64, pid_tgid: u64, comm: &[u8; 16], args: Option<&[u64; 6]>, ret: Option<u64>) -> bool {
    if setting!(filter) != 1 {
        return true;
    }
    match FILTERS.get_ptr_mut(cookie as u32) {
        // SAFETY: the kernel's pointer to this function's filter.
        Some(f) => evaluate(unsafe { &*f }, pid_tgid, comm, args, ret),
        None => true,
    }
}

/// Evaluates filter `f` on one hit.
#[inline(always)]
fn evaluate(f: &Filter, pid_tgid: u64, comm: &[u8; 16], args: Option<&[u64; 6]>, ret: Option<u64>) -> bool {
    if f.terms == FILTER_PASS {
        return true;
    }
    if f.terms == 0 || f.terms > TERMS as u32 {
        return false;
    }
    // The command name and the string argument (read once if a comparison
    // needs it), as words.
    let (lo, hi) = comm_words(comm);
    let comm_words = [lo, hi, 0, 0];
    let mut text: Option<&[u64; FILTER_TEXT / 8]> = None;
    if let (Some(a), 1..=6) = (args, f.text_arg) {
        if let Some(buf) = FILTER_SCRATCH.get_ptr_mut(0) {
            let p = nth(a, u64::from(f.text_arg - 1));
            // SAFETY: this CPU's scratch buffer; the helper bounds the copy.
            unsafe {
                let dst = core::slice::from_raw_parts_mut(buf.cast::<u8>(), FILTER_TEXT);
                if sonde_ebpf::helpers::probe_read_user_str(p as *const u8, dst).is_err() {
                    (*buf)[0] = 0;
                }
                text = Some(&*buf);
            }
        }
    }
    // Loop-free, every index a constant: older verifiers cannot bound the
    // pointer arithmetic the optimiser makes of loops over these arrays.
    let ctx = Hit {
        pid_tgid,
        comm: &comm_words,
        text,
        args,
        ret,
    };
    let n = f.terms;
    (n >= 1 && term(f, 0, &ctx))
        || (n >= 2 && term(f, 1, &ctx))
        || (n >= 3 && term(f, 2, &ctx))
        || (n >= 4 && term(f, 3, &ctx))
}

/// What a filter looks at on one hit.
struct Hit<'a> {
    pid_tgid: u64,
    comm: &'a [u64; FILTER_TEXT / 8],
    text: Option<&'a [u64; FILTER_TEXT / 8]>,
    args: Option<&'a [u64; 6]>,
    ret: Option<u64>,
}

/// Alternative `t` (a constant after inlining): all of its comparisons hold.
#[inline(always)]
fn term(f: &Filter, t: usize, hit: &Hit) -> bool {
    let n = f.lens[t];
    (n < 1 || holds(&f.conds[t * CONDS], hit))
        && (n < 2 || holds(&f.conds[t * CONDS + 1], hit))
        && (n < 3 || holds(&f.conds[t * CONDS + 2], hit))
        && (n < 4 || holds(&f.conds[t * CONDS + 3], hit))
}

/// One comparison on one hit.
#[inline(always)]
fn holds(cond: &Cond, hit: &Hit) -> bool {
    match cond.source {
        SRC_PID => compare(hit.pid_tgid >> 32, cond.op, cond.value, cond.signed),
        SRC_TID => compare(hit.pid_tgid & 0xffff_ffff, cond.op, cond.value, cond.signed),
        SRC_RET => match hit.ret {
            Some(r) => compare(r, cond.op, cond.value, cond.signed),
            None => false,
        },
        SRC_COMM => text_matches(hit.comm, cond),
        SRC_ARG_TEXT => match hit.text {
            Some(s) => text_matches(s, cond),
            None => false,
        },
        s => match hit.args {
            Some(a) => compare(nth(a, u64::from(s)), cond.op, cond.value, cond.signed),
            None => false,
        },
    }
}

/// `--filter` of the return programs (the return value known), per function.
#[map]
static FILTERS_RET: Array<Filter> = Array::with_max_entries(1);

/// [`passes`] at return, with the return programs' filters.
#[inline(always)]
fn passes_at_return(cookie: u64, pid_tgid: u64, comm: &[u8; 16], ret: u64) -> bool {
    if setting!(filter) != 2 {
        return true;
    }
    match FILTERS_RET.get_ptr_mut(cookie as u32) {
        // SAFETY: the kernel's pointer to this function's filter.
        Some(f) => evaluate(unsafe { &*f }, pid_tgid, comm, None, Some(ret)),
        None => true,
    }
}

/// Calls per (function, key) with `--by`.
#[map]
static BY_KEY: HashMap<ByKey, u64> = HashMap::with_max_entries(BY_KEYS);

/// Calls a full `BY_KEY` had no room for.
#[map]
static BY_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);


/// What a `--by` key is made of at one hit: at entry its arguments, at
/// return its return value (the other zero).
struct ByHit {
    cookie: u64,
    pid_tgid: u64,
    args: [u64; 6],
    ret: u64,
}

/// The `--by` key of this hit, or `None` without a breakdown: one or two
/// parts (`--by comm,pid`), the command name in its own words, a string part
/// in the key's text. `comm` and `stack` are called only when a part needs them.
#[inline(always)]
fn by_key(hit: &ByHit, comm: impl Fn() -> [u8; 16], stack: impl Fn() -> u64) -> Option<ByKey> {
    let kind = setting!(by_kind);
    if kind == 0 {
        return None;
    }
    let kind2 = setting!(by_kind2);
    let (arg, arg2) = (setting!(by_arg), setting!(by_arg2));
    let (comm_lo, comm_hi) = if kind == BY_COMM || kind2 == BY_COMM {
        comm_words(&comm())
    } else {
        (0, 0)
    };
    let mut key = ByKey {
        cookie: hit.cookie as u32,
        kind: kind as u32,
        value: by_part(hit, kind, arg, &stack),
        value2: by_part(hit, kind2, arg2, &stack),
        comm_lo,
        comm_hi,
        // Not zero here: see `zero_words`.
        text: [1; BY_TEXT / 8],
    };
    zero_words(&mut key.text);
    // One string part at most (user space refuses two).
    if kind == BY_ARG_STR {
        key.value = key_text(&mut key.text, nth(&hit.args, arg));
    } else if kind2 == BY_ARG_STR {
        key.value2 = key_text(&mut key.text, nth(&hit.args, arg2));
    }
    Some(key)
}

/// One numeric part of a `--by` key (0 for `comm`, a string and none).
#[inline(always)]
fn by_part(hit: &ByHit, kind: u64, arg: u64, stack: &impl Fn() -> u64) -> u64 {
    match kind {
        BY_PID => hit.pid_tgid >> 32,
        BY_TID => hit.pid_tgid & 0xffff_ffff,
        BY_STACK => stack(),
        BY_ARG => nth(&hit.args, arg),
        BY_RET => hit.ret,
        BY_CGROUP => current_cgroup_id(),
        _ => 0,
    }
}

/// Zeroes words in place with volatile stores, which LLVM cannot fold into
/// a `memset` call (the verifier refuses the one it emits: byte stores at a
/// computed, misaligned stack offset).
#[inline(always)]
fn zero_words<const N: usize>(words: &mut [u64; N]) {
    for word in words.iter_mut() {
        // SAFETY: a word of the array.
        unsafe { core::ptr::write_volatile(word, 0) };
    }
}

/// Reads the C string at `p` into a key's text (zeroed past its NUL, and
/// whole on a failed read): 0 read, 1 unreadable.
#[inline(always)]
fn key_text(text: &mut [u64; BY_TEXT / 8], p: u64) -> u64 {
    // SAFETY: `text`'s BY_TEXT bytes are ours; the helper checks the user address.
    let bytes = unsafe { core::slice::from_raw_parts_mut(text.as_mut_ptr() as *mut u8, BY_TEXT) };
    // SAFETY: see above.
    match unsafe { sonde_ebpf::helpers::probe_read_user_str(p as *const u8, bytes) } {
        Ok(_) => 0,
        Err(_) => 1,
    }
}

/// The return address at a function's entry (at the stack pointer on x86-64,
/// in the link register on arm64) less the probed address (see
/// `record::caller_frame`), 0 when unreadable.
#[inline(always)]
fn caller_delta(ctx: &ProbeContext) -> u64 {
    match ctx.entry_return_address() {
        Some(ret) => ret.wrapping_sub(ctx.ip()),
        None => 0,
    }
}

/// This hit's user stack: its id in `STACKS`, or, when the kernel refused it
/// there, its id in `STACK_IPS` with `STACK_IPS_TAG`; negative (the errno):
/// not captured.
///
/// `STACKS` refuses a stack (`-EEXIST`) whose bucket holds the same addresses
/// resolved differently: the kernel falls back to bare addresses for a whole
/// stack when it cannot take the process's mmap lock at once (another tracer
/// attaching to a file the process maps holds it). `STACK_IPS` stores the
/// addresses alone, the same every time.
#[inline(always)]
fn user_stack(ctx: &ProbeContext) -> i64 {
    match STACKS.get_stackid(ctx, BPF_F_USER_STACK) {
        Ok(id) => id,
        Err(_) => match STACK_IPS.get_stackid(ctx, BPF_F_USER_STACK) {
            Ok(id) => id | STACK_IPS_TAG,
            Err(e) => e,
        },
    }
}

/// [`user_stack`] as a `--by stack` key (`u64::MAX`: not captured).
#[inline(always)]
fn stack_id(ctx: &ProbeContext) -> u64 {
    match user_stack(ctx) {
        id if id >= 0 => id as u64,
        _ => u64::MAX,
    }
}

/// A command name as two native-endian words (map keys, masked compares).
#[inline(always)]
fn comm_words(c: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        u64::from_ne_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
    )
}

/// Adds one to `key`'s count in `BY_KEY` (a full map: counted as lost).
#[inline(always)]
fn by_add(key: &ByKey) {
    if let Some(p) = BY_KEY.get_ptr_mut(key) {
        // SAFETY: the value the lookup returned.
        unsafe { sonde_ebpf::maps::atomic_add(p, 1) };
    } else if BY_KEY.insert(key, &1, sonde_ebpf::maps::BPF_NOEXIST).is_err() {
        match BY_KEY.get_ptr_mut(key) {
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
}

/// Calls per function: the lean program `sonde count` loads without
/// `--filter` or `--by` (each copy the emulated tier loads is verified: the
/// filter's code would cost ~50 ms a copy there).
#[uprobe]
fn count(ctx: ProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

/// Calls per function in every process: `sonde count` (and `sonde serve`)
/// when no process tree is followed and no cgroup scopes the count. No
/// settings read and no map but `COUNTS`: the whole program is the counter
/// (smaller to verify and to load, a few instructions less per hit).
#[uprobe]
fn count_all(ctx: ProbeContext) -> u32 {
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

/// `count` with `--filter` and `--by`.
#[uprobe]
fn count_ex(ctx: ProbeContext) -> u32 {
    if !traced() || !entry_passes(&ctx) {
        return 0;
    }
    let cookie = ctx.cookie();
    let hit = ByHit {
        cookie,
        pid_tgid: ctx.pid_tgid(),
        args: call_args(&ctx, cookie),
        ret: 0,
    };
    if let Some(mut key) = by_key(&hit, || ctx.comm(), || stack_id(&ctx)) {
        if key.kind as u64 == BY_STACK && setting!(by_caller) == 1 {
            key.value2 = caller_delta(&ctx);
        }
        by_add(&key);
        return 0;
    }
    if let Some(p) = COUNTS.get_ptr_mut(cookie as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}

/// `count --by ret`: the same, at return (`--filter` there too).
#[uretprobe]
fn count_ret(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    let (cookie, pid_tgid) = (ctx.cookie(), ctx.pid_tgid());
    if !traced() || (setting!(filter) == 2 && !passes_at_return(cookie, pid_tgid, &ctx.comm(), ret)) {
        return 0;
    }
    let hit = ByHit {
        cookie,
        pid_tgid,
        args: [0; 6],
        ret,
    };
    if let Some(key) = by_key(&hit, || ctx.comm(), || u64::MAX) {
        by_add(&key);
    }
    0
}

/// `sonde latency`: one session program, at entry and at return of each
/// function. Native sessions (6.13+) keep the start time in the kernel's
/// per-call slot on one link; elsewhere sonde runs an entry and a return copy.
#[uprobe_session]
fn latency(ctx: SessionContext) -> u32 {
    latency_session(&ctx, false)
}

/// `latency` with `--filter`.
#[uprobe_session]
fn latency_ex(ctx: SessionContext) -> u32 {
    latency_session(&ctx, true)
}

#[inline(always)]
fn latency_session(ctx: &SessionContext, filtered: bool) -> u32 {
    if !ctx.is_return() {
        // 1: this call's return does not run (not in the tree, filtered out).
        if !traced() || (filtered && !entry_passes(&ctx.probe())) {
            return 1;
        }
        ctx.set_session_cookie(ktime_get_ns());
        // Calls entered: beside the returns timed, the calls whose return the
        // kernel never reported (nested deeper than its 64 return probes).
        if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
            // SAFETY: the kernel's pointer to this CPU's counter.
            unsafe { *p += 1 };
        }
        return 0;
    }
    let now = ktime_get_ns();
    let start = ctx.session_cookie();
    if start == 0 {
        return 0;
    }
    let delta = now.saturating_sub(start);
    let cookie = ctx.cookie() as u32;
    let bucket = latency_bucket(delta);
    // `latency --by`: the bucket goes into the key (kind's upper half), the
    // exact statistics into `BY_STATS` under the key without it.
    let hit = ByHit {
        cookie: u64::from(cookie),
        pid_tgid: ctx.pid_tgid(),
        args: [0; 6],
        ret: ctx.ret(),
    };
    if let Some(mut key) = by_key(&hit, || ctx.probe().comm(), || u64::MAX) {
        key.kind = ByKey::pack_kind(u64::from(key.kind), bucket);
        by_add(&key);
        let plain = key.without_bucket();
        if let Some(p) = BY_STATS.get_ptr_mut(&plain) {
            stats_add(p, delta);
        } else {
            // The first call of this key: its statistics are this call's (a
            // zeroed value would be a memset the verifier refuses on the stack).
            let first = Stats {
                sum_ns: delta,
                min_inv: !delta,
                max_ns: delta,
            };
            if BY_STATS.insert(&plain, &first, sonde_ebpf::maps::BPF_NOEXIST).is_err() {
                if let Some(p) = BY_STATS.get_ptr_mut(&plain) {
                    stats_add(p, delta);
                }
            }
        }
        return 0;
    }
    if let Some(p) = HIST.get_ptr_mut(cookie.wrapping_mul(LATENCY_BUCKETS) + bucket) {
        // SAFETY: this CPU's bucket.
        unsafe { *p += 1 };
    }
    if let Some(p) = STATS.get_ptr_mut(cookie) {
        stats_add(p, delta);
    }
    0
}

/// Adds one duration to this CPU's statistics at `p`.
#[inline(always)]
fn stats_add(p: *mut Stats, delta: u64) {
    // SAFETY: the kernel's pointer to this CPU's value (per-CPU maps: no other
    // writer).
    unsafe {
        (*p).sum_ns += delta;
        if !delta > (*p).min_inv {
            (*p).min_inv = !delta;
        }
        if delta > (*p).max_ns {
            (*p).max_ns = delta;
        }
    }
}


/// User stacks (`trace --stack`, `count --by stack`), each frame as (build id,
/// file offset): named after the process exits.
#[map]
static STACKS: StackTrace = StackTrace::with_build_ids(STACK_ENTRIES, STACK_DEPTH);

/// The stacks `STACKS` refused, as addresses (see `user_stack`): as many
/// buckets as `STACKS`, so a stack's bucket is the same in both.
#[map]
static STACK_IPS: StackTrace = StackTrace::with_depth(STACK_ENTRIES, STACK_DEPTH);

/// `sonde trace`'s settings per function (index: cookie), sized to the job.
#[map]
static TRACE_CONFIG: Array<TraceConfig> = Array::with_max_entries(1);

/// The texts of calls whose memory is read at return (`record::Saved`),
/// from their entry: by thread and stack pointer at entry.
#[map]
static SAVED: LruHashMap<SavedKey, Saved> = LruHashMap::with_max_entries(SAVED_CALLS);

/// Where a record is assembled before it is copied into the ring with its
/// size (a reserved record has a constant one), per CPU.
#[map]
static SCRATCH: PerCpuArray<[u8; SCRATCH_BYTES]> = PerCpuArray::with_max_entries(1);

/// What one text of a record is read from: nothing, a C string at a
/// pointer, or `len` bytes at a pointer; and `CallRecord::text_of`.
#[derive(Clone, Copy)]
enum Text {
    None,
    Str(u64, u32),
    Bytes(u64, u64, u32),
}

/// Bytes of each text (`Settings::text_size`), within 1..=TEXT_MAX.
#[inline(always)]
fn text_size() -> usize {
    let size = setting!(text_size) as usize & (2 * TEXT_MAX - 1);
    if size == 0 || size > TEXT_MAX {
        TEXT_DEFAULT
    } else {
        size
    }
}

/// Reads text `i` (a constant) into the record at `base`, `size` bytes a text.
///
/// SAFETY: `base` is `SCRATCH_BYTES` writable bytes.
#[inline(always)]
unsafe fn put_text(base: *mut u8, i: usize, size: usize, text: Text) {
    use core::ptr::{addr_of_mut, write_volatile};
    let r = base.cast::<CallRecord>();
    let dst = base.add(core::mem::size_of::<CallRecord>() + i * size);
    let (len, of) = match text {
        Text::None => {
            write_volatile(addr_of_mut!((*r).text_lens[i]), 0);
            write_volatile(addr_of_mut!((*r).text_of[i]), TEXT_OF_NONE);
            return;
        }
        Text::Str(p, of) => {
            let dst = core::slice::from_raw_parts_mut(dst, size);
            let len = match sonde_ebpf::helpers::probe_read_user_str(p as *const u8, dst) {
                Ok(n) => n as i32,
                Err(e) => e as i32,
            };
            (len, of)
        }
        Text::Bytes(p, len, of) => {
            // At most a text's room; the mask proves the bound.
            let n = if len > size as u64 { size as u64 } else { len } as usize & (2 * TEXT_MAX - 1);
            let len = if n == 0 || n > TEXT_MAX {
                0
            } else {
                let dst = core::slice::from_raw_parts_mut(dst, n);
                match sonde_ebpf::helpers::probe_read_user_bytes(p as *const u8, dst) {
                    Ok(()) => n as i32,
                    Err(e) => e as i32,
                }
            };
            (len, of | TEXT_BYTES)
        }
    };
    write_volatile(addr_of_mut!((*r).text_lens[i]), len);
    write_volatile(addr_of_mut!((*r).text_of[i]), of);
}

/// Starts a call record in this CPU's scratch buffer: its common fields.
/// The texts follow ([`put_text`], each read and written before the next is
/// looked at: the verifier then sees each slot's paths once, not their
/// product), then [`finish`]. Every store is volatile: no `memset` for the
/// verifier to refuse.
#[inline(always)]
fn begin(pid_tgid: u64, cookie: u64, kind: u32, args: &[u64; 6], comm: [u8; 16], stack: (i64, u64)) -> Option<*mut u8> {
    let base = SCRATCH.get_ptr_mut(0)?.cast::<u8>();
    let r = base.cast::<CallRecord>();
    // SAFETY: `base` is this CPU's scratch record, SCRATCH_BYTES long.
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
        write_volatile(addr_of_mut!((*r).stack_id), stack.0);
        write_volatile(addr_of_mut!((*r).caller_delta), stack.1);
        write_volatile(addr_of_mut!((*r).kind), kind);
    }
    Some(base)
}

/// A Go call's frame when the run's functions are Go's (`Settings::go_abi`),
/// as `[g, frame]`; `[0, 0]` otherwise (no goroutine is at address 0). Read
/// (a user-memory read) only for Go runs. Plain integers, never an `Option`
/// kept across the program: LLVM may read an `Option`'s payload before its
/// tag, which kernels before 5.11 refuse as an uninitialised stack read.
#[inline(always)]
fn go_pair(frame: impl FnOnce() -> Option<(u64, u64)>) -> [u64; 2] {
    if setting!(go_abi) == 1 {
        match frame() {
            Some((g, frame)) => [g, frame],
            None => [0, 0],
        }
    } else {
        [0, 0]
    }
}

/// What pairs a call's entry with its return: thread and entry stack
/// pointer, or a Go call's frame (`ProbeContext::go_frame`).
#[inline(always)]
fn pair_key(go: [u64; 2], pid_tgid: u64, entry_sp: u64) -> SavedKey {
    if go[0] != 0 {
        SavedKey { pid_tgid: go[0], sp: go[1] }
    } else {
        SavedKey {
            pid_tgid,
            sp: entry_sp,
        }
    }
}

/// Writes a Go call's pairing key into the record at `base` (zeros
/// elsewhere: the host pairs those by thread).
#[inline(always)]
fn set_pair(base: *mut u8, go: [u64; 2]) {
    // SAFETY: `base` is this CPU's scratch record.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*base.cast::<CallRecord>()).pair), go) };
}

/// Copies the record at `base` into the ring, up to its first `texts` texts
/// of `size` bytes (the user's settings say how many this end of the call has).
#[inline(always)]
fn finish(base: *mut u8, size: usize, texts: u32) {
    let used = if texts as usize > TEXTS { TEXTS } else { texts as usize };
    // SAFETY: the record's count field.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*base.cast::<CallRecord>()).texts), used as u32) };
    // The mask (all ones) proves the bound to the verifier; the check keeps it.
    let total = (core::mem::size_of::<CallRecord>() + used * size) & (SCRATCH_BYTES.next_power_of_two() - 1);
    if total > SCRATCH_BYTES {
        return;
    }
    // SAFETY: `total` bytes of the scratch record, all written before.
    let record = unsafe { core::slice::from_raw_parts(base, total) };
    if EVENTS.output_bytes(record, 0).is_err() {
        if let Some(p) = LOST.get_ptr_mut(0) {
            // SAFETY: this CPU's counter.
            unsafe { *p += 1 };
        }
    }
}

/// Argument `n` (1..=6) of `args`, 0 for none: explicit matches (the verifier
/// on 5.10 refuses the selection through `nth` on a copied config).
#[inline(always)]
fn arg_n(args: &[u64; 6], n: u32) -> Option<u64> {
    match n {
        1 => Some(args[0]),
        2 => Some(args[1]),
        3 => Some(args[2]),
        4 => Some(args[3]),
        5 => Some(args[4]),
        6 => Some(args[5]),
        _ => None,
    }
}

/// A text's pointer and length at entry (`None`: no argument configured).
#[inline(always)]
fn text_source(read: &TextRead, args: &[u64; 6]) -> Option<(u64, u64)> {
    let p = arg_n(args, read.arg)?;
    let len = match read.len_from {
        LEN_ARG => arg_n(args, read.len).unwrap_or(0),
        _ => u64::from(read.len),
    };
    Some((p, len))
}

/// Whether a text is read at return (its pointer kept from entry).
#[inline(always)]
fn at_return(read: &TextRead) -> bool {
    read.read == READ_STR_AT_RETURN || read.read == READ_BYTES_AT_RETURN
}

/// Keeps text `i`'s pointer and length for its read at return.
#[inline(always)]
fn keep(saved: &mut Saved, i: usize, read: &TextRead, args: &[u64; 6]) {
    if let (true, Some((p, len))) = (at_return(read), text_source(read, args)) {
        saved[2 * i] = p;
        saved[2 * i + 1] = len;
    }
}

/// A text read at entry.
#[inline(always)]
fn entry_text(read: &TextRead, args: &[u64; 6]) -> Text {
    match (text_source(read, args), read.read) {
        (Some((p, _)), READ_STR) => Text::Str(p, read.arg - 1),
        (Some((p, len)), READ_BYTES) => Text::Bytes(p, len, read.arg - 1),
        _ => Text::None,
    }
}

/// Text `i` (a constant) at return: the return value's string, or a text
/// whose pointer was kept from entry.
#[inline(always)]
fn return_text(config: &TraceConfig, i: usize, saved: Option<&Saved>, ret: u64) -> Text {
    if config.text_ret as usize == i + 1 {
        return Text::Str(ret, TEXT_OF_RET);
    }
    let read = &config.reads[i];
    let Some(saved) = saved else {
        return Text::None;
    };
    let (p, len) = (saved[2 * i], saved[2 * i + 1]);
    match read.read {
        READ_STR_AT_RETURN => Text::Str(p, read.arg - 1),
        // `b:ret`: as many bytes as the call returned (none when negative).
        READ_BYTES_AT_RETURN => match read.len_from {
            LEN_RET if (ret as i64) > 0 => Text::Bytes(p, ret, read.arg - 1),
            LEN_RET => Text::Bytes(p, 0, read.arg - 1),
            _ => Text::Bytes(p, len, read.arg - 1),
        },
        _ => Text::None,
    }
}

#[uprobe]
fn trace(ctx: ProbeContext) -> u32 {
    let Some((cookie, args)) = admitted(&ctx) else {
        return 0;
    };
    // Sized to the functions: every cookie has its settings.
    let Some(config) = TRACE_CONFIG.get(cookie as u32) else {
        return 0;
    };
    // A Go call's frame, read once (one user-memory read) for both uses.
    let go = go_pair(|| ctx.go_frame());
    // Texts read at return: their pointers and lengths kept for it.
    if at_return(&config.reads[0]) || at_return(&config.reads[1]) || at_return(&config.reads[2]) || at_return(&config.reads[3]) {
        let mut saved: Saved = [1; 2 * TEXTS];
        zero_words(&mut saved);
        keep(&mut saved, 0, &config.reads[0], &args);
        keep(&mut saved, 1, &config.reads[1], &args);
        keep(&mut saved, 2, &config.reads[2], &args);
        keep(&mut saved, 3, &config.reads[3], &args);
        let key = pair_key(go, ctx.pid_tgid(), ctx.sp());
        let _ = SAVED.insert(&key, &saved, 0);
    }
    let stack = match config.stack {
        0 => (-1, 0),
        1 => (user_stack(&ctx), 0),
        _ => (user_stack(&ctx), caller_delta(&ctx)),
    };
    let Some(base) = begin(ctx.pid_tgid(), cookie, ENTRY, &args, ctx.comm(), stack) else {
        return 0;
    };
    set_pair(base, go);
    let size = text_size();
    // SAFETY: `base` is the scratch record; constant indices.
    unsafe {
        put_text(base, 0, size, entry_text(&config.reads[0], &args));
        put_text(base, 1, size, entry_text(&config.reads[1], &args));
        put_text(base, 2, size, entry_text(&config.reads[2], &args));
        put_text(base, 3, size, entry_text(&config.reads[3], &args));
    }
    finish(base, size, config.entry_texts);
    0
}

#[uretprobe]
fn trace_ret(ctx: RetProbeContext) -> u32 {
    if !traced() {
        return 0;
    }
    let cookie = ctx.cookie();
    let ret: u64 = ctx.ret();
    let pid_tgid = ctx.pid_tgid();
    let Some(config) = TRACE_CONFIG.get(cookie as u32) else {
        return 0;
    };
    // A Go function's returns are probed at its return instructions, where
    // the stack pointer is the entry's: paired by its frame, read once.
    let go = go_pair(|| ctx.go_frame());
    // The memory kept from entry is released whatever the filter says.
    let saved = if at_return(&config.reads[0]) || at_return(&config.reads[1]) || at_return(&config.reads[2]) || at_return(&config.reads[3]) {
        let key = pair_key(go, pid_tgid, ctx.entry_sp());
        let kept = SAVED.get(&key);
        let _ = SAVED.remove(&key);
        kept
    } else {
        None
    };
    if setting!(filter) == 2 && !passes_at_return(cookie, pid_tgid, &ctx.comm(), ret) {
        return 0;
    }
    let Some(base) = begin(pid_tgid, cookie, RETURN, &[ret, 0, 0, 0, 0, 0], ctx.comm(), (-1, 0)) else {
        return 0;
    };
    set_pair(base, go);
    let size = text_size();
    // SAFETY: `base` is the scratch record; constant indices.
    unsafe {
        put_text(base, 0, size, return_text(&config, 0, saved.as_ref(), ret));
        put_text(base, 1, size, return_text(&config, 1, saved.as_ref(), ret));
        put_text(base, 2, size, return_text(&config, 2, saved.as_ref(), ret));
        put_text(base, 3, size, return_text(&config, 3, saved.as_ref(), ret));
    }
    finish(base, size, config.return_texts);
    0
}

/// `sonde hist`: function `i`'s bucket `b` at `i * BUCKETS + b`.
#[map]
static VALUES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

/// The bucket of `v`: log2, or `v / step` capped at the last (overflow) bucket.
#[inline(always)]
fn bucket(v: u64) -> u32 {
    let step = setting!(hist_step);
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
    let Some((cookie, args)) = admitted(&ctx) else {
        return 0;
    };
    hist_add(cookie, nth(&args, setting!(hist_what)));
    0
}

#[uretprobe]
fn hist_ret(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    if !traced() || (setting!(filter) == 2 && !passes_at_return(ctx.cookie(), ctx.pid_tgid(), &ctx.comm(), ret)) {
        return 0;
    }
    hist_add(ctx.cookie(), ret);
    0
}
