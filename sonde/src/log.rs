//! Log lines from programs (`sonde_ebpf::info!` and friends), formatted here.
//!
//! One line in the host enables them, forwarded to the `log` crate (target
//! `ebpf`) by a background thread:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # const PROBES: &[u8] = &[];
//! let object = sonde::Object::load(PROBES)?;
//! let _logger = sonde::log::EbpfLogger::spawn(PROBES, &object)?;
//! # Ok(()) }
//! ```
//!
//! Or read them yourself with [`LogReader`]. Needs Linux 5.8 (ring buffers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use object::{Object as _, ObjectSection as _};

use crate::maps::{MapError, Pod, RingBuf};
use crate::object::Object;

/// The ring buffer map programs log through (its symbol ends with this).
pub const LOG_MAP: &str = "SONDE_LOG";
/// The object section holding the format strings.
pub const FORMAT_SECTION: &str = "sonde_log";
/// Arguments a line carries at most (`sonde_ebpf::log::MAX_ARGS`).
pub const MAX_ARGS: usize = 6;
/// String arguments a line carries at most (`sonde_ebpf::log::MAX_STRS`).
pub const MAX_STRS: usize = 2;
/// Bytes kept of each string, its NUL included (`sonde_ebpf::log::LOG_TEXT`).
pub const LOG_TEXT: usize = 64;

/// One line as the program sends it (`sonde_ebpf::log::Record`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    id: u64,
    level: u8,
    nargs: u8,
    strs: u8,
    _pad: [u8; 5],
    args: [u64; MAX_ARGS],
    text: [u8; LOG_TEXT * MAX_STRS],
}
// SAFETY: repr(C), integer fields only, no padding (8 + 1 + 1 + 1 + 5 + 48 + 128 bytes).
unsafe impl Pod for Record {}

/// One argument of a line as the host formats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer (or pointer).
    Int(u64),
    /// A string read from the traced process: its bytes (NUL excluded), and
    /// whether it was cut at `LOG_TEXT - 1` bytes.
    Text(Vec<u8>, bool),
    /// A string the program could not read (a bad pointer, a page not in).
    Unreadable,
}

impl Record {
    fn values(&self) -> Vec<Value> {
        let n = usize::from(self.nargs).min(MAX_ARGS);
        (0..n)
            .map(|i| {
                let v = self.args[i];
                if self.strs & (1 << i) == 0 {
                    return Value::Int(v);
                }
                if v == u64::MAX {
                    return Value::Unreadable;
                }
                let (slot, len) = ((v & 0xff) as usize, (v >> 8) as usize);
                let Some(bytes) = self.text.get(slot * LOG_TEXT..(slot + 1) * LOG_TEXT) else {
                    return Value::Unreadable;
                };
                let len = len.min(LOG_TEXT);
                let text = &bytes[..len];
                let text = text.strip_suffix(&[0]).unwrap_or(text);
                let text = text.iter().position(|&b| b == 0).map_or(text, |end| &text[..end]);
                Value::Text(text.to_vec(), len == LOG_TEXT)
            })
            .collect()
    }
}

/// Bytes of a traced process as text safe for a terminal or a log file:
/// printable UTF-8 kept, `\\` doubled, control characters and bytes that are
/// not UTF-8 as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Why program logs cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The object has no `SONDE_LOG` map: no program logs.
    #[error("the object has no {LOG_MAP} map: no program calls sonde_ebpf::info! (or the others)")]
    NoLogMap,
    /// The object's bytes could not be read for the formats.
    #[error("reading the log formats: {0}")]
    Formats(String),
    /// The ring buffer could not be opened.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// The format strings of `object_bytes` (its `sonde_log` section), by id.
pub fn formats(object_bytes: &[u8]) -> Result<HashMap<u64, String>, LogError> {
    let file = object::File::parse(object_bytes).map_err(|e| LogError::Formats(e.to_string()))?;
    let mut out = HashMap::new();
    for section in file.sections().filter(|s| s.name() == Ok(FORMAT_SECTION)) {
        let mut data = section.data().map_err(|e| LogError::Formats(e.to_string()))?;
        // Entries: id (8, LE), length (2, LE), bytes; the linker may pad between them.
        while data.len() >= 10 {
            let id = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
            let len = usize::from(u16::from_le_bytes([data[8], data[9]]));
            if id == 0 {
                data = &data[1..];
                continue;
            }
            let Some(text) = data.get(10..10 + len) else { break };
            out.insert(id, String::from_utf8_lossy(text).into_owned());
            data = &data[10 + len..];
        }
    }
    Ok(out)
}

/// Formats `fmt` with integer `args`: `{}` and `{:?}` decimal, `{:x}` hex,
/// `{:#x}` `0x`-prefixed hex, `{{`/`}}` braces; missing arguments print `?`.
pub fn format(fmt: &str, args: &[u64]) -> String {
    let values: Vec<Value> = args.iter().map(|&v| Value::Int(v)).collect();
    format_values(fmt, &values)
}

