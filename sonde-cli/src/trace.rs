//! `sonde trace`: one line per call, through the ring buffer; arguments typed
//! per function (strings read in the program), return values matched to their
//! calls.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;
use sonde::maps::{Array, RingBuf};
use sonde::resolve::Pattern;

use crate::args::Common;
use crate::error::CliError;
use crate::probes::{Map, Program};
use crate::record::{CallRecord, TraceConfig, RETURN, TEXT, TEXT_READ};
use crate::session::Session;

/// How an argument or return value is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// `i`: a C `int` (low 32 bits, signed).
    Int,
    /// `u`: a C `unsigned` (low 32 bits).
    Uint,
    /// `l`: a 64-bit signed integer (`long`, `ssize_t`).
    Long,
    /// `x`: 64-bit hexadecimal.
    Hex,
    /// `p`: a pointer (hexadecimal).
    Ptr,
    /// `s`: a NUL-terminated string read from the process (up to 256 bytes).
    Str,
}

impl ArgType {
    fn parse(s: &str) -> Result<ArgType, String> {
        Ok(match s.trim() {
            "i" => ArgType::Int,
            "u" => ArgType::Uint,
            "l" => ArgType::Long,
            "x" => ArgType::Hex,
            "p" => ArgType::Ptr,
            "s" => ArgType::Str,
            other => {
                return Err(format!(
                "`{other}` is not an argument type: i (int), u (unsigned), l (long), x (hex), p (pointer), s (string)"
            ))
            }
        })
    }
}

/// `--args`: types for every function, and for the functions a pattern names.
#[derive(Clone, Debug, Default)]
pub struct ArgSpecs {
    all: Vec<ArgType>,
    by_pattern: Vec<(String, Vec<ArgType>)>,
}

/// A type list (`s,i,x`) or a count (`3`: three hex arguments).
fn parse_types(s: &str) -> Result<Vec<ArgType>, String> {
    if let Ok(n) = s.trim().parse::<usize>() {
        if n > 6 {
            return Err(format!("{n} arguments: at most 6 are read"));
        }
        return Ok(vec![ArgType::Hex; n]);
    }
    let types = s.split(',').map(ArgType::parse).collect::<Result<Vec<_>, _>>()?;
    if types.len() > 6 {
        return Err(format!("{} argument types: at most 6 are read", types.len()));
    }
    if types.iter().filter(|t| **t == ArgType::Str).count() > 1 {
        return Err("one string argument per function (the program reads one string per call)".into());
    }
    Ok(types)
}

impl ArgSpecs {
    /// Parses every `--args` value: `TYPES` (all functions) or `PATTERN=TYPES`.
    pub fn parse(values: &[String]) -> Result<ArgSpecs, CliError> {
        let mut specs = ArgSpecs::default();
        for v in values {
            let err = |e: String| CliError::new(format!("--args {v}: {e}"));
            match v.split_once('=') {
                Some((pattern, types)) => specs
                    .by_pattern
                    .push((pattern.to_string(), parse_types(types).map_err(err)?)),
                None => specs.all = parse_types(v).map_err(err)?,
            }
        }
        Ok(specs)
    }

    /// The types of a function named `raw` (demangled `display`): the last
    /// pattern that matches it, else the types for all.
    fn of(&self, raw: &str, display: &str) -> Vec<ArgType> {
        for (pattern, types) in self.by_pattern.iter().rev() {
            if let Ok(p) = Pattern::new(pattern) {
                if p.matches(raw) || p.matches(display) {
                    return types.clone();
                }
            }
        }
        self.all.clone()
    }
}

/// Parses `--ret [TYPE]`.
pub fn parse_ret(s: &str) -> Result<ArgType, String> {
    ArgType::parse(s)
}

/// A value as JSON: integers as numbers, strings as strings.
#[derive(Serialize, Clone)]
#[serde(untagged)]
enum Value {
    Int(i64),
    Uint(u64),
    Text(String),
}

