//! The benchmark report (BENCHMARKS.md).

use super::*;
use crate::util::*;

/// The Markdown report.
pub fn report(r: &Results, charts: &[String]) -> String {
    let mut s = format!(
        "# sonde benchmarks\n\nKernel {}, {} run{}, {:.0} s. Medians of several runs; ratios are of figures measured side by side in this run. Command: `sudo -E cargo xtask bench`.\n\n",
        r.kernel,
        if r.quick { "quick (smoke)" } else { "full" },
        "",
        r.seconds
    );
    s.push_str("## 0. sonde beside libbpf and aya\n\n");
    s.push_str("The same eBPF logic on the same targets in the same run (a per-CPU counter indexed by the attach cookie: sonde's `count_all`, the program `sonde count` loads when it counts in every process (no tree followed, no cgroup); `bench/peer/count.bpf.c` compiled by clang for libbpf 1.7 through libbpf-rs, and for aya 0.14). Runs interleaved, each library first in turn (sonde, libbpf, aya; libbpf, aya, sonde; ...); median (min–max). A ratio below 1 means sonde is faster. `–`: the library cannot do it (aya 0.14 has no uprobe_multi; its first attach uses one perf link per function). Per-hit figures are the cost of one call of a function whose first instruction is the one named (checked in the binary), program attached to that process only. Attach figures have a CPU-time companion (this thread's user + system time, from `CLOCK_THREAD_CPUTIME_ID`): the wall time of an attach is mostly one kernel wait (the first uprobe registration after ~one idle grace period waits for an RCU grace period in `rcu_sync_enter`; the figure `kernel wait at the first registration after idle` below is that wait alone), random between 5 and 40 ms here and the same for every library, while the CPU time is the work the library and the kernel did for it. sonde names a binary to the kernel by the descriptor it opened (`/proc/PID/fd/N`: every fact about the binary comes from that one file), libbpf by its path; the kernel's walk of that name is part of sonde's attach CPU time, and the row `libbpf given sonde's /proc/PID/fd/N name of the file` shows libbpf doing that same walk, so the rest of the difference is each library's own work. A wall-time figure counts as a lead when its ratio is ≤ 1.05, or when the CPU-time ratio of the same runs is ≤ 1.05 and sonde's wall median lies inside the peer's min–max.\n\n");
    s.push_str(&crate::peers::table(&r.figures));
    s.push('\n');
    s.push_str("## 1. One program with cookies vs one program per function\n\n");
    s.push_str("| N | programs | load ms | verified insns | memlock | attach ms | detach ms | fds | load ratio | memory ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for row in &r.cookies {
        for (label, side) in [("cookies", &row.cookies), ("per function", &row.per_function)] {
            s.push_str(&format!(
                "| {} {label} | {} | {:.3} | {} | {:.1} KiB | {:.2}{} | {:.1}{} | {} | {} | {} |\n",
                row.n,
                side.programs,
                side.load_ms,
                side.verified_insns,
                side.memlock_bytes as f64 / 1024.0,
                side.attach_ms,
                if side.attach_extrapolated {
                    " (extrapolated)"
                } else {
                    ""
                },
                side.detach_ms,
                if side.detach_extrapolated {
                    " (extrapolated)"
                } else {
                    ""
                },
                side.open_fds,
                if label == "cookies" {
                    String::new()
                } else {
                    ratio(side.load_ms, row.cookies.load_ms)
                },
                if label == "cookies" {
                    String::new()
                } else {
                    ratio(side.memlock_bytes as f64, row.cookies.memlock_bytes as f64)
                },
            ));
        }
    }
    s.push_str("\nPer function = the same counting logic with the function's id baked in as a constant, one program and one perf event per function (how it is done without cookies). Memory = program memlock plus the counters map. At N = 1000 the per-function attach and detach are extrapolated linearly from N = 100 (1,000 perf events take ~100 s to detach).\n\n");
    s.push_str(
        "## 2. Attach and detach per tier\n\n| tier | N | attach ms | detach ms | runs |\n|---|---|---|---|---|\n",
    );
    for t in &r.tiers {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} | {} |\n",
            t.tier,
            t.n,
            t.attach_ms,
            t.detach_ms,
            if t.extrapolated {
                "extrapolated linearly from N=100".to_string()
            } else {
                t.runs.to_string()
            }
        ));
    }
    s.push_str(
        "\n`multi` attach includes reading the binary's symbols cold (cache cleared) and loading the program. Most of it is one kernel wait: the first `BPF_LINK_CREATE` of a uprobe_multi link after a quiet period blocks for about one RCU grace period (strace here: 14.06 ms for 10 functions; a second link right after: 0.027 ms), so the figure is nearly flat in N.\n\n",
    );
    s.push_str("## 3. Per hit (1,000,000 calls of one function)\n\n| first instruction | unprobed ns/call | cookie probe ns/call | baked probe ns/call | cookie program ns | baked program ns |\n|---|---|---|---|---|---|\n");
    for h in &r.per_hit {
        s.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
            h.prologue, h.unprobed_ns, h.cookie_probe_ns, h.baked_probe_ns, h.cookie_prog_ns, h.baked_prog_ns
        ));
    }
    s.push_str("\nEach target function is written in assembly and its entry bytes are checked in the built binary before anything is measured (`push %rbp` = `55`, nop5 = `0f 1f 44 00 00`, mov = `8b 05`): the first instruction decides the cost. The kernel emulates `push %rbp`, turns a 5-byte nop into a call to its uprobe trampoline on 6.18 x86-64, and single-steps `mov` out of line (two traps, expensive in a VM). Program ns = the kernel's own run time per hit (BPF statistics, enabled for the run). The cookie program reads `bpf_get_attach_cookie`; the baked one has the id as a constant; their difference is the cookie's cost.\n\n");
    s.push_str("## 4. Symbol resolution\n\n| binary | MB | symbols | functions | cold ms | symbols/s | glob | matches | glob ms (cached) |\n|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.resolution {
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.1} | {:.1}M | `{}` | {} | {:.2} |\n",
            x.binary,
            x.file_mb,
            x.symbols,
            x.functions,
            x.cold_ms,
            x.symbols_per_s / 1e6,
            x.glob,
            x.glob_matches,
            x.glob_ms
        ));
    }
    let e = &r.events;
    s.push_str(&format!(
        "\n## 5. Events (`sonde trace --json` on a tight loop)\n\n{} calls: {} delivered, {} lost, {:.2} s, {:.0} events/s delivered.\n\n",
        e.calls, e.delivered, e.lost, e.seconds, e.events_per_s
    ));
    let c = &r.cli;
    s.push_str(&format!(
        "## 6. `sonde count` on {} functions\n\nStart to counting: {:.1} ms (target ≤ 50 ms; bpftrace 0.9 s). SIGINT to summary: {:.1} ms (target ≤ 100 ms; bpftrace 108 s); to exit {:.1} ms. Calls counted: {}. \
         `sonde count --json EXE 'f[0-9]*' -- EXE` (its children followed), start to exit: {:.1} ms (target ≤ 120 ms), {} calls counted.\n\n",
        c.functions,
        c.start_to_counting_ms,
        c.sigint_to_summary_ms,
        c.sigint_to_exit_ms,
        c.counted,
        c.command_start_to_exit_ms,
        c.command_counted
    ));
    s.push_str("## 7. `sonde serve`: the agent's own CPU\n\nA target calls one probed function as fast as its probe lets it; the agent serves it and is scraped every second. Target: under 1 % of one CPU at 100k calls/s.\n\n| probes | entry | calls | calls/s | scrapes | agent CPU | counted | verdict |\n|---|---|---|---|---|---|---|---|\n");
    for a in &r.agent {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {:.3} % | {} | {} |\n",
            a.probes,
            a.prologue,
            a.calls,
            a.calls_per_s,
            a.scrapes,
            a.agent_cpu_percent,
            a.counted,
            if a.agent_cpu_percent < 1.0 && a.calls_per_s >= 100_000.0 {
                "under 1 % at ≥ 100k calls/s"
            } else if a.agent_cpu_percent < 1.0 {
                "under 1 % (below 100k calls/s: quick run)"
            } else {
                "OVER 1 %"
            }
        ));
    }
    s.push('\n');
    s.push_str("## 8. Session programs: native vs emulated (`sonde latency`'s program)\n\nOne `push %rbp` function in a loop, timed by the same session program, both on the multi tier: natively (one program on one session link, the start time in the kernel's per-call slot) and emulated (`uprobe_session` disabled: a return copy and an entry copy, the start time in a map keyed by thread and depth). Per call: the probed loop's time per call minus the unprobed one.\n\n| mode | programs | links | per call | calls timed |\n|---|---|---|---|---|\n");
    for x in &r.sessions {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} ns | {} |\n",
            x.mode, x.programs, x.links, x.per_call_ns, x.timed
        ));
    }
    s.push('\n');
    for chart in charts {
        s.push_str(&format!("![{chart}]({chart})\n"));
    }
    s
}