/// Formats `fmt` with `values`: integers as [`format()`] does, strings escaped
/// ([`escape`]) whatever the placeholder, `...` after a cut one,
/// `<unreadable>` for one the program could not read.
pub fn format_values(fmt: &str, values: &[Value]) -> String {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut args = values.iter();
    let mut rest = fmt;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with("{{") || rest.starts_with("}}") {
            out.push_str(&rest[..1]);
            rest = &rest[2..];
            continue;
        }
        let Some(end) = rest.find('}').filter(|_| rest.starts_with('{')) else {
            out.push_str(&rest[..1]);
            rest = &rest[1..];
            continue;
        };
        let spec = &rest[1..end];
        let text = match (spec, args.next()) {
            (_, None) => "?".to_string(),
            (_, Some(Value::Text(t, cut))) => format!("{}{}", escape(t), if *cut { "..." } else { "" }),
            (_, Some(Value::Unreadable)) => "<unreadable>".to_string(),
            (":x", Some(Value::Int(v))) => format!("{v:x}"),
            (":#x", Some(Value::Int(v))) => format!("{v:#x}"),
            (_, Some(Value::Int(v))) => v.to_string(),
        };
        out.push_str(&text);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Reads and formats program log lines.
pub struct LogReader {
    ring: RingBuf,
    formats: HashMap<u64, String>,
}

impl LogReader {
    /// A reader of `object`'s log lines; `object_bytes` is the object it was
    /// loaded from (the format strings are there, not in the kernel).
    pub fn new(object_bytes: &[u8], object: &Object) -> Result<LogReader, LogError> {
        let name = object
            .map_names()
            .find(|n| *n == LOG_MAP || n.ends_with(LOG_MAP))
            .ok_or(LogError::NoLogMap)?;
        let map = object.map(name)?;
        Ok(LogReader {
            ring: RingBuf::new(map)?,
            formats: formats(object_bytes)?,
        })
    }

    /// The next line, or `None` when there is none now.
    pub fn next_line(&mut self) -> Option<(::log::Level, String)> {
        let record = loop {
            match self.ring.next_as::<Record>()? {
                Ok(r) => break r,
                Err(_) => continue,
            }
        };
        let level = match record.level {
            1 => ::log::Level::Error,
            2 => ::log::Level::Warn,
            3 => ::log::Level::Info,
            4 => ::log::Level::Debug,
            _ => ::log::Level::Trace,
        };
        let values = record.values();
        let line = match self.formats.get(&record.id) {
            Some(f) => format_values(f, &values),
            None => format!("(unknown log format {:#x}) {values:?}", record.id),
        };
        Some((level, line))
    }

    /// Waits up to `timeout` for lines to arrive.
    pub fn wait(&self, timeout: Duration) -> Result<bool, LogError> {
        Ok(self.ring.wait(Some(timeout))?)
    }
}

/// Forwards program log lines to the `log` crate (target `ebpf`) from a
/// background thread, until dropped.
pub struct EbpfLogger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EbpfLogger {
    /// Starts forwarding `object`'s log lines (`object_bytes`: what it was loaded from).
    pub fn spawn(object_bytes: &[u8], object: &Object) -> Result<EbpfLogger, LogError> {
        let mut reader = LogReader::new(object_bytes, object)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || loop {
            while let Some((level, line)) = reader.next_line() {
                ::log::log!(target: "ebpf", level, "{line}");
            }
            if flag.load(Ordering::Relaxed) {
                return;
            }
            let _ = reader.wait(Duration::from_millis(100));
        });
        Ok(EbpfLogger {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EbpfLogger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{escape, format, format_values, Value};

    #[test]
    fn strings_are_escaped_cut_or_unreadable() {
        let v = [
            Value::Text(b"w\xc3\xb6rld \xff\n\\".to_vec(), false),
            Value::Text(b"xx".to_vec(), true),
            Value::Unreadable,
            Value::Int(7),
        ];
        assert_eq!(
            format_values("{} {} {:?} {:x}", &v),
            "w\u{f6}rld \\xff\\x0a\\\\ xx... <unreadable> 7"
        );
        assert_eq!(escape(b"\x1b[31m"), "\\x1b[31m", "no terminal escapes");
    }

    #[test]
    fn formats_like_the_macros_say() {
        assert_eq!(format("call {} with {:#x}", &[3, 255]), "call 3 with 0xff");
        assert_eq!(format("{:x}{{}}{:?}", &[255, 7]), "ff{}7");
        assert_eq!(format("{} {}", &[1]), "1 ?");
        assert_eq!(format("no args", &[]), "no args");
        assert_eq!(format("odd } and {", &[]), "odd } and {");
    }
}
