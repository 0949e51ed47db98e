//! `sonde trace`: one line per call, through the ring buffer; arguments typed
//! per function (strings read in the program), return values matched to their
//! calls.
//!
//! | piece | file |
//! | --- | --- |
//! | `--args`, `--ret`: types per function | `args` |
//! | a call as a line or a JSON object | `print` |
//! | the run: settings per function, entries paired with returns | here |

mod args;
mod print;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use sonde::maps::{Array, RingBuf};

pub use args::{parse_ret, ArgSpecs, ArgType, Len};
use print::{Call, Function, Printer};

use crate::args::Common;
use crate::error::CliError;
use crate::filter::Site;
use crate::probes::{Map, Program};
use crate::record::{CallRecord, TextRead, TraceConfig, RETURN, TEXTS};
use crate::report::SessionFunction;
use crate::session::Session;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the current CLOCK_MONOTONIC time (the clock of
    // bpf_ktime_get_ns) into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where `--filter` is evaluated: at return when it reads the return value
/// (then only calls whose return passed are printed), else at entry.
fn filter_site(common: &Common, ret: Option<ArgType>) -> Result<Site, CliError> {
    let uses_ret = common.filter.as_ref().is_some_and(|f| f.uses_ret());
    match (uses_ret, ret) {
        (true, None) => Err(CliError::new(
            "--filter on ret needs --ret (the return program evaluates it)",
        )),
        (true, Some(_)) => Ok(Site::Return),
        (false, _) => Ok(Site::Entry),
    }
}

/// Attaches, writes each function's settings (which argument is a string,
/// stacks) by cookie, and returns the session with each function's label and
/// types and the time the command started.
fn start(
    common: &Common,
    specs: &ArgSpecs,
    ret: Option<ArgType>,
    stack: bool,
    site: Site,
    text_size: usize,
) -> Result<(Session, Vec<Function>, u64), CliError> {
    // The return program runs for `--ret` and for memory read at return.
    let programs: &[Program] = if ret.is_some() || specs.any_at_return() {
        &[Program::Trace, Program::TraceReturn]
    } else {
        &[Program::Trace]
    };
    let functions = RefCell::new(Vec::<Function>::new());
    let t0 = Cell::new(monotonic_ns());
    let sizes = |n: u32| {
        let mut sizes = vec![(Map::TraceConfig, n.max(1)), (Map::Events, crate::record::EVENTS_BYTES)];
        if stack {
            sizes.push((Map::Stacks, crate::record::STACK_ENTRIES));
            sizes.push((Map::StackIps, crate::record::STACK_ENTRIES));
        }
        if specs.any_at_return() {
            sizes.push((Map::Saved, crate::record::SAVED_CALLS));
        }
        sizes
    };
    // `--filter` compares numbers as `--args` (else a USDT note) types them.
    let declared = |f: &SessionFunction<'_>| {
        let mut declared = crate::session::usdt_types(f);
        for (d, t) in declared
            .args
            .iter_mut()
            .zip(specs.of(&f.function.name, f.set.display_name(f.function)))
        {
            *d = t.value_type().or(*d);
        }
        declared.ret = ret.and_then(ArgType::value_type);
        declared
    };
    let session = Session::start_typed(common, "tracing", programs, site, sizes, &declared, |s| {
        crate::session::update_settings(s.object(), |c| c.text_size = text_size as u64)?;
        // Times are shown from here: just before the command runs.
        t0.set(monotonic_ns());
        let config = Array::<TraceConfig>::new(Map::TraceConfig.of(s.object())?)?;
        let several = s.several_binaries();
        let mut functions = functions.borrow_mut();
        for f in &s.functions() {
            let usdt = crate::session::usdt_types(f);
            // Untyped arguments of a USDT probe: signed or not as its note says.
            let types: Vec<ArgType> = specs
                .of(&f.function.name, f.set.display_name(f.function))
                .into_iter()
                .enumerate()
                .map(|(i, t)| match (t, usdt.args.get(i).copied().flatten()) {
                    (ArgType::Raw, Some(crate::filter::ValueType::I64)) => ArgType::Long,
                    (ArgType::Raw, _) => ArgType::Hex,
                    (t, _) => t,
                })
                .collect();
            // At a function's first instruction its caller is at the stack
            // pointer (a USDT probe sits inside a function).
            let stack = match (stack, f.function.usdt.is_some()) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => 2,
            };
            let settings = settings(&types, ret, stack)
                .map_err(|e| CliError::new(format!("{}: {e}", crate::human::text(f.set.display_name(f.function)))))?;
            config.set(f.cookie as u32, &settings)?;
            let i = f.cookie as usize;
            if functions.len() <= i {
                functions.resize_with(i + 1, Function::default);
            }
            functions[i] = Function {
                label: crate::report::FunctionId::of(f, several).label,
                types,
            };
        }
        Ok(())
    })?;
    Ok((session, functions.into_inner(), t0.get()))
}

