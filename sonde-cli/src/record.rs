//! What the `sonde` command's eBPF programs and its user space exchange, defined
//! once: the eBPF crate includes this file (`#[path]`), so both sides share the
//! layouts. Plain `#[repr(C)]` data deriving `Pod` (its layout checked at compile
//! time on both sides), `no_std`-clean.

/// `sonde hist`'s buckets per function in `VALUES` (log2 of the value, or
/// linear steps), function `i`'s bucket `b` at `i * BUCKETS + b`.
pub const BUCKETS: u32 = 64;

/// Sub-buckets per power of two in a latency histogram: log-linear buckets
/// (HDR-style), each at most 1/8 of its values wide, so a quantile read at a
/// bucket's middle is within 6.25 % of the true value.
pub const SUB_BITS: u32 = 3;
/// `2^SUB_BITS`.
pub const SUBS: u32 = 1 << SUB_BITS;
/// Latency buckets per function in `HIST` (function `i`'s bucket `b` at
/// `i * LATENCY_BUCKETS + b`): values below `SUBS` ns exactly, then `SUBS`
/// buckets per power of two up to 2^50 ns (13 days; longer calls count in the
/// last).
pub const LATENCY_BUCKETS: u32 = 48 * SUBS;

/// floor(log2(v)), 0 for 0: six shifts, no loop, no clz (BPF has none).
#[inline(always)]
pub fn log2(mut v: u64) -> u32 {
    let mut r = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if v >> shift != 0 {
            v >>= shift;
            r += shift;
        }
    }
    r
}

/// The latency bucket of `ns` (see [`LATENCY_BUCKETS`]).
#[inline(always)]
pub fn latency_bucket(ns: u64) -> u32 {
    if ns < SUBS as u64 {
        return ns as u32;
    }
    let m = log2(ns);
    let sub = (ns >> (m - SUB_BITS)) as u32 & (SUBS - 1);
    let b = (m - SUB_BITS + 1) * SUBS + sub;
    if b < LATENCY_BUCKETS {
        b
    } else {
        LATENCY_BUCKETS - 1
    }
}

/// The values of latency bucket `b`: its lowest and its width (ns).
#[cfg_attr(target_arch = "bpf", allow(dead_code))]
pub const fn latency_bucket_range(b: u32) -> (u64, u64) {
    if b < SUBS {
        return (b as u64, 1);
    }
    let shift = b / SUBS - 1;
    (((SUBS + b % SUBS) as u64) << shift, 1 << shift)
}

/// Arguments a call record carries.
pub const ARGS: usize = 6;

/// `EVENTS`' size in bytes (`sonde trace`'s ring buffer).
pub const EVENTS_BYTES: u32 = 1 << 22;

/// `STACKS`' entries (stacks captured by `trace --stack`, `count --by stack`),
/// and `STACK_IPS`' (the same number: a stack lands in the same bucket of
/// both).
pub const STACK_ENTRIES: u32 = 4096;

/// Set in a stack id when the stack is in `STACK_IPS` (its addresses), not in
/// `STACKS`: the kernel refused it there because that bucket holds the same
/// stack resolved differently (`stacks.rs` says when).
pub const STACK_IPS_TAG: i64 = 1 << 32;

#[cfg(not(target_arch = "bpf"))]
use sonde::Pod;
#[cfg(target_arch = "bpf")]
use sonde_ebpf::Pod;

/// Strings and buffers one call record carries (`--args s,s,b:64` and
/// `--ret s` together).
pub const TEXTS: usize = 4;
/// The most bytes of one string or buffer (`trace --max-bytes`).
pub const TEXT_MAX: usize = 4096;
/// Bytes of each string or buffer unless `--max-bytes` or a `b:LEN` says more.
pub const TEXT_DEFAULT: usize = 256;

