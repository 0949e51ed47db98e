//! A call as one line of text or one JSON object: its arguments and return
//! value shown as their types say, strings escaped, its stack named.

use std::cell::RefCell;
use std::io::Write;

use serde::Serialize;

use super::args::ArgType;
use crate::error::CliError;
use crate::record::{CallRecord, RETURN, TEXT, TEXT_BYTES, TEXT_READ};

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
    /// A string was read by sonde after the call (the program could not:
    /// its page was not in memory yet).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    late: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<String>>,
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
    if call.kind & TEXT_BYTES != 0 {
        // A buffer: exactly the bytes read, NULs included (escaped); cut when
        // the call returned more than a record holds.
        let truncated = call.kind & 0xff == RETURN && call.args[0] as i64 > TEXT as i64;
        return Ok((crate::human::bytes(bytes), truncated));
    }
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    // The kernel copies at most TEXT - 1 bytes and the NUL: a full buffer may
    // have cut the string.
    let truncated = n == TEXT;
    Ok((crate::human::bytes(bytes), truncated))
}

/// A C string the program could not read at entry (`EFAULT`: its page was
/// not in memory yet, and a probe cannot fault it in), read from outside the
/// process while it lives. `None` when that fails too (the process is gone).
fn reread(entry: &CallRecord, types: &[ArgType]) -> Option<(String, bool)> {
    if entry.text_len != -libc::EFAULT {
        return None;
    }
    let i = types.iter().position(|t| *t == ArgType::Str)?;
    let ptr = *entry.args.get(i)?;
    let bytes = sonde::process::read_memory((entry.pid_tgid >> 32) as u32, ptr, TEXT).ok()?;
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => Some((crate::human::bytes(&bytes[..end]), false)),
        None => Some((crate::human::bytes(&bytes), true)),
    }
}

/// A value shown as `t` says; `text` is the record's string for `s`.
fn value(t: ArgType, raw: u64, text: Option<&Result<(String, bool), String>>) -> Value {
    match t {
        ArgType::Int => Value::Int(i64::from(raw as u32 as i32)),
        ArgType::Uint => Value::Uint(u64::from(raw as u32)),
        ArgType::Long => Value::Int(raw as i64),
        ArgType::Hex | ArgType::Ptr | ArgType::Raw => Value::Uint(raw),
        ArgType::Str | ArgType::StrAtReturn | ArgType::Bytes(_) => match text {
            Some(Ok((s, _))) => Value::Text(s.clone()),
            Some(Err(e)) => Value::Text(e.clone()),
            // Read at return, and the return was not seen: the pointer.
            None => Value::Uint(raw),
        },
    }
}

fn human(t: ArgType, v: &Value, truncated: bool) -> String {
    match (t, v) {
        (_, Value::Text(s)) if s.starts_with("<unreadable") => s.clone(),
        (ArgType::Str | ArgType::StrAtReturn | ArgType::Bytes(_), Value::Text(s)) => {
            format!("\"{}\"{}", s.replace('"', "\\\""), if truncated { "..." } else { "" })
        }
        (ArgType::Hex | ArgType::Ptr | ArgType::Raw | ArgType::StrAtReturn | ArgType::Bytes(_), Value::Uint(n)) => {
            format!("{n:#x}")
        }
        (_, Value::Int(n)) => n.to_string(),
        (_, Value::Uint(n)) => n.to_string(),
        (_, Value::Text(s)) => s.clone(),
    }
}

/// Per function (index: cookie): its label and argument types.
#[derive(Default)]
pub struct Function {
    /// The name shown.
    pub label: String,
    /// How its arguments are shown.
    pub types: Vec<ArgType>,
}

/// Stacks: the map the program writes them to, and the files their build ids name.
pub type StackSource = (sonde::maps::StackTraceMap, RefCell<crate::stacks::Stacks>);

/// Writes one line per call (or one JSON object).
pub struct Printer {
    /// Per function, by cookie.
    pub functions: Vec<Function>,
    /// `--ret`'s type.
    pub ret: Option<ArgType>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Times are shown from here (ns, CLOCK_MONOTONIC).
    pub t0: u64,
    /// `--stack`.
    pub stacks: Option<StackSource>,
}

