//! How reports name functions, and the end-of-run JSON object.

use sonde::{FunctionSet, Tier};

use crate::args::By;
use crate::error::CliError;

/// One function of a session: its cookie, the set it came from, itself.
pub struct SessionFunction<'a> {
    /// Its cookie (index into the per-cookie maps).
    pub cookie: u64,
    /// The binary's resolved functions.
    pub set: &'a FunctionSet,
    /// The function.
    pub function: &'a sonde::FunctionMatch,
}

/// How a report names a function: raw and demangled names, version, cookie.
#[derive(serde::Serialize, Clone)]
pub struct FunctionId {
    /// Raw symbol name.
    pub name: String,
    /// Demangled name, if mangled.
    pub demangled: Option<String>,
    /// Symbol version, if versioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The name shown in tables (control characters escaped).
    #[serde(skip)]
    pub label: String,
    /// The cookie.
    pub cookie: u64,
    /// The file offset probed: tells apart two functions of one name (two
    /// `static` functions in different source files).
    pub offset: u64,
    /// The binary, when several are traced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// For an ifunc (`strlen`): the implementation its calls reach, probed
    /// instead of the resolver (`__strlen_evex`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub implementation: Option<String>,
}

impl FunctionId {
    /// The identity of a session's function; with several binaries the label
    /// is `binary:name` and the JSON names the binary.
    pub fn of(f: &SessionFunction<'_>, several_binaries: bool) -> Self {
        let set: &FunctionSet = f.set;
        let binary = several_binaries.then(|| set.path().display().to_string());
        let label = crate::human::text(&set.label(f.function));
        FunctionId {
            name: f.function.name.to_string(),
            demangled: set.demangled(f.function).map(str::to_string),
            version: set
                .symbol(f.function)
                .and_then(|s| s.version.as_deref())
                .map(str::to_string),
            label: match &binary {
                Some(_) => format!(
                    "{}:{label}",
                    crate::human::text(&set.path().file_name().map_or_else(
                        || set.path().display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    ))
                ),
                None => label,
            },
            cookie: f.cookie,
            offset: f.function.file_offset,
            binary,
            implementation: f.function.implementation.as_ref().map(|m| m.label()),
        }
    }
}

/// The end-of-run JSON object of `count` and `latency`.
#[derive(serde::Serialize)]
struct Report<T> {
    /// The tier that ran.
    pub tier: String,
    /// For `latency` (a session program): `native` or `emulated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'static str>,
    /// Hits the kernel skipped (counts are short by this many); `null` where
    /// the kernel does not count them ([`sonde::Job::skipped_hits`]).
    pub skipped_hits: Option<u64>,
    /// One row per function.
    pub functions: Vec<T>,
}