/// One call, as `sonde trace` records it in the ring buffer: this header,
/// then `texts` strings or buffers of `Settings::text_size` bytes each (the
/// record is as long as that: written whole into a per-CPU scratch buffer,
/// then copied into the ring with its size).
#[repr(C)]
#[derive(Clone, Copy, Pod)]
pub struct CallRecord {
    /// `bpf_ktime_get_ns` at entry.
    pub ts_ns: u64,
    /// `tgid << 32 | tid`.
    pub pid_tgid: u64,
    /// The function's cookie.
    pub cookie: u64,
    /// The first arguments, raw registers.
    pub args: [u64; ARGS],
    /// The thread's command name.
    pub comm: [u8; 16],
    /// [`ENTRY`] or [`RETURN`] (then `args[0]` is the return value).
    pub kind: u32,
    /// Strings and buffers after the header (0..=[`TEXTS`]).
    pub texts: u32,
    /// The user stack's id in `STACKS` (`trace --stack`), or with
    /// [`STACK_IPS_TAG`] in `STACK_IPS`; negative (the kernel's errno): not
    /// captured.
    pub stack_id: i64,
    /// With the stack at a function's entry: the return address at the stack
    /// pointer less the probed address (`caller - ip`, the same in every
    /// process: see [`caller_frame`]), or 0.
    pub caller_delta: u64,
    /// A Go call (every function of the run is Go's): its goroutine and depth
    /// in the goroutine's stack, the same at entry and return whatever thread
    /// runs it (the pairing key of [`SavedKey`]); zeros elsewhere, where a
    /// call is paired on its thread.
    pub pair: [u64; 2],
    /// Per text: bytes read (a string's NUL included; some kernels count an
    /// empty string as 0); negative: the read failed (an errno), e.g. a bad
    /// pointer or a page not in memory yet.
    pub text_lens: [i32; TEXTS],
    /// Per text: which value it was read from, argument `n` (0..=5) or
    /// [`TEXT_OF_RET`], with [`TEXT_BYTES`] set for a buffer.
    pub text_of: [u32; TEXTS],
}

/// `CallRecord::text_of` of the return value's string (`--ret s`).
pub const TEXT_OF_RET: u32 = 6;
/// `CallRecord::text_of` of a text slot that holds nothing in this record
/// (read at the other end of the call).
pub const TEXT_OF_NONE: u32 = 7;
/// Set in `CallRecord::text_of` when a text holds bytes of a length, not a string.
pub const TEXT_BYTES: u32 = 1 << 8;

/// `CallRecord::kind` of a function entry (written by the program).
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
pub const ENTRY: u32 = 0;
/// `CallRecord::kind` of a function return.
pub const RETURN: u32 = 1;

/// The per-CPU buffer a record is assembled in: its header and the most texts.
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
pub const SCRATCH_BYTES: usize = core::mem::size_of::<CallRecord>() + TEXTS * TEXT_MAX;

/// A `--by` row's key in the program's `BY_KEY` map: the function and the
/// value it is broken down by.
#[repr(C)]
#[derive(Clone, Copy, Pod, PartialEq, Eq, Hash, Debug)]
pub struct ByKey {
    /// The function's cookie.
    pub cookie: u32,
    /// What `value` is: one of the `BY_*` kinds (the first part of the key).
    pub kind: u32,
    /// The first part's pid, tid, argument or stack id (0 for `comm`).
    pub value: u64,
    /// The second part's, with `--by A,B` (`Settings::by_kind2`), else 0.
    pub value2: u64,
    /// The command name's first 8 bytes (`BY_COMM`).
    pub comm_lo: u64,
    /// Its last 8 bytes.
    pub comm_hi: u64,
    /// `--by argN:s`: the string's bytes in native-endian words (words keep
    /// the program's zeroing a few stores, not a `memset` call the verifier
    /// refuses), zero after its NUL (equal strings, equal keys); its part's
    /// `value` is 0 when read, 1 when unreadable.
    pub text: [u64; BY_TEXT / 8],
}

impl ByKey {
    /// `text` as bytes.
    #[cfg_attr(target_arch = "bpf", allow(dead_code))]
    pub fn text_bytes(&self) -> [u8; BY_TEXT] {
        let mut out = [0u8; BY_TEXT];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.text) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }
}

/// Bytes of a `--by argN:s` string kept in a key (longer ones are cut, as
/// bpftrace's default `str()` length).
pub const BY_TEXT: usize = 64;

/// `ByKey::kind` packs two fields: the `BY_*` kind in its low 16 bits and,
/// for `latency --by`, the log2 bucket of the call's duration above them
/// ([`ByKey::pack_kind`], [`ByKey::bucket`]).
pub const BY_BUCKET_SHIFT: u32 = 16;