impl Printer {
    /// The header line (text output only).
    pub fn header(&self, out: &mut dyn Write) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        writeln!(
            out,
            "{:>12} {:>7} {:>7} {:<16} FUNCTION(ARGS){}",
            "TIME(s)",
            "PID",
            "TID",
            "COMM",
            if self.ret.is_some() { " = RETURN (DURATION)" } else { "" }
        )
    }

    /// One call: its entry, and its return when seen.
    pub fn call(&self, out: &mut dyn Write, entry: &CallRecord, exit: Option<&CallRecord>) -> Result<(), CliError> {
        let f = self.functions.get(entry.cookie as usize);
        let label = f.map_or("?", |f| f.label.as_str());
        let types = f.map(|f| f.types.as_slice()).unwrap_or(&[]);
        // The argument's memory: from the entry, or read at return.
        let at_return = types.iter().any(|t| t.at_return());
        let holder = if at_return { exit } else { Some(entry) };
        let mut text = holder.filter(|r| r.kind & TEXT_READ != 0).map(record_text);
        // A string on a page the process had not touched: read again from
        // outside while the process lives, and said so.
        let late = match (&text, at_return) {
            (Some(Err(_)), false) => reread(entry, types).map(|t| text = Some(Ok(t))).is_some(),
            _ => false,
        };
        let truncated = matches!(text, Some(Ok((_, true))));
        let args: Vec<Value> = types
            .iter()
            .zip(entry.args)
            .map(|(t, raw)| value(*t, raw, text.as_ref()))
            .collect();
        let (ret_value, ret_truncated) = match (exit, self.ret) {
            (Some(x), Some(t)) => {
                let text = (x.kind & TEXT_READ != 0 && !at_return).then(|| record_text(x));
                let truncated = matches!(text, Some(Ok((_, true))));
                (Some(value(t, x.args[0], text.as_ref())), truncated)
            }
            _ => (None, false),
        };
        let duration_ns = exit.map(|x| x.ts_ns.saturating_sub(entry.ts_ns));
        let end = entry.comm.iter().position(|&b| b == 0).unwrap_or(16);
        let comm = String::from_utf8_lossy(&entry.comm[..end]);
        let frames = self.frames(entry);
        if self.json {
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
                late,
                stack: frames,
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| CliError::new(e.to_string()))?;
            writeln!(out)?;
            return Ok(());
        }
        let shown: Vec<String> = types.iter().zip(&args).map(|(t, v)| human(*t, v, truncated)).collect();
        let tail = match (self.ret, &ret_value, duration_ns) {
            (Some(t), Some(v), Some(d)) => {
                format!(" = {} ({})", human(t, v, ret_truncated), crate::human::nanos(d))
            }
            (Some(_), _, _) => " = ? (no return seen)".to_string(),
            _ => String::new(),
        };
        let tail = if late {
            format!("{tail} [string read after the call]")
        } else {
            tail
        };
        writeln!(
            out,
            "{:>12.6} {:>7} {:>7} {:<16} {label}({}){tail}",
            entry.ts_ns.saturating_sub(self.t0) as f64 / 1e9,
            entry.pid_tgid >> 32,
            entry.pid_tgid as u32,
            crate::human::text(&comm),
            shown.join(", "),
        )?;
        for f in frames.iter().flatten() {
            writeln!(out, "{:>12} {f}", "")?;
        }
        Ok(())
    }

    /// The call's user stack, named (`--stack`).
    fn frames(&self, entry: &CallRecord) -> Option<Vec<String>> {
        self.stacks.as_ref().map(|(map, known)| {
            let mut known = known.borrow_mut();
            known.learn_pid((entry.pid_tgid >> 32) as u32);
            match u32::try_from(entry.stack_id).ok().map(|id| map.get_build_ids(id)) {
                Some(Ok(Some(f))) => known.describe(&f),
                _ => vec!["[stack not captured]".to_string()],
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_invalid_utf8() {
        assert_eq!(crate::human::bytes(b"ok \xff\xfe end"), "ok \\xff\\xfe end");
        assert_eq!(crate::human::bytes("é".as_bytes()), "é");
    }
}