/// A function's settings for the program: which arguments' memory is read,
/// how and when (in argument order, one text each); the return value's
/// string (the next text); the stack.
fn settings(types: &[ArgType], ret: Option<ArgType>, stack: u32) -> Result<TraceConfig, String> {
    use crate::record::{LEN_ARG, LEN_CONST, LEN_RET, READ_BYTES, READ_BYTES_AT_RETURN, READ_STR, READ_STR_AT_RETURN};
    let mut config = TraceConfig {
        stack,
        ..TraceConfig::default()
    };
    let mut texts = 0;
    for (i, t) in types.iter().enumerate().filter(|(_, t)| t.reads_memory()) {
        let (read, len_from, len) = match t {
            ArgType::StrAtReturn => (READ_STR_AT_RETURN, LEN_CONST, 0),
            ArgType::Bytes(Len::Const(n)) => (READ_BYTES, LEN_CONST, *n),
            ArgType::Bytes(Len::Arg(n)) => (READ_BYTES, LEN_ARG, u32::from(*n) + 1),
            ArgType::Bytes(Len::Ret) => (READ_BYTES_AT_RETURN, LEN_RET, 0),
            _ => (READ_STR, LEN_CONST, 0),
        };
        let slot = config
            .reads
            .get_mut(texts)
            .ok_or_else(|| format!("more than {TEXTS} strings or buffers per call"))?;
        *slot = TextRead {
            arg: i as u32 + 1,
            read,
            len_from,
            len,
        };
        texts += 1;
    }
    if ret == Some(ArgType::Str) {
        if texts >= TEXTS {
            return Err(format!(
                "--ret s and {texts} strings or buffers: a call carries at most {TEXTS}"
            ));
        }
        config.text_ret = texts as u32 + 1;
    }
    // Each end's record runs up to its last text.
    let last = |at_return: bool| {
        (0..TEXTS)
            .filter(|&i| {
                let read = &config.reads[i];
                let returns = read.read == READ_STR_AT_RETURN || read.read == READ_BYTES_AT_RETURN;
                (read.arg != 0 && returns == at_return) || (at_return && config.text_ret as usize == i + 1)
            })
            .map(|i| i as u32 + 1)
            .max()
            .unwrap_or(0)
    };
    config.entry_texts = last(false);
    config.return_texts = last(true);
    Ok(config)
}

/// Entries waiting for their return, per thread (innermost last).
struct Pairing {
    /// Returns are awaited (`--ret`).
    returns: bool,
    /// An entry filter left calls out: a return without its entry is one of them.
    entry_filtered: bool,
    /// Entries waiting, by thread (`(tid, MAX)`), or for Go by goroutine frame.
    pending: HashMap<(u64, u64), Vec<Call>>,
}