impl ByKey {
    /// `kind` with a latency bucket (`b` of `[2^b, 2^(b+1))` ns) packed in.
    #[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
    pub const fn pack_kind(kind: u64, bucket: u32) -> u32 {
        (kind as u32 & 0xffff) | (bucket << BY_BUCKET_SHIFT)
    }

    /// The latency bucket packed into `kind` (below [`LATENCY_BUCKETS`]).
    #[cfg_attr(target_arch = "bpf", allow(dead_code))]
    pub const fn bucket(&self) -> u32 {
        self.kind >> BY_BUCKET_SHIFT
    }

    /// The same key without a latency bucket (the key of `BY_STATS`).
    #[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
    pub const fn without_bucket(&self) -> ByKey {
        ByKey {
            kind: self.kind & 0xffff,
            ..*self
        }
    }
}

/// Keys `--by` can hold (`BY_KEY`, `BY_STATS`).
pub const BY_KEYS: u32 = 16384;

/// Exact statistics of a function's (or a `--by` key's) timed calls, per CPU:
/// the sum, the minimum stored inverted (`!min`, so that a zeroed slot means
/// none yet and a larger value is a smaller minimum), the maximum.
#[repr(C)]
#[derive(Clone, Copy, Pod, Default, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Sum of the durations, ns.
    pub sum_ns: u64,
    /// `!min`, 0 when nothing was timed.
    pub min_inv: u64,
    /// The largest duration, ns.
    pub max_ns: u64,
}

/// `--by` kinds (`Settings::by_kind`; `Settings::by_arg` is N for [`BY_ARG`]).
pub const BY_PID: u64 = 1;
/// By thread id.
pub const BY_TID: u64 = 2;
/// By command name.
pub const BY_COMM: u64 = 3;
/// By the value of an argument.
pub const BY_ARG: u64 = 4;
/// By user stack (the id in `STACKS`).
pub const BY_STACK: u64 = 5;
/// By the return value (programs at return).
pub const BY_RET: u64 = 6;
/// By the C string an argument points to (`ByKey::text`).
pub const BY_ARG_STR: u64 = 7;
/// By the cgroup (v2 id) of the calling process.
pub const BY_CGROUP: u64 = 8;

/// Frames kept of a user stack (the eBPF side sizes `STACKS` with it).
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
pub const STACK_DEPTH: usize = 32;

/// How one string or buffer of a call is read.
#[repr(C)]
#[derive(Clone, Copy, Pod, Default, Debug, PartialEq, Eq)]
pub struct TextRead {
    /// The argument whose memory is read: 1..=6, or 0 for none.
    pub arg: u32,
    /// How: one of the `READ_*`.
    pub read: u32,
    /// For a buffer: where its length comes from, one of the `LEN_*`.
    pub len_from: u32,
    /// `LEN_CONST`'s length, or the argument (1..=6) of `LEN_ARG`.
    pub len: u32,
}

/// `sonde trace`'s settings of one function (index: its cookie), read by the
/// program on every hit: one verification serves every function.
#[repr(C)]
#[derive(Clone, Copy, Pod, Default)]
pub struct TraceConfig {
    /// The strings and buffers of arguments, in order (unused: `arg` 0).
    pub reads: [TextRead; TEXTS],
    /// 1 when the return value is read as a C string (it takes a text).
    pub text_ret: u32,
    /// 1 when the user stack is captured (`--stack`); 2 when also the caller
    /// at the stack pointer (a probe at a function's first instruction).
    pub stack: u32,
    /// Texts the entry record carries (up to the last read at entry).
    pub entry_texts: u32,
    /// Texts the return record carries (up to the last read at return).
    pub return_texts: u32,
}

/// `TraceConfig::read`: a C string at entry (`s`).
pub const READ_STR: u32 = 0;
/// A C string at return, its pointer kept from entry (`s@ret`).
pub const READ_STR_AT_RETURN: u32 = 1;
/// A buffer of a length (`b:LEN`), read at entry.
pub const READ_BYTES: u32 = 2;
/// A buffer read at return, its pointer kept from entry (`b:ret`).
pub const READ_BYTES_AT_RETURN: u32 = 3;

