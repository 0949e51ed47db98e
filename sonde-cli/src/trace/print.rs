//! A call as one line of text or one JSON object: its arguments and return
//! value shown as their types say, strings escaped, its stack named.

use std::cell::RefCell;
use std::io::Write;

use serde::Serialize;

use super::args::ArgType;
use crate::error::CliError;
use crate::record::{CallRecord, TEXTS, TEXT_BYTES, TEXT_OF_NONE, TEXT_OF_RET};

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

/// One string or buffer of a call record.
#[derive(Clone, Debug)]
pub struct Text {
    /// The value it was read from: argument 0..=5, or `TEXT_OF_RET`.
    of: u32,
    /// A buffer of a length, not a C string.
    bytes: bool,
    /// Bytes read (a string's NUL included), or a negative errno.
    len: i32,
    /// The bytes read.
    data: Vec<u8>,
}

/// One call record as read from the ring: its header and its texts.
#[derive(Clone)]
pub struct Call {
    /// The fixed part.
    pub head: CallRecord,
    /// Its strings and buffers.
    texts: Vec<Text>,
}

impl Call {
    /// A record of the ring: the header, then `head.texts` texts of `size`
    /// bytes each. `None` when it is shorter than its header says.
    pub fn parse(raw: &[u8], head: CallRecord, size: usize) -> Option<Call> {
        let start = std::mem::size_of::<CallRecord>();
        let mut texts = Vec::new();
        for i in 0..(head.texts as usize).min(TEXTS) {
            let of = head.text_of[i];
            if of == TEXT_OF_NONE {
                continue;
            }
            let at = start + i * size;
            let slot = raw.get(at..at + size)?;
            let len = head.text_lens[i];
            let n = (len.max(0) as usize).min(size);
            texts.push(Text {
                of: of & !TEXT_BYTES,
                bytes: of & TEXT_BYTES != 0,
                len,
                data: slot[..n].to_vec(),
            });
        }
        Some(Call { head, texts })
    }

    /// A call seen only at its return: the return record without arguments.
    pub fn return_alone(exit: &Call) -> Call {
        let mut head = exit.head;
        head.args = [0; 6];
        Call {
            head,
            texts: Vec::new(),
        }
    }

    fn text(&self, of: u32) -> Option<&Text> {
        self.texts.iter().find(|t| t.of == of)
    }
}

/// A text shown: its bytes with invalid UTF-8 escaped (`\xNN`) and whether it
/// may be cut; `Err` text when the read failed. `size`: the bytes a text
/// holds; `ret`: the call's return value (how much a `b:ret` buffer got).
fn shown_text(t: &Text, size: usize, ret: Option<u64>) -> Result<(String, bool), String> {
    if t.len < 0 {
        return Err(format!("<unreadable: {}>", std::io::Error::from_raw_os_error(-t.len)));
    }
    if t.bytes {
        // A buffer: exactly the bytes read, NULs included (escaped); cut when
        // the call returned more than a text holds.
        let truncated = ret.is_some_and(|r| r as i64 > size as i64);
        return Ok((crate::human::bytes(&t.data), truncated));
    }
    let bytes = t.data.strip_suffix(&[0]).unwrap_or(&t.data);
    // The kernel copies at most size - 1 bytes and the NUL: a full text may
    // have cut the string.
    Ok((crate::human::bytes(bytes), t.data.len() >= size))
}

/// A C string the program could not read at entry (`EFAULT`: its page was
/// not in memory yet, and a probe cannot fault it in), read from outside the
/// process while it lives. `None` when that fails too (the process is gone).
fn reread(entry: &Call, arg: usize, size: usize) -> Option<(String, bool)> {
    let ptr = *entry.head.args.get(arg)?;
    let bytes = sonde::process::read_memory((entry.head.pid_tgid >> 32) as u32, ptr, size).ok()?;
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => Some((crate::human::bytes(&bytes[..end]), false)),
        None => Some((crate::human::bytes(&bytes), true)),
    }
}

