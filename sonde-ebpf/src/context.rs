//! Program contexts: the probed task's registers, the cookie, the current task.

use core::ffi::c_void;

use crate::helpers;

/// Register slots (in u64 units) of the kernel's saved user registers.
#[cfg(any(
    sonde_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
))]
mod regs {
    // struct user_pt_regs { u64 regs[31]; u64 sp; u64 pc; u64 pstate; }
    pub const ARGS: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
    /// Go's register ABI (ABIInternal, Go 1.18+ on arm64): integer arguments in R0-R15.
    pub const GO_ARGS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    pub const RET: usize = 0;
    pub const IP: usize = 32;
    pub const SP: usize = 31;
    /// The stack pointer at a return probe minus the one at entry: `ret`
    /// branches to the link register and leaves the stack as it was.
    pub const RETURN_SP_DELTA: u64 = 0;
    /// Go's current goroutine (`g`) under its register ABI: R28.
    pub const G: usize = 28;
    /// Where a function's return address is at its first instruction: the
    /// link register, x30.
    pub const LINK: Option<usize> = Some(30);
}

/// Register slots (in u64 units) of the kernel's saved user registers.
#[cfg(not(any(
    sonde_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
)))]
mod regs {
    // struct pt_regs (x86-64): r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di
    // orig_ax ip cs flags sp ss. System V arguments: di si dx cx r8 r9.
    pub const ARGS: [usize; 6] = [14, 13, 12, 11, 9, 8];
    /// Go's register ABI (ABIInternal, Go 1.17+ on amd64): integer arguments
    /// in ax bx cx di si r8 r9 r10 r11.
    pub const GO_ARGS: [usize; 9] = [10, 5, 11, 14, 13, 9, 8, 7, 6];
    pub const RET: usize = 10;
    pub const IP: usize = 16;
    pub const SP: usize = 19;
    /// The stack pointer at a return probe minus the one at entry: `ret` has
    /// popped the return address the `call` pushed.
    pub const RETURN_SP_DELTA: u64 = 8;
    /// Go's current goroutine (`g`) under its register ABI (Go 1.17+): R14.
    pub const G: usize = 1;
    /// Where a function's return address is at its first instruction: on the
    /// stack, at the stack pointer (`call` pushed it); no register.
    pub const LINK: Option<usize> = None;
}

/// The stack pointer a function had at its entry, from registers saved at its
/// return (what emulated sessions pair an entry and its return by).
#[inline(always)]
pub(crate) fn entry_sp_at_return(regs: *mut c_void) -> u64 {
    read_reg(regs, regs::SP).wrapping_sub(regs::RETURN_SP_DELTA)
}

/// A Go call's frame, the same at the function's entry (past its stack check)
/// and at each of its return instructions: its goroutine (`g`, in R14 on
/// amd64 and R28 on arm64 under Go's register ABI), and the process with how
/// deep the stack pointer is in that goroutine's stack (`tgid << 32 |
/// (g.stack.hi - sp)`: `g` addresses repeat across processes, the depth is
/// unchanged when the runtime copies the stack, and a goroutine stack is at
/// most 1 GiB deep).
///
/// `g.stack` is read from the program's memory, which the kernel may have
/// unmapped for a moment (a page being migrated by compaction or collapsed
/// into a huge page: a BPF read cannot wait for it and fails). The bounds
/// last read for each goroutine are kept in [`GO_STACKS`] and used then, when
/// the stack pointer lies inside them (a goroutine's stack pointer is always
/// in its current stack). `None` when neither gives the bounds.
#[inline(always)]
pub(crate) fn go_frame(regs: *mut c_void) -> Option<(u64, u64)> {
    let g = read_reg(regs, regs::G);
    let sp = sp_of(regs);
    // `g.stack` is `{lo, hi uintptr}`, the first field of `runtime.g`.
    // SAFETY: the helper reads user memory and fails softly.
    let hi = match unsafe { helpers::probe_read_user(g as usize as *const [u64; 2]) } {
        Ok(stack) => {
            let known = GO_STACKS.get(&g).unwrap_or([0, 0]);
            if known[0] != stack[0] || known[1] != stack[1] {
                let _ = GO_STACKS.insert(&g, &stack, 0);
            }
            stack[1]
        }
        Err(_) => {
            let known = GO_STACKS.get(&g).unwrap_or([0, 0]);
            if sp < known[0] || sp >= known[1] {
                return None;
            }
            known[1]
        }
    };
    let depth = hi.wrapping_sub(sp) & 0xffff_ffff;
    Some((g, (helpers::current_pid_tgid() >> 32) << 32 | depth))
}

