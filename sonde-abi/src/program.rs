//! Program types, attach types and link flags (`include/uapi/linux/bpf.h`).

/// `BPF_PROG_TYPE_KPROBE`: uprobes and uretprobes run kprobe-type programs.
pub const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_PERF_EVENT` (5.15): a link from a program to a perf event, with a cookie.
pub const BPF_PERF_EVENT: u32 = 41;
/// `BPF_TRACE_UPROBE_MULTI` (6.6): one link, many offsets, a cookie each.
pub const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `BPF_TRACE_UPROBE_SESSION` (6.13): entry and return in one program and link.
pub const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `BPF_F_UPROBE_MULTI_RETURN`: the multi link fires at function return.
pub const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
/// `BPF_PROG_TYPE_TRACEPOINT` (4.7): a program on a kernel tracepoint, reading
/// the event's record (layout in tracefs `events/CATEGORY/EVENT/format`).
pub const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
/// The section prefix of tracepoint programs: `tracepoint/CATEGORY/EVENT`.
pub const TRACEPOINT_SECTION_PREFIX: &str = "tracepoint";

/// The category and event a section `tracepoint/CATEGORY/EVENT` names.
pub fn tracepoint_of_section(section: &str) -> Option<(&str, &str)> {
    let rest = section.strip_prefix(TRACEPOINT_SECTION_PREFIX)?.strip_prefix('/')?;
    let (category, event) = rest.split_once('/')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (ok(category) && ok(event)).then_some((category, event))
}