/// A value shown as `t` says; `text` is its string or buffer, if read.
fn value(t: ArgType, raw: u64, text: Option<&Result<(String, bool), String>>) -> Value {
    match t {
        ArgType::Int => Value::Int(i64::from(raw as u32 as i32)),
        ArgType::Uint => Value::Uint(u64::from(raw as u32)),
        ArgType::Long => Value::Int(raw as i64),
        ArgType::Hex | ArgType::Ptr | ArgType::Raw | ArgType::Hidden => Value::Uint(raw),
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
pub type StackSource = (crate::stacks::StackMaps, RefCell<crate::stacks::Stacks>);

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
    /// Bytes of each string or buffer (`--max-bytes`, or the largest `b:LEN`).
    pub text_size: usize,
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

    /// One argument's string or buffer: from the entry, or from the return
    /// for a read at return; a string on a page not yet in memory read again
    /// from outside (`late`). `None`: not read (a return not seen).
    fn arg_text(
        &self,
        t: ArgType,
        i: usize,
        entry: &Call,
        exit: Option<&Call>,
        late: &mut bool,
    ) -> Option<Result<(String, bool), String>> {
        let holder = if t.at_return() { exit? } else { entry };
        let text = holder.text(i as u32)?;
        let ret = exit.map(|x| x.head.args[0]);
        let shown = shown_text(text, self.text_size, ret);
        if shown.is_err() && t == ArgType::Str && text.len == -libc::EFAULT {
            if let Some(again) = reread(entry, i, self.text_size) {
                *late = true;
                return Some(Ok(again));
            }
        }
        Some(shown)
    }

    /// One call: its entry, and its return when seen.
    pub fn call(&self, out: &mut dyn Write, entry: &Call, exit: Option<&Call>) -> Result<(), CliError> {
        let f = self.functions.get(entry.head.cookie as usize);
        let label = f.map_or("?", |f| f.label.as_str());
        let types = f.map(|f| f.types.as_slice()).unwrap_or(&[]);
        let mut late = false;
        let texts: Vec<Option<Result<(String, bool), String>>> = types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.reads_memory() {
                true => self.arg_text(*t, i, entry, exit, &mut late),
                false => None,
            })
            .collect();
        let truncated: Vec<bool> = texts.iter().map(|t| matches!(t, Some(Ok((_, true))))).collect();
        // A Go string's length register (`Hidden`) is not an argument of its own.
        let args: Vec<Value> = types
            .iter()
            .zip(entry.head.args)
            .zip(&texts)
            .filter(|((t, _), _)| **t != ArgType::Hidden)
            .map(|((t, raw), text)| value(*t, raw, text.as_ref()))
            .collect();
        let truncated: Vec<bool> = types
            .iter()
            .zip(truncated)
            .filter(|(t, _)| **t != ArgType::Hidden)
            .map(|(_, cut)| cut)
            .collect();
        let types: Vec<ArgType> = types.iter().copied().filter(|t| *t != ArgType::Hidden).collect();
        let (ret_value, ret_truncated) = match (exit, self.ret) {
            (Some(x), Some(t)) => {
                let text = x.text(TEXT_OF_RET).map(|text| shown_text(text, self.text_size, None));
                let truncated = matches!(text, Some(Ok((_, true))));
                (Some(value(t, x.head.args[0], text.as_ref())), truncated)
            }
            _ => (None, false),
        };
        let entry_head = &entry.head;
        let exit_head = exit.map(|x| &x.head);
        let duration_ns = exit_head.map(|x| x.ts_ns.saturating_sub(entry_head.ts_ns));
        let end = entry_head.comm.iter().position(|&b| b == 0).unwrap_or(16);
        let comm = String::from_utf8_lossy(&entry_head.comm[..end]);
        let frames = self.frames(entry_head);
        if self.json {
            let line = Line {
                ts_ns: entry_head.ts_ns,
                pid: (entry_head.pid_tgid >> 32) as u32,
                tid: entry_head.pid_tgid as u32,
                comm: &comm,
                function: label,
                cookie: entry_head.cookie,
                args,
                ret: ret_value,
                duration_ns,
                truncated: truncated.iter().any(|t| *t) || ret_truncated,
                late,
                stack: frames,
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| CliError::new(e.to_string()))?;
            writeln!(out)?;
            return Ok(());
        }
        let shown: Vec<String> = types
            .iter()
            .zip(&args)
            .zip(&truncated)
            .map(|((t, v), cut)| human(*t, v, *cut))
            .collect();
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
            entry_head.ts_ns.saturating_sub(self.t0) as f64 / 1e9,
            entry_head.pid_tgid >> 32,
            entry_head.pid_tgid as u32,
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
            map.describe(&known, entry.cookie, entry.stack_id, entry.caller_delta).1
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