/// Each goroutine's stack bounds (`g.stack`: lo, hi) as last read, by `g`:
/// what [`ProbeContext::go_frame`] uses when the goroutine's memory cannot be
/// read for a moment. In the object only when a program reads Go frames;
/// goroutines not seen for long age out.
///
/// Kernel: 4.10 (LRU hash).
#[doc(hidden)]
#[link_section = "maps"]
pub static GO_STACKS: crate::maps::LruHashMap<u64, [u64; 2]> = crate::maps::LruHashMap::with_max_entries(8192);

/// The stack pointer in saved registers.
#[inline(always)]
pub(crate) fn sp_of(regs: *mut c_void) -> u64 {
    read_reg(regs, regs::SP)
}

/// A value that can be taken from a 64-bit register.
///
/// Kernel: none (a conversion); register reads work on every kernel sonde supports (5.10+).
pub trait FromRegister: Sized {
    /// Converts the raw register (truncating, as the C ABI does).
    fn from_register(raw: u64) -> Self;
}

macro_rules! from_register_int {
    ($($t:ty),*) => {$(
        impl FromRegister for $t {
            #[inline(always)]
            fn from_register(raw: u64) -> Self { raw as $t }
        }
    )*};
}
from_register_int!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl<T> FromRegister for *const T {
    #[inline(always)]
    fn from_register(raw: u64) -> Self {
        raw as usize as *const T
    }
}

impl<T> FromRegister for *mut T {
    #[inline(always)]
    fn from_register(raw: u64) -> Self {
        raw as usize as *mut T
    }
}

#[inline(always)]
fn read_reg(regs: *mut c_void, slot: usize) -> u64 {
    // SAFETY: `regs` is the kernel's register context (kprobe-type programs may read
    // it at any constant 8-byte aligned offset within the struct). Volatile: the
    // verifier refuses a load from a computed context offset, which is what the
    // optimiser makes of `match n { 0 => arg(0), 1 => arg(1), ... }` otherwise.
    unsafe { core::ptr::read_volatile((regs as *const u64).add(slot)) }
}

/// What every probe context offers: cookie, current task, raw registers.
macro_rules! common_context {
    () => {
        /// Wraps the raw context the kernel passes to the program.
        ///
        /// # Safety
        /// `ctx` must be the program's context argument.
        ///
        /// Kernel: any (no helper).
        #[inline(always)]
        pub unsafe fn new(ctx: *mut c_void) -> Self {
            Self { regs: ctx }
        }

        /// The raw context pointer.
        ///
        /// Kernel: any (no helper).
        #[inline(always)]
        pub fn as_ptr(&self) -> *mut c_void {
            self.regs
        }

        /// The 64-bit cookie user space attached this program with: tells apart
        /// the functions one program is attached to.
        ///
        /// Native on Linux 5.15+ (helper `bpf_get_attach_cookie`); on older kernels
        /// sonde's loader rewrites this call into the constant for each target, so
        /// the same code works on 5.10.
        #[inline(always)]
        pub fn cookie(&self) -> u64 {
            // SAFETY: the context pointer is the program's own.
            unsafe { helpers::get_attach_cookie(self.regs) }
        }

        /// `tgid << 32 | tid` of the task that hit the probe.
        ///
        /// Kernel: Linux 4.2 (`bpf_get_current_pid_tgid`).
        #[inline(always)]
        pub fn pid_tgid(&self) -> u64 {
            helpers::current_pid_tgid()
        }

        /// Process id (thread group id) of the task that hit the probe.
        ///
        /// Kernel: Linux 4.2 (`bpf_get_current_pid_tgid`).
        #[inline(always)]
        pub fn pid(&self) -> u32 {
            (helpers::current_pid_tgid() >> 32) as u32
        }

        /// Thread id of the task that hit the probe.
        ///
        /// Kernel: Linux 4.2 (`bpf_get_current_pid_tgid`).
        #[inline(always)]
        pub fn tid(&self) -> u32 {
            helpers::current_pid_tgid() as u32
        }

        /// Command name of the task that hit the probe (NUL padded).
        ///
        /// Kernel: Linux 4.2 (`bpf_get_current_comm`).
        #[inline(always)]
        pub fn comm(&self) -> [u8; 16] {
            helpers::current_comm()
        }

        /// Instruction pointer at the probe.
        ///
        /// Kernel: any (a register read from the context).
        #[inline(always)]
        pub fn ip(&self) -> u64 {
            read_reg(self.regs, regs::IP)
        }

        /// Stack pointer at the probe.
        ///
        /// Kernel: any (a register read from the context).
        #[inline(always)]
        pub fn sp(&self) -> u64 {
            read_reg(self.regs, regs::SP)
        }

        /// In a Go function (Go 1.17+ register ABI), at its entry past the
        /// stack check or at one of its return instructions (where sonde puts
        /// a Go function's return probes): its goroutine (`g`), and the process
        /// with the depth of the stack pointer in that goroutine's stack
        /// (`tgid << 32 | (g.stack.hi - sp)`). Both are the same at a call's
        /// entry and at its return, whichever
        /// thread runs it and wherever the runtime moved the stack: what pairs
        /// an entry with its return in Go. `None` if `g` cannot be read.
        ///
        /// Kernel: Linux 5.5 (`bpf_probe_read_user`).
        #[inline(always)]
        pub fn go_frame(&self) -> Option<(u64, u64)> {
            go_frame(self.regs)
        }
    };
}

