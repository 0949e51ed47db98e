//! What the tests of the `sonde` command share: running it, reading its JSON,
//! the fixture's known counts, one test at a time where links are counted.

use std::io::BufReader;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tests here count links and tracefs entries: one at a time.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn sonde(args: &[&str]) -> (i32, String, String) {
    crate::run_sonde(args)
}

/// Every line of `text` that is a JSON object (JSON Lines), parsed.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn json(text: &str) -> Value {
    // The traced command prints its own line first; the JSON object is the last.
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {text:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// `name -> count` from a count report, checking its shape.
pub fn counts(report: &Value) -> Vec<(String, u64)> {
    let functions = report["functions"].as_array().expect("functions array");
    let out: Vec<(String, u64)> = functions
        .iter()
        .map(|f| {
            assert!(f["cookie"].is_u64() && f.get("demangled").is_some(), "{f}");
            (
                f["name"].as_str().expect("name").to_string(),
                f["count"].as_u64().expect("count"),
            )
        })
        .collect();
    let mut sorted = out.clone();
    sorted.sort_by_key(|x| std::cmp::Reverse(x.1));
    assert_eq!(
        out.iter().map(|x| x.1).collect::<Vec<_>>(),
        sorted.iter().map(|x| x.1).collect::<Vec<_>>(),
        "ordered by count"
    );
    out
}

pub const FX_COUNTS: [(&str, u64); 4] = [("fx_delta", 4), ("fx_gamma", 3), ("fx_beta", 2), ("fx_alpha", 1)];

pub fn owned(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// No `sonde_` tracefs entry, once the detaches handed to background processes are done.
pub fn no_tracefs_entries_left() {
    crate::wait_for_detach_workers();
    let entries = sonde::inspect::tracefs_uprobes();
    assert!(
        !entries.iter().any(|e| e.contains("sonde_")),
        "tracefs entries left: {entries:?}"
    );
}

/// Reads stderr until the status line says attached, returning the elapsed time.
pub fn until_attached(child: &mut Child) -> (Duration, BufReader<std::process::ChildStderr>) {
    let start = Instant::now();
    let err = crate::until_attached(child);
    (start.elapsed(), err)
}

/// `FX_COUNTS` for `times` runs of the fixture's calls.
pub fn fx_counts_times(times: u64) -> Vec<(String, u64)> {
    FX_COUNTS.iter().map(|(n, c)| (n.to_string(), c * times)).collect()
}
