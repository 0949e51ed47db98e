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

/// One line as the program sends it (`sonde_ebpf::log::Record`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    id: u64,
    level: u8,
    nargs: u8,
    _pad: [u8; 6],
    args: [u64; MAX_ARGS],
}
// SAFETY: repr(C), integer fields only, no padding (8 + 1 + 1 + 6 + 48 bytes).
unsafe impl Pod for Record {}

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

/// Formats `fmt` with `args`: `{}` and `{:?}` decimal, `{:x}` hex, `{:#x}`
/// `0x`-prefixed hex, `{{`/`}}` braces; missing arguments print `?`.
pub fn format(fmt: &str, args: &[u64]) -> String {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut args = args.iter();
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
        let value = args.next();
        let text = match (spec, value) {
            (_, None) => "?".to_string(),
            (":x", Some(v)) => format!("{v:x}"),
            (":#x", Some(v)) => format!("{v:#x}"),
            (_, Some(v)) => v.to_string(),
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
        let map = object
            .maps()
            .iter()
            .find(|m| m.name() == LOG_MAP || m.name().ends_with(LOG_MAP))
            .cloned()
            .ok_or(LogError::NoLogMap)?;
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
        let args = &record.args[..usize::from(record.nargs).min(MAX_ARGS)];
        let line = match self.formats.get(&record.id) {
            Some(f) => format(f, args),
            None => format!("(unknown log format {:#x}) {args:?}", record.id),
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
    use super::format;

    #[test]
    fn formats_like_the_macros_say() {
        assert_eq!(format("call {} with {:#x}", &[3, 255]), "call 3 with 0xff");
        assert_eq!(format("{:x}{{}}{:?}", &[255, 7]), "ff{}7");
        assert_eq!(format("{} {}", &[1]), "1 ?");
        assert_eq!(format("no args", &[]), "no args");
        assert_eq!(format("odd } and {", &[]), "odd } and {");
    }
}