/// Context of a uprobe (function entry): arguments, cookie, current task.
///
/// Kernel: BPF programs on uprobes since Linux 4.3; sonde supports 5.10 and later.
pub struct ProbeContext {
    regs: *mut c_void,
}

impl ProbeContext {
    common_context!();

    /// At a function's first instruction, the address it will return to:
    /// the word at the stack pointer on x86-64 (`call` pushed it), the link
    /// register (x30) on arm64. What a stack walk by frame pointers misses
    /// there (the function has not saved its frame yet). `None` when the
    /// stack cannot be read. Elsewhere in a function, not its return address.
    ///
    /// Kernel: Linux 5.5 (`bpf_probe_read_user`; arm64: any).
    #[inline(always)]
    pub fn entry_return_address(&self) -> Option<u64> {
        match regs::LINK {
            Some(link) => Some(read_reg(self.regs, link)),
            // SAFETY: the helper reads user memory and fails softly.
            None => unsafe { helpers::probe_read_user(self.sp() as usize as *const u64) }.ok(),
        }
    }

    /// The first six register arguments, raw, each read at its constant
    /// offset. To pick one by a run-time index, pick from this array: the
    /// verifier refuses a context load at a computed offset.
    ///
    /// Kernel: any (register reads from the context).
    #[inline(always)]
    pub fn args(&self) -> [u64; 6] {
        [
            read_reg(self.regs, regs::ARGS[0]),
            read_reg(self.regs, regs::ARGS[1]),
            read_reg(self.regs, regs::ARGS[2]),
            read_reg(self.regs, regs::ARGS[3]),
            read_reg(self.regs, regs::ARGS[4]),
            read_reg(self.regs, regs::ARGS[5]),
        ]
    }

    /// Argument `n` (0-based) of the probed function under the platform's C calling
    /// convention (x86-64: rdi, rsi, rdx, rcx, r8, r9; aarch64: x0-x7). `None` past
    /// the register arguments.
    ///
    /// Kernel: any (a register read from the context).
    #[inline(always)]
    pub fn arg<T: FromRegister>(&self, n: usize) -> Option<T> {
        if n < regs::ARGS.len() {
            Some(T::from_register(read_reg(self.regs, regs::ARGS[n])))
        } else {
            None
        }
    }

    /// The first six integer arguments of a Go function under Go's register
    /// ABI (ABIInternal: amd64 rax, rbx, rcx, rdi, rsi, r8; arm64 R0-R5), raw.
    /// A Go string is two of them: its pointer, then its length.
    ///
    /// Kernel: any (register reads from the context); Go 1.17+ (amd64),
    /// 1.18+ (arm64) pass arguments this way.
    #[inline(always)]
    pub fn go_args(&self) -> [u64; 6] {
        [
            read_reg(self.regs, regs::GO_ARGS[0]),
            read_reg(self.regs, regs::GO_ARGS[1]),
            read_reg(self.regs, regs::GO_ARGS[2]),
            read_reg(self.regs, regs::GO_ARGS[3]),
            read_reg(self.regs, regs::GO_ARGS[4]),
            read_reg(self.regs, regs::GO_ARGS[5]),
        ]
    }