impl Pairing {
    /// What to print for one record: a call without return (no `--ret`), an
    /// entry paired with its return, a return whose entry came before sonde
    /// attached; nothing while an entry waits.
    fn record(&mut self, call: Call) -> Option<(Call, Option<Call>)> {
        if !self.returns {
            return Some((call, None));
        }
        let key = match call.head.pair {
            [0, 0] => (u64::from(call.head.pid_tgid as u32), u64::MAX),
            [g, depth] => (g, depth),
        };
        let stack = self.pending.entry(key).or_default();
        if call.head.kind & 0xff != RETURN {
            stack.push(call);
            return None;
        }
        // The innermost pending entry of this function on this thread.
        match stack.iter().rposition(|p| p.head.cookie == call.head.cookie) {
            Some(i) => Some((stack.remove(i), Some(call))),
            None if self.entry_filtered => None,
            // Entered before sonde attached: the return alone.
            None => Some((Call::return_alone(&call), Some(call))),
        }
    }

    /// Calls still running at the end, oldest first.
    fn running(self) -> Vec<Call> {
        let mut left: Vec<Call> = self.pending.into_values().flatten().collect();
        left.sort_by_key(|c| c.head.ts_ns);
        left
    }
}

/// Runs `sonde trace`.
pub fn run(
    common: &Common,
    specs: &ArgSpecs,
    ret: Option<ArgType>,
    stack: bool,
    max_bytes: Option<u32>,
) -> Result<i32, CliError> {
    if common.by.is_some() {
        return Err(CliError::new(
            "--by breaks down `sonde count`; here it has nothing to do",
        ));
    }
    common.no_interval("trace")?;
    let site = filter_site(common, ret)?;
    // Every text of the run has one size: --max-bytes, or more for a `b:LEN`.
    let text_size = max_bytes
        .unwrap_or(crate::record::TEXT_DEFAULT as u32)
        .max(specs.largest_buffer())
        .min(crate::record::TEXT_MAX as u32) as usize;
    let (mut session, functions, t0) = start(common, specs, ret, stack, site, text_size)?;
    let names: Vec<(String, String)> = session
        .functions()
        .iter()
        .map(|f| (f.function.name.to_string(), f.set.display_name(f.function).to_string()))
        .collect();
    let names: Vec<(&str, &str)> = names.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    for pattern in specs.unmatched(&names) {
        eprintln!(
            "sonde: --args {}=...: no traced function matches `{}`; its types are not used",
            crate::human::text(pattern),
            crate::human::text(pattern)
        );
    }
    let mut ring = RingBuf::new(Map::Events.of(session.object())?)?;
    let stacks = if stack {
        let (map, known) = crate::stacks::StackMaps::of(session.object(), &session.functions())?;
        Some((map, RefCell::new(known)))
    } else {
        None
    };
    let lost = Map::Lost.counters(session.object())?;
    let printer = Printer {
        functions,
        ret,
        json: common.json,
        t0,
        stacks,
        text_size,
    };
    let mut out = std::io::BufWriter::new(crate::session::report_output(common)?);
    printer.header(&mut out)?;
    let mut pairing = Pairing {
        returns: ret.is_some() || specs.any_at_return(),
        entry_filtered: common.filter.is_some() && site == Site::Entry,
        pending: HashMap::new(),
    };
    let (mut events, mut calls) = (0u64, 0u64);
    let stop = loop {
        let stop = session.should_stop();
        // Drain what is there (after a stop too, so nothing already sent is lost).
        while let Some(item) = ring.next() {
            // The program writes whole records: a short one is skipped.
            let Some(call) = item
                .read::<CallRecord>()
                .ok()
                .and_then(|h| Call::parse(&item, h, text_size))
            else {
                continue;
            };
            drop(item);
            events += 1;
            if let Some((entry, exit)) = pairing.record(call) {
                calls += 1;
                printer.call(&mut out, &entry, exit.as_ref())?;
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
    if site == Site::Entry {
        for call in &pairing.running() {
            calls += 1;
            printer.call(&mut out, call, None)?;
        }
    }
    out.flush()?;
    drop(out);
    let lost: u64 = lost.get(0)?.iter().sum();
    eprintln!(
        "sonde: {calls} call{} ({events} records), {lost} lost{}",
        if calls == 1 { "" } else { "s" },
        if lost > 0 {
            " (the ring buffer was full: trace fewer functions)"
        } else {
            ""
        }
    );
    session.close();
    Ok(stop.exit_code())
}
