//! `sonde trace`: one line per call, through the ring buffer.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use sonde::maps::{PerCpuArray, RingBuf};

use crate::record::CallRecord;
use crate::session::{Common, Session};
use crate::CliError;

#[derive(Serialize)]
struct Line<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    function: &'a str,
    cookie: u64,
    args: &'a [u64],
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the current CLOCK_MONOTONIC time (the clock of
    // bpf_ktime_get_ns) into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `sonde trace`.
pub fn run(common: &Common, nargs: usize) -> Result<i32, CliError> {
    let mut session = Session::start(common, "tracing", &["trace"], |_| Vec::new())?;
    let mut ring = RingBuf::new(session.object().map("EVENTS")?)?;
    let lost = PerCpuArray::<u64>::new(session.object().map("LOST")?)?;
    // Labels indexed by cookie.
    let several = session.several_binaries();
    let mut labels: Vec<String> = Vec::new();
    for f in &session.functions() {
        let i = f.cookie as usize;
        if labels.len() <= i {
            labels.resize(i + 1, String::new());
        }
        labels[i] = crate::report::FunctionId::of(f, several).label;
    }
    let t0 = monotonic_ns();
    let mut out = std::io::BufWriter::new(crate::session::report_output(common)?);
    if !common.json {
        writeln!(
            out,
            "{:>12} {:>7} {:>7} {:<16} FUNCTION(ARGS)",
            "TIME(s)", "PID", "TID", "COMM"
        )?;
    }
    let mut events = 0u64;
    let stop = loop {
        let stop = session.should_stop();
        // Drain what is there (after a stop too, so nothing already sent is lost).
        while let Some(call) = ring.next_as::<CallRecord>() {
            // The program writes whole records: a short one is skipped.
            let Ok(call) = call else { continue };
            events += 1;
            let function = usize::try_from(call.cookie)
                .ok()
                .and_then(|i| labels.get(i))
                .map_or("?", String::as_str);
            let end = call.comm.iter().position(|&b| b == 0).unwrap_or(16);
            let comm = String::from_utf8_lossy(&call.comm[..end]);
            let args = &call.args[..nargs.min(6)];
            if common.json {
                let line = Line {
                    ts_ns: call.ts_ns,
                    pid: (call.pid_tgid >> 32) as u32,
                    tid: call.pid_tgid as u32,
                    comm: &comm,
                    function,
                    cookie: call.cookie,
                    args,
                };
                serde_json::to_writer(&mut out, &line).map_err(|e| CliError::new(e.to_string()))?;
                writeln!(out)?;
            } else {
                let args: Vec<String> = args.iter().map(|a| format!("{a:#x}")).collect();
                writeln!(
                    out,
                    "{:>12.6} {:>7} {:>7} {:<16} {}({})",
                    call.ts_ns.saturating_sub(t0) as f64 / 1e9,
                    call.pid_tgid >> 32,
                    call.pid_tgid as u32,
                    comm,
                    function,
                    args.join(", ")
                )?;
            }
        }
        if let Some(s) = stop {
            break s;
        }
        out.flush()?;
        ring.wait(Some(Duration::from_millis(50)))?;
    };
    out.flush()?;
    drop(out);
    let lost: u64 = lost.get(0)?.iter().sum();
    eprintln!(
        "sonde: {events} events, {lost} lost{}",
        if lost > 0 {
            " (the ring buffer was full: trace fewer functions)"
        } else {
            ""
        }
    );
    session.close();
    Ok(crate::exit_code(stop))
}