    /// Integer argument `n` (0-based) of a Go function under Go's register
    /// ABI (see [`ProbeContext::go_args`]); `None` past the registers (amd64:
    /// 9, arm64: 16).
    ///
    /// ```ignore
    /// #[uprobe]
    /// fn handle(ctx: ProbeContext) -> u32 {
    ///     // func handle(id int, name string): id, then name's pointer and length.
    ///     let id: i64 = ctx.go_arg(0).unwrap_or(0);
    ///     let (ptr, len): (u64, u64) = (ctx.go_arg(1).unwrap_or(0), ctx.go_arg(2).unwrap_or(0));
    ///     0
    /// }
    /// ```
    ///
    /// Kernel: any (a register read from the context).
    #[inline(always)]
    pub fn go_arg<T: FromRegister>(&self, n: usize) -> Option<T> {
        if n < regs::GO_ARGS.len() {
            Some(T::from_register(read_reg(self.regs, regs::GO_ARGS[n])))
        } else {
            None
        }
    }
}

/// Context of a uretprobe (function return): return value, cookie, current task.
///
/// Kernel: BPF programs on uretprobes since Linux 4.3; sonde supports 5.10 and later.
pub struct RetProbeContext {
    regs: *mut c_void,
}

impl RetProbeContext {
    common_context!();

    /// The probed function's return value (x86-64: rax; aarch64: x0).
    ///
    /// Kernel: any (a register read from the context).
    #[inline(always)]
    pub fn ret<T: FromRegister>(&self) -> T {
        T::from_register(read_reg(self.regs, regs::RET))
    }

    /// The stack pointer the function had at its entry (x86-64: the one here
    /// less the popped return address): with the thread, the key that pairs a
    /// call's entry and return, recursion included.
    ///
    /// Kernel: any (a register read from the context).
    #[inline(always)]
    pub fn entry_sp(&self) -> u64 {
        entry_sp_at_return(self.regs)
    }
}

/// The context of a `#[tracepoint]` program: the event's record, laid out as
/// tracefs `events/CATEGORY/EVENT/format` says. Needs Linux 4.7 (reads: 5.5).
///
/// Offsets differ between kernels: user space reads them with
/// `sonde::TracePoint::field_offset` and hands them over in a map.
pub struct TracePointContext {
    ctx: *mut c_void,
}

impl TracePointContext {
    /// Wraps the kernel's context pointer (the macro does this).
    ///
    /// # Safety
    /// `ctx` must be the pointer the kernel passed to a tracepoint program.
    ///
    /// Kernel: any (no helper).
    #[inline(always)]
    pub unsafe fn new(ctx: *mut c_void) -> Self {
        TracePointContext { ctx }
    }

    /// The raw context pointer.
    ///
    /// Kernel: any (no helper).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut c_void {
        self.ctx
    }

    /// Reads a `T` at byte `offset` of the record (`bpf_probe_read_kernel`, 5.5).
    #[inline(always)]
    pub fn read_at<T>(&self, offset: usize) -> Result<T, i64> {
        // SAFETY: the helper checks the address; a bad offset is an error, not a fault.
        unsafe { helpers::probe_read_kernel((self.ctx as *const u8).wrapping_add(offset).cast::<T>()) }
    }

    /// The current task's `tgid << 32 | pid` (the task that hit the tracepoint).
    ///
    /// Kernel: Linux 4.2 (`bpf_get_current_pid_tgid`).
    #[inline(always)]
    pub fn pid_tgid(&self) -> u64 {
        helpers::current_pid_tgid()
    }
}

/// A program's context, for helpers that take it (`bpf_get_stackid`): the
/// context types of `#[uprobe]`, `#[uretprobe]` and `#[tracepoint]` programs.
///
/// Kernel: any (no helper).
pub trait EbpfContext {
    /// The raw context pointer the kernel passed.
    fn as_ptr(&self) -> *mut c_void;
}

impl EbpfContext for ProbeContext {
    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        self.regs
    }
}

impl EbpfContext for RetProbeContext {
    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        self.regs
    }
}

impl EbpfContext for TracePointContext {
    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        self.ctx
    }
}