/// `TraceConfig::len_from`: a constant (`b:64`).
pub const LEN_CONST: u32 = 0;
/// Argument `TraceConfig::len` (`b:arg2`).
pub const LEN_ARG: u32 = 1;
/// The return value (`b:ret`; negative: empty).
pub const LEN_RET: u32 = 2;

/// Calls in flight whose memory `trace` reads at return (`SAVED`).
pub const SAVED_CALLS: u32 = 16384;

/// The pointers and lengths of a call's texts read at return, kept from
/// entry (text `i`'s at `2i`, `2i + 1`), keyed by thread and stack pointer at entry.
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
pub type Saved = [u64; 2 * TEXTS];

/// The key of a call's [`Saved`] pointers: thread and stack pointer at
/// entry; for Go, goroutine (`g`) and `tgid << 32 | depth` in its stack.
#[repr(C)]
#[derive(Clone, Copy, Pod, PartialEq, Eq, Hash, Debug)]
pub struct SavedKey {
    /// `tgid << 32 | tid` (Go: `g`).
    pub pid_tgid: u64,
    /// The stack pointer at entry (Go: `tgid << 32 | depth`).
    pub sp: u64,
}

/// `--filter`: alternatives (up to [`TERMS`]) of comparisons (up to [`CONDS`]
/// each) one function's hits must pass, compiled per function (index: cookie).
pub const TERMS: usize = 4;
/// Comparisons per alternative.
pub const CONDS: usize = 4;
/// Bytes a string comparison looks at.
pub const FILTER_TEXT: usize = 32;

/// Comparison sources: `SRC_ARG + n` is argument n.
pub const SRC_ARG: u32 = 0;
/// The return value.
pub const SRC_RET: u32 = 6;
/// The process id.
pub const SRC_PID: u32 = 7;
/// The thread id.
pub const SRC_TID: u32 = 8;
/// The command name (a string).
pub const SRC_COMM: u32 = 9;
/// The filter's string argument (`Filter::text_arg`), read as a C string.
pub const SRC_ARG_TEXT: u32 = 10;

/// `==`
pub const OP_EQ: u32 = 0;
/// `!=`
pub const OP_NE: u32 = 1;
/// `<`
pub const OP_LT: u32 = 2;
/// `<=`
pub const OP_LE: u32 = 3;
/// `>`
pub const OP_GT: u32 = 4;
/// `>=`
pub const OP_GE: u32 = 5;

/// `Cond::signed`: the value as an unsigned 64-bit integer (pointers, `x`).
pub const CMP_U64: u32 = 0;
/// As a signed 64-bit integer (`long`, `ssize_t`; untyped arguments and return values).
pub const CMP_I64: u32 = 1;
/// Its low 32 bits, sign-extended (a C `int`: the upper half of the register is undefined).
pub const CMP_I32: u32 = 2;
/// Its low 32 bits (a C `unsigned`).
pub const CMP_U32: u32 = 3;

/// One comparison of a filter.
#[repr(C)]
#[derive(Clone, Copy, Pod)]
pub struct Cond {
    /// What is compared: a `SRC_*`.
    pub source: u32,
    /// An `OP_*`.
    pub op: u32,
    /// The number compared with.
    pub value: u64,
    /// How the compared value is read: one of the `CMP_*`.
    pub signed: u32,
    /// Zero.
    pub _pad: u32,
    /// The string compared with, as native-endian words (its NUL included
    /// unless it is a prefix).
    pub words: [u64; FILTER_TEXT / 8],
    /// The bytes of `words` that count (0xff each): the string compares equal
    /// when `s & mask == words` word by word.
    pub mask: [u64; FILTER_TEXT / 8],
}

/// `Filter::terms` of a filter every hit passes.
pub const FILTER_PASS: u32 = 0xffff_fffe;
/// `Filter::terms` of a filter no hit passes (also what an unwritten, zero
/// filter means while filtering is on: nothing counts before it is written).
pub const FILTER_NEVER: u32 = 0xffff_ffff;