/// Writes `{"tier", "session"?, "skipped_hits", "functions"}` as one line.
pub fn write_report<T: serde::Serialize>(
    out: &mut impl std::io::Write,
    tier: Tier,
    session: Option<sonde::SessionMode>,
    skipped_hits: Option<u64>,
    functions: Vec<T>,
) -> Result<(), CliError> {
    let report = Report {
        tier: tier.name().to_string(),
        session: session.map(sonde::SessionMode::short_name),
        skipped_hits,
        functions,
    };
    serde_json::to_writer(&mut *out, &report).map_err(|e| CliError::new(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}

/// A `--by` key's parts as JSON fields (one per part, named as the part)
/// and as shown (joined by a space). Stacks are their callers' (frames).
pub fn by_fields(
    by: &crate::args::ByKeys,
    key: &crate::record::ByKey,
) -> (serde_json::Map<String, serde_json::Value>, String) {
    let mut fields = serde_json::Map::new();
    let mut shown = Vec::new();
    for (part, value) in by.parts().iter().zip([key.value, key.value2]) {
        let (json, text) = by_part(*part, value, key);
        fields.insert(part.name(), json);
        shown.push(text);
    }
    (fields, shown.join(" "))
}

/// One part of a `--by` key as JSON and as shown: `comm` from its words, a
/// string escaped (`\xNN` for bytes that are not UTF-8; `null` in JSON and
/// `<unreadable>` shown when the program could not read it), numbers signed
/// (arguments and return values are signed unless typed: `-1`, not 2^64 - 1).
fn by_part(by: By, value: u64, key: &crate::record::ByKey) -> (serde_json::Value, String) {
    match by {
        By::Comm => {
            let comm = comm_text(key.comm_lo, key.comm_hi);
            let shown = crate::human::text(&comm);
            (serde_json::Value::from(comm), shown)
        }
        By::ArgStr(_) if value != 0 => (serde_json::Value::Null, "<unreadable>".into()),
        By::ArgStr(_) => {
            let bytes = key.text_bytes();
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let text = crate::human::bytes(&bytes[..end]);
            // The program keeps BY_TEXT bytes, its NUL included: longer strings end here.
            let shown = match end + 1 >= bytes.len() {
                true => format!("{text}..."),
                false => text.clone(),
            };
            (serde_json::Value::from(text), shown)
        }
        By::Arg(_) | By::Ret => (serde_json::Value::from(value as i64), (value as i64).to_string()),
        By::Pid | By::Tid | By::Stack => (serde_json::Value::from(value), value.to_string()),
        By::Cgroup => {
            let name = cgroup_name(value);
            let shown = crate::human::text(&name);
            (serde_json::Value::from(name), shown)
        }
        By::Container => container_key(&cgroup_name(value)),
    }
}

/// A `--by container` key from the caller's cgroup path: JSON
/// `{"runtime", "id", "pod_uid"}` (`null` outside any container) and shown as
/// `RUNTIME:ID12` (the short id `docker ps` shows), `pod UID` after it.
/// Several cgroups of one container give one key (rows are merged by it).
fn container_key(path: &str) -> (serde_json::Value, String) {
    match sonde::cgroup::container_of(path) {
        Some(c) => {
            let shown = match &c.pod_uid {
                Some(pod) => format!("{}:{} pod {pod}", c.runtime.name(), &c.id[..12]),
                None => format!("{}:{}", c.runtime.name(), &c.id[..12]),
            };
            let json = serde_json::json!({"runtime": c.runtime.name(), "id": c.id, "pod_uid": c.pod_uid});
            (json, shown)
        }
        None if path.ends_with("(gone)") => (serde_json::Value::Null, format!("({path})")),
        None => (serde_json::Value::Null, "(no container)".into()),
    }
}

/// Merges rows whose keys read the same (`--by container`: each cgroup of a
/// container is one program key): `key` of each row and `add` folding the
/// second row into the first; order kept.
pub fn merge_same<R, K: Eq + std::hash::Hash>(rows: Vec<R>, key: impl Fn(&R) -> K, add: impl Fn(&mut R, R)) -> Vec<R> {
    let mut at: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut out: Vec<R> = Vec::with_capacity(rows.len());
    for r in rows {
        match at.entry(key(&r)) {
            std::collections::hash_map::Entry::Occupied(e) => add(&mut out[*e.get()], r),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(r);
            }
        }
    }
    out
}

/// A cgroup id named by its path under the cgroup v2 mount (`/` the root),
/// or `cgroup ID (gone)` when it was removed before sonde first named it
/// ([`sonde::cgroup::Names`]).
fn cgroup_name(id: u64) -> String {
    use std::sync::Mutex;
    static NAMES: Mutex<Option<sonde::cgroup::Names>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    names
        .get_or_insert_with(Default::default)
        .path(id)
        .unwrap_or_else(|| format!("cgroup {id} (gone)"))
}

/// A command name the programs keep as two native-endian words, up to its NUL.
pub fn comm_text(lo: u64, hi: u64) -> String {
    let mut bytes = lo.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&hi.to_ne_bytes());
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