#[derive(Serialize)]
struct Line<'a> {
    ts_ns: u64,
    pid: u32,
    tid: u32,
    comm: &'a str,
    function: &'a str,
    cookie: u64,
    args: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ret: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ns: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<String>>,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the current CLOCK_MONOTONIC time (the clock of
    // bpf_ktime_get_ns) into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The string a record carries, with invalid UTF-8 bytes escaped (`\xNN`), and
/// whether it may be truncated; `Err` text when the read failed.
fn record_text(call: &CallRecord) -> Result<(String, bool), String> {
    if call.text_len < 0 {
        return Err(format!(
            "<unreadable: {}>",
            std::io::Error::from_raw_os_error(-call.text_len)
        ));
    }
    let n = (call.text_len.max(0) as usize).min(TEXT);
    let bytes = &call.text[..n];
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    // The kernel copies at most TEXT - 1 bytes and the NUL: a full buffer may
    // have cut the string.
    let truncated = n == TEXT;
    Ok((crate::human::bytes(bytes), truncated))
}

/// A value shown as `t` says; `text` is the record's string for `s`.
fn value(t: ArgType, raw: u64, text: Option<&Result<(String, bool), String>>) -> Value {
    match t {
        ArgType::Int => Value::Int(i64::from(raw as u32 as i32)),
        ArgType::Uint => Value::Uint(u64::from(raw as u32)),
        ArgType::Long => Value::Int(raw as i64),
        ArgType::Hex | ArgType::Ptr => Value::Uint(raw),
        ArgType::Str => match text {
            Some(Ok((s, _))) => Value::Text(s.clone()),
            Some(Err(e)) => Value::Text(e.clone()),
            None => Value::Uint(raw),
        },
    }
}

fn human(t: ArgType, v: &Value, truncated: bool) -> String {
    match (t, v) {
        (ArgType::Str, Value::Text(s)) if s.starts_with("<unreadable") => s.clone(),
        (ArgType::Str, Value::Text(s)) => {
            format!("\"{}\"{}", s.replace('"', "\\\""), if truncated { "..." } else { "" })
        }
        (ArgType::Hex | ArgType::Ptr, Value::Uint(n)) => format!("{n:#x}"),
        (_, Value::Int(n)) => n.to_string(),
        (_, Value::Uint(n)) => n.to_string(),
        (_, Value::Text(s)) => s.clone(),
    }
}

/// Per function (index: cookie): its label and argument types.
struct Function {
    label: String,
    types: Vec<ArgType>,
}

/// An entry waiting for its return (with `--ret`).
struct Pending {
    call: CallRecord,
}

/// Runs `sonde trace`.
pub fn run(common: &Common, specs: &ArgSpecs, ret: Option<ArgType>, stack: bool) -> Result<i32, CliError> {
    if common.by.is_some() {
        return Err(CliError::new(
            "--by breaks down `sonde count`; here it has nothing to do",
        ));
    }
    let programs: &[Program] = if ret.is_some() {
        &[Program::Trace, Program::TraceReturn]
    } else {
        &[Program::Trace]
    };
    let mut functions: Vec<Function> = Vec::new();
    let t0 = std::cell::Cell::new(monotonic_ns());
    // A filter on the return value is evaluated at return (then only calls
    // whose return passed are printed); any other at entry.
    let uses_ret = common.filter.as_ref().is_some_and(|f| f.uses_ret());
    if uses_ret && ret.is_none() {
        return Err(CliError::new(
            "--filter on ret needs --ret (the return program evaluates it)",
        ));
    }
    let site = if uses_ret {
        crate::filter::Site::Return
    } else {
        crate::filter::Site::Entry
    };
    let filtered = common.filter.is_some();
    let mut session = Session::start_with(
        common,
        "tracing",
        programs,
        site,
        |n| {
            let mut sizes = vec![(Map::TraceConfig, n.max(1)), (Map::Events, crate::record::EVENTS_BYTES)];
            if stack {
                sizes.push((Map::Stacks, crate::record::STACK_ENTRIES));
            }
            sizes
        },
        |s| {
            // Times are shown from here: just before the command runs.
            t0.set(monotonic_ns());
            // Each function's settings, by cookie, before the command runs.
            let config = Array::<TraceConfig>::new(Map::TraceConfig.of(s.object())?)?;
            let several = s.several_binaries();
            for f in &s.functions() {
                let types = specs.of(&f.function.name, f.set.display_name(f.function));
                let text_arg = types
                    .iter()
                    .position(|t| *t == ArgType::Str)
                    .map_or(0, |i| i as u32 + 1);
                let cookie = f.cookie as u32;
                config.set(
                    cookie,
                    &TraceConfig {
                        text_arg,
                        text_ret: u32::from(ret == Some(ArgType::Str)),
                        stack: u32::from(stack),
                        _pad: 0,
                    },
                )?;
                let i = f.cookie as usize;
                if functions.len() <= i {
                    functions.resize_with(i + 1, || Function {
                        label: String::new(),
                        types: Vec::new(),
                    });
                }
                functions[i] = Function {
                    label: crate::report::FunctionId::of(f, several).label,
                    types,
                };
            }
            Ok(())
        },
    )?;
    let mut ring = RingBuf::new(Map::Events.of(session.object())?)?;
    // Stacks: the map, and the files their build ids name.
    let stacks = if stack {
        let map = sonde::maps::StackTraceMap::new(Map::Stacks.of(session.object())?)?;
        let paths: Vec<std::path::PathBuf> = session.functions().iter().map(|f| f.set.path().to_path_buf()).collect();
        let known = crate::stacks::Stacks::new(paths.iter().map(|p| p.as_path()));
        Some((map, std::cell::RefCell::new(known)))
    } else {
        None
    };
    let lost = Map::Lost.counters(session.object())?;
    let t0 = t0.get();
    let mut out = std::io::BufWriter::new(crate::session::report_output(common)?);
    if !common.json {
        writeln!(
            out,
            "{:>12} {:>7} {:>7} {:<16} FUNCTION(ARGS){}",
            "TIME(s)",
            "PID",
            "TID",
            "COMM",
            if ret.is_some() { " = RETURN (DURATION)" } else { "" }
        )?;
    }
    let mut events = 0u64;
    // Entries waiting for their return, per thread (innermost last).
    let mut pending: HashMap<u32, Vec<Pending>> = HashMap::new();
    let print = |out: &mut dyn Write, entry: &CallRecord, exit: Option<&CallRecord>| -> Result<(), CliError> {
        let f = functions.get(entry.cookie as usize);
        let label = f.map_or("?", |f| f.label.as_str());
        let types = f.map(|f| f.types.as_slice()).unwrap_or(&[]);
        let text = (entry.kind & TEXT_READ != 0).then(|| record_text(entry));
        let truncated = matches!(text, Some(Ok((_, true))));
        let args: Vec<Value> = types
            .iter()
            .zip(entry.args)
            .map(|(t, raw)| value(*t, raw, text.as_ref()))
            .collect();
        let (ret_value, ret_truncated) = match (exit, ret) {
            (Some(x), Some(t)) => {
                let text = (x.kind & TEXT_READ != 0).then(|| record_text(x));
                let truncated = matches!(text, Some(Ok((_, true))));
                (Some(value(t, x.args[0], text.as_ref())), truncated)
            }
            _ => (None, false),
        };
        let duration_ns = exit.map(|x| x.ts_ns.saturating_sub(entry.ts_ns));
        let end = entry.comm.iter().position(|&b| b == 0).unwrap_or(16);
        let comm = String::from_utf8_lossy(&entry.comm[..end]);
        let frames: Option<Vec<String>> = stacks.as_ref().map(|(map, known)| {
            let mut known = known.borrow_mut();
            known.learn_pid((entry.pid_tgid >> 32) as u32);
            match u32::try_from(entry.stack_id).ok().map(|id| map.get_build_ids(id)) {
                Some(Ok(Some(f))) => known.describe(&f),
                _ => vec!["[stack not captured]".to_string()],
            }
        });
        if common.json {
            let line = Line {
                ts_ns: entry.ts_ns,
                pid: (entry.pid_tgid >> 32) as u32,
                tid: entry.pid_tgid as u32,
                comm: &comm,
                function: label,
                cookie: entry.cookie,
                args,
                ret: ret_value,
                duration_ns,
                truncated: truncated || ret_truncated,
                stack: frames,
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| CliError::new(e.to_string()))?;
            writeln!(out)?;
        } else {
            let shown: Vec<String> = types.iter().zip(&args).map(|(t, v)| human(*t, v, truncated)).collect();
            let tail = match (ret, &ret_value, duration_ns) {
                (Some(t), Some(v), Some(d)) => {
                    format!(" = {} ({})", human(t, v, ret_truncated), crate::human::nanos(d))
                }
                (Some(_), _, _) => " = ? (no return seen)".to_string(),
                _ => String::new(),
            };
            writeln!(
                out,
                "{:>12.6} {:>7} {:>7} {:<16} {label}({}){tail}",
                entry.ts_ns.saturating_sub(t0) as f64 / 1e9,
                entry.pid_tgid >> 32,
                entry.pid_tgid as u32,
                crate::human::text(&comm),
                shown.join(", "),
            )?;
            for f in frames.iter().flatten() {
                writeln!(out, "{:>12} {f}", "")?;
            }
        }
        Ok(())
    };
    let stop = loop {
        let stop = session.should_stop();
        // Drain what is there (after a stop too, so nothing already sent is lost).
        while let Some(call) = ring.next_as::<CallRecord>() {
            // The program writes whole records: a short one is skipped.
            let Ok(call) = call else { continue };
            events += 1;
            let tid = call.pid_tgid as u32;
            match (ret.is_some(), call.kind & 0xff != RETURN) {
                (false, _) => print(&mut out, &call, None)?,
                (true, true) => pending.entry(tid).or_default().push(Pending { call }),
                (true, false) => {
                    // The innermost pending entry of this function on this thread.
                    let stack = pending.entry(tid).or_default();
                    match stack.iter().rposition(|p| p.call.cookie == call.cookie) {
                        Some(i) => {
                            let entry = stack.remove(i).call;
                            print(&mut out, &entry, Some(&call))?;
                        }
                        // Left out by an entry filter: nothing to print.
                        None if filtered && site == crate::filter::Site::Entry => {}
                        // Entered before sonde attached: the return alone.
                        None => {
                            let mut alone = call;
                            alone.args = [0; 6];
                            alone.kind &= !TEXT_READ;
                            print(&mut out, &alone, Some(&call))?;
                        }
                    }
                }
            }
        }
        if let Some(s) = stop {
            break s;
        }
        out.flush()?;
        ring.wait(Some(Duration::from_millis(50)))?;
    };
    // Calls still running at the end (with a filter on the return value, the
    // calls whose return did not pass: left out).
    let mut left: Vec<CallRecord> = if site == crate::filter::Site::Return {
        Vec::new()
    } else {
        pending.into_values().flatten().map(|p| p.call).collect()
    };
    left.sort_by_key(|c| c.ts_ns);
    for call in &left {
        print(&mut out, call, None)?;
    }
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
    Ok(stop.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_specs() {
        let specs = ArgSpecs::parse(&["2".into(), "readline=s".into(), "fx_*=s,i".into()]).expect("specs");
        assert_eq!(specs.of("other", "other"), vec![ArgType::Hex; 2]);
        assert_eq!(specs.of("readline", "readline"), vec![ArgType::Str]);
        assert_eq!(specs.of("fx_echo", "fx_echo"), vec![ArgType::Str, ArgType::Int]);
        assert!(ArgSpecs::parse(&["s,s".into()]).is_err());
        assert!(ArgSpecs::parse(&["7".into()]).is_err());
        assert!(ArgSpecs::parse(&["q".into()]).is_err());
    }

    #[test]
    fn escapes_invalid_utf8() {
        assert_eq!(crate::human::bytes(b"ok \xff\xfe end"), "ok \\xff\\xfe end");
        assert_eq!(crate::human::bytes("é".as_bytes()), "é");
    }
}
