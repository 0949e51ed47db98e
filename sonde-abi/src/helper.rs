//! Kernel helper ids (`enum bpf_func_id`, `include/uapi/linux/bpf.h`), with the
//! kernel that added each.

/// `bpf_map_lookup_elem` (3.19).
pub const MAP_LOOKUP_ELEM: u32 = 1;
/// `bpf_map_update_elem` (3.19).
pub const MAP_UPDATE_ELEM: u32 = 2;
/// `bpf_map_delete_elem` (3.19).
pub const MAP_DELETE_ELEM: u32 = 3;
/// `bpf_probe_read` (4.1).
pub const PROBE_READ: u32 = 4;
/// `bpf_ktime_get_ns` (4.1).
pub const KTIME_GET_NS: u32 = 5;
/// `bpf_get_smp_processor_id` (4.1).
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
/// `bpf_get_current_pid_tgid` (4.2).
pub const GET_CURRENT_PID_TGID: u32 = 14;
/// `bpf_get_current_uid_gid` (4.2).
pub const GET_CURRENT_UID_GID: u32 = 15;
/// `bpf_get_current_cgroup_id` (4.18): the cgroup v2 id (the directory's inode) of the current task.
pub const GET_CURRENT_CGROUP_ID: u32 = 80;
/// `bpf_get_current_comm` (4.2).
pub const GET_CURRENT_COMM: u32 = 16;
/// `bpf_get_stackid` (4.6).
pub const GET_STACKID: u32 = 27;
/// `bpf_perf_event_output` (4.4).
pub const PERF_EVENT_OUTPUT: u32 = 25;
/// `bpf_get_stack` (4.18).
pub const GET_STACK: u32 = 67;
/// `bpf_probe_read_user` (5.5).
pub const PROBE_READ_USER: u32 = 112;
/// `bpf_probe_read_kernel` (5.5).
pub const PROBE_READ_KERNEL: u32 = 113;
/// `bpf_probe_read_user_str` (5.5).
pub const PROBE_READ_USER_STR: u32 = 114;
/// `bpf_ringbuf_output` (5.8).
pub const RINGBUF_OUTPUT: u32 = 130;
/// `bpf_ringbuf_reserve` (5.8).
pub const RINGBUF_RESERVE: u32 = 131;
/// `bpf_ringbuf_submit` (5.8).
pub const RINGBUF_SUBMIT: u32 = 132;
/// `bpf_ringbuf_discard` (5.8).
pub const RINGBUF_DISCARD: u32 = 133;
/// `bpf_get_func_ip` (5.15 for kprobes; uprobes 6.6).
pub const GET_FUNC_IP: u32 = 173;
/// `bpf_get_attach_cookie` (5.15): the cookie the attachment carries. On kernels
/// without it, sonde rewrites each call into a call to a constant-returning
/// subprogram (the `emulated` tier).
pub const GET_ATTACH_COOKIE: u32 = 174;

/// Not a kernel helper: the call a session program makes for
/// `bpf_session_is_return()`. sonde's loader turns it into the kfunc call
/// (6.13+, native session) or into `r0 = 0` / `r0 = 1` in the entry and return
/// copies of an emulated session. Outside the kernel's helper range.
pub const SONDE_SESSION_IS_RETURN: u32 = 0x5e55_0001;
/// Not a kernel helper: the call a session program makes for
/// `bpf_session_cookie()`. sonde's loader turns it into the kfunc call (6.13+,
/// native session) or into `r0 = 0` (no native cookie: the program keeps the
/// per-call value in its own map instead).
pub const SONDE_SESSION_COOKIE: u32 = 0x5e55_0002;
/// Not a kernel helper: whether this copy of a session program serves a Go
/// function (entry, and a probe at each of its return instructions). sonde's
/// loader turns it into `r0 = 1` there and `r0 = 0` everywhere else; the
/// emulated per-call slot is then keyed by goroutine and stack depth, since a
/// goroutine moves between threads and its stack moves in memory.
pub const SONDE_SESSION_GO_FRAMES: u32 = 0x5e55_0003;