/// One function's filter.
#[repr(C)]
#[derive(Clone, Copy, Pod)]
pub struct Filter {
    /// Alternatives in use (1..=TERMS), or [`FILTER_PASS`], or
    /// [`FILTER_NEVER`] (0, unwritten, is never too).
    pub terms: u32,
    /// The argument read as a string for `SRC_ARG_TEXT` (1..=6), or 0.
    pub text_arg: u32,
    /// Comparisons in use per alternative.
    pub lens: [u32; TERMS],
    /// Alternative `t`'s comparison `c` at `t * CONDS + c`.
    pub conds: [Cond; TERMS * CONDS],
}

impl Filter {
    /// Every hit passes.
    #[cfg_attr(target_arch = "bpf", allow(dead_code))]
    pub fn pass() -> Filter {
        let empty = Cond {
            source: 0,
            op: 0,
            value: 0,
            signed: 0,
            _pad: 0,
            words: [0; FILTER_TEXT / 8],
            mask: [0; FILTER_TEXT / 8],
        };
        Filter {
            terms: FILTER_PASS,
            text_arg: 0,
            lens: [0; TERMS],
            conds: [empty; TERMS * CONDS],
        }
    }

    /// No hit passes.
    #[cfg_attr(target_arch = "bpf", allow(dead_code))]
    pub fn never() -> Filter {
        Filter {
            terms: FILTER_NEVER,
            ..Filter::pass()
        }
    }
}

/// The job's settings, one global the programs read without a map lookup
/// (a `.data.settings` global-data map user space writes before anything
/// runs): a helper call per hit per setting was 100 ns of program time.
#[repr(C)]
#[derive(Clone, Copy, Pod, Default)]
pub struct Settings {
    /// 1: only processes in `TRACED` count (following a tree).
    pub follow: u64,
    /// Offset of `child_pid` in the `sched_process_fork` record.
    pub child_pid_offset: u64,
    /// `--filter`: 0 off, 1 at entry (`FILTERS`), 2 at return (`FILTERS_RET`).
    pub filter: u64,
    /// `--by`: a `BY_*` kind, or 0.
    pub by_kind: u64,
    /// `--by argN`: N.
    pub by_arg: u64,
    /// `--by A,B`: B's `BY_*` kind, or 0.
    pub by_kind2: u64,
    /// `--by A,argN`: N.
    pub by_arg2: u64,
    /// `sonde hist`: 0..=5 an argument, 6 the return value.
    pub hist_what: u64,
    /// `sonde hist --linear`: the bucket width (0: log2).
    pub hist_step: u64,
    /// 1: some functions are USDT probes, whose arguments are read as their
    /// specs say (`USDT_SPECS`, by cookie).
    pub usdt: u64,
    /// `sonde trace`: bytes of each string or buffer (1..=[`TEXT_MAX`]).
    pub text_size: u64,
    /// `--by stack` at functions' first instructions: 1 keeps the caller at
    /// the stack pointer in `ByKey::value2` (`caller - ip`).
    pub by_caller: u64,
    /// 1: only processes whose cgroup v2 id is in `CGROUPS` count (`--cgroup`).
    pub cgroup: u64,
    /// 1: the functions are Go's: arguments are read as Go's register ABI
    /// passes them (amd64 rax, rbx, rcx, rdi, rsi, r8), not C's.
    pub go_abi: u64,
}

/// Cgroup ids `--cgroup` can hold: a cgroup and its descendants.
pub const CGROUP_IDS: u32 = 4096;

/// Stacks taken at a function's first instruction miss its direct caller:
/// the kernel walks frame pointers, and the function has not pushed its own
/// frame yet, so the walk goes from the caller's frame to the caller's caller.
/// The program keeps the return address (at the stack pointer on x86-64, in
/// the link register on arm64) as `caller - ip`;
/// when the caller is in the probed function's own file (the common case),
/// its file offset is frame 0's plus that: the same in every process, with
/// no process maps needed after the process exits. `None` without a delta.
#[cfg_attr(target_arch = "bpf", allow(dead_code))]
pub fn caller_frame(frame0_offset: u64, delta: u64) -> Option<u64> {
    (delta != 0).then(|| frame0_offset.wrapping_add(delta))
}

/// The section (and global-data map) holding [`Settings`].
#[cfg_attr(target_arch = "bpf", allow(dead_code))]
pub const SETTINGS_SECTION: &str = ".data.settings";
