//! `sonde latency`: per-function call durations, exact where they can be.
//!
//! One session program (`latency`) keeps each call's start time in its
//! per-call session value: natively on Linux 6.13+ (the kernel's slot), else
//! in sonde's emulation (a slot per thread and stack pointer at entry).
//! Recursion, nested probed calls and concurrent threads each get their own
//! interval. Calls are also counted at entry: a call whose return the kernel
//! never reported (nested deeper than its 64 return probes per thread) is
//! counted and reported as untimed, never paired with another's return.
//!
//! Count, minimum, mean and maximum are exact (kept per CPU in the program);
//! quantiles come from log-linear buckets, eight per power of two, read at a
//! bucket's middle: within 6.25 % of the true value. The same holds per key
//! with `--by`.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use crate::args::{By, ByKeys, Common};
use crate::error::CliError;
use crate::human;
use crate::probes::{Durations, Map, Program, Timing};
use crate::record::{ByKey, Stats, LATENCY_BUCKETS};
use crate::report::FunctionId;
use crate::session::Session;

/// A function's (or a key's) figures, as JSON rows carry them.
#[derive(Serialize)]
struct Figures {
    /// Calls entered.
    count: u64,
    /// Calls whose return was seen and timed (the histogram's).
    timed: u64,
    /// Calls entered with no return seen: deeper than the kernel's 64 nested
    /// return probes, or still running at the end.
    untimed: u64,
    min_ns: u64,
    mean_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    histogram: Vec<Bucket>,
}

#[derive(Serialize, Clone, Copy)]
struct Bucket {
    /// The bucket's lowest duration.
    ge_ns: u64,
    /// Its upper bound (exclusive).
    le_ns: u64,
    count: u64,
}

impl Figures {
    fn of(d: &Durations) -> Figures {
        let timed = d.timed();
        Figures {
            count: d.entered.max(timed),
            timed,
            untimed: d.untimed(),
            min_ns: d.min_ns,
            mean_ns: d.mean_ns(),
            p50_ns: d.quantile(0.50),
            p90_ns: d.quantile(0.90),
            p99_ns: d.quantile(0.99),
            max_ns: d.max_ns,
            histogram: d
                .buckets
                .iter()
                .map(|&(b, count)| Bucket {
                    ge_ns: crate::record::latency_bucket_range(b).0,
                    le_ns: Durations::upper_ns(b),
                    count,
                })
                .collect(),
        }
    }

    /// `CALLS MIN MEAN P50 P90 P99 MAX` cells.
    fn cells(&self) -> String {
        format!(
            "{:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            human::count(self.count),
            human::nanos(self.min_ns),
            human::nanos(self.mean_ns),
            human::nanos(self.p50_ns),
            human::nanos(self.p90_ns),
            human::nanos(self.p99_ns),
            human::nanos(self.max_ns)
        )
    }
}

const HEADER: [&str; 7] = ["CALLS", "MIN", "MEAN", "P50", "P90", "P99", "MAX"];

fn header() -> String {
    format!(
        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        HEADER[0], HEADER[1], HEADER[2], HEADER[3], HEADER[4], HEADER[5], HEADER[6]
    )
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    id: FunctionId,
    #[serde(flatten)]
    figures: Figures,
}

fn rows(session: &Session) -> Result<Vec<Row>, CliError> {
    let timing = Timing::open(session.object())?;
    let several = session.several_binaries();
    let mut rows = Vec::new();
    for f in &session.functions() {
        rows.push(Row {
            id: FunctionId::of(f, several),
            figures: Figures::of(&timing.get(f.cookie as u32)?),
        });
    }
    rows.sort_by(|a, b| {
        b.figures
            .count
            .cmp(&a.figures.count)
            .then(a.id.cookie.cmp(&b.id.cookie))
    });
    Ok(rows)
}

/// A histogram drawn with bars, every bucket from the first to the last
/// non-empty one shown (empty ones too).
fn draw(out: &mut (impl Write + ?Sized), label: &str, histogram: &[Bucket]) -> std::io::Result<()> {
    writeln!(out, "\n{label}")?;
    let peak = histogram.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    for b in histogram {
        let bar = "#".repeat(((b.count * 40).div_ceil(peak)) as usize);
        writeln!(
            out,
            "  {:>8} .. {:<8} {:>8} {bar}",
            human::nanos(b.ge_ns),
            human::nanos(b.le_ns),
            human::count(b.count)
        )?;
    }
    Ok(())
}

/// The histogram by power of two for the terminal (the JSON keeps the fine
/// buckets), every one from the first to the last non-empty one shown.
fn filled(histogram: &[Bucket]) -> Vec<Bucket> {
    let octave = |ns: u64| crate::record::log2(ns.max(1));
    let (Some(first), Some(last)) = (histogram.first(), histogram.last()) else {
        return Vec::new();
    };
    (octave(first.ge_ns)..=octave(last.ge_ns))
        .map(|o| Bucket {
            ge_ns: if o == 0 { 0 } else { 1 << o },
            le_ns: 1u64.checked_shl(o + 1).unwrap_or(u64::MAX),
            count: histogram.iter().filter(|b| octave(b.ge_ns) == o).map(|b| b.count).sum(),
        })
        .collect()
}

fn print(out: &mut (impl Write + ?Sized), rows: &[Row]) -> std::io::Result<()> {
    writeln!(out, "{:<36} {}", "FUNCTION", header())?;
    for r in rows {
        writeln!(out, "{:<36} {}", human::fit(&r.id.label, 36), r.figures.cells())?;
    }
    for r in rows.iter().filter(|r| r.figures.untimed > 0) {
        writeln!(
            out,
            "{}: {} of {} calls not timed: their returns were not seen (nested deeper than the kernel's 64 return probes per thread, or still running at the end)",
            r.id.label,
            human::count(r.figures.untimed),
            human::count(r.figures.count)
        )?;
    }
    for r in rows.iter().filter(|r| r.figures.timed > 0) {
        draw(out, &r.id.label, &filled(&r.figures.histogram))?;
    }
    Ok(())
}

/// The session program: `latency`, or `latency_ex` with a filter (the lean one
/// keeps each emulated copy small).
fn program(common: &Common) -> Program {
    if common.filter.is_some() {
        Program::LatencyFiltered
    } else {
        Program::Latency
    }
}

/// The maps every latency run sizes per function.
fn sizes(n: u32) -> Vec<(Map, u32)> {
    let n = n.max(1);
    vec![(Map::Hist, n * LATENCY_BUCKETS), (Map::Stats, n), (Map::Counts, n)]
}

/// Runs `sonde latency`.
pub fn run(common: &Common) -> Result<i32, CliError> {
    common.no_interval("latency")?;
    if let Some(by) = common.by.clone() {
        return run_by(common, by);
    }
    let mut session = Session::start(common, "timing", &[program(common)], sizes)?;
    let stop = session.wait(std::time::Duration::from_secs(1), |_| {});
    let rows = rows(&session)?;
    session.finish(stop, common, rows, |out, rows| print(out, rows))
}

/// One `latency --by` row.
#[derive(Serialize)]
struct ByRow {
    #[serde(flatten)]
    id: FunctionId,
    #[serde(flatten)]
    key: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    figures: Figures,
    #[serde(skip)]
    shown: String,
}

/// The `--by` rows' durations: buckets from `BY_KEY`, exact statistics from
/// `BY_STATS`.
/// A row's identity is its key without the bucket (`BY_STATS`' key).
fn by_durations(object: &sonde::Object) -> Result<HashMap<ByKey, Durations>, CliError> {
    let mut groups: HashMap<ByKey, Durations> = HashMap::new();
    let keys = sonde::maps::HashMap::<ByKey, u64>::new(Map::ByKey.of(object)?)?;
    for entry in keys.iter()? {
        let (key, n) = entry?;
        groups
            .entry(key.without_bucket())
            .or_default()
            .buckets
            .push((key.bucket(), n));
    }
    let stats = sonde::maps::PerCpuHashMap::<ByKey, Stats>::new(Map::ByStats.of(object)?)?;
    for key in stats.keys()? {
        let d = groups.entry(key).or_default();
        for s in stats.get(&key)?.unwrap_or_default() {
            d.add_stats(&s);
        }
    }
    for d in groups.values_mut() {
        d.buckets.sort_unstable();
        d.entered = d.timed();
    }
    Ok(groups)
}

/// `sonde latency --by pid|tid|comm|ret`: the figures per (function, key),
/// the bucket counted in the program's `BY_KEY` map and the exact statistics
/// in `BY_STATS` (the key known at return).
fn run_by(common: &Common, by: ByKeys) -> Result<i32, CliError> {
    if by
        .parts()
        .iter()
        .any(|p| !matches!(p, By::Pid | By::Tid | By::Comm | By::Ret | By::Cgroup | By::Container))
    {
        return Err(CliError::new(
            "latency --by takes pid, tid, comm, cgroup, container and ret: arguments and stacks are not known at return",
        ));
    }
    let [(kind, _), (kind2, _)] = by.settings();
    let mut session = Session::start_with(
        common,
        "timing",
        &[program(common)],
        crate::filter::Site::Entry,
        |n| {
            let mut v = sizes(n);
            v.push((Map::ByStats, crate::record::BY_KEYS));
            v
        },
        |s| {
            crate::session::update_settings(s.object(), |c| {
                c.by_kind = kind;
                c.by_kind2 = kind2;
            })
        },
    )?;
    let stop = session.wait(std::time::Duration::from_secs(1), |_| {});
    let ids = session.function_ids();
    let mut rows_d = Vec::new();
    for (key, d) in by_durations(session.object())? {
        let Some(id) = ids.get(&u64::from(key.cookie)) else {
            continue;
        };
        let (key, shown) = crate::report::by_fields(&by, &key);
        rows_d.push((
            ByRow {
                id: id.clone(),
                key,
                figures: Figures::of(&d),
                shown,
            },
            d,
        ));
    }
    if by.has(By::Container) {
        // One row per container, whatever number of its cgroups called.
        let mut merged: Vec<(ByRow, Durations)> = Vec::new();
        let mut at: HashMap<(u64, String), usize> = HashMap::new();
        for (r, d) in rows_d {
            match at.entry((r.id.cookie, r.shown.clone())) {
                std::collections::hash_map::Entry::Occupied(e) => merged[*e.get()].1.merge(&d),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(merged.len());
                    merged.push((r, d));
                }
            }
        }
        rows_d = merged;
    }
    let mut rows: Vec<ByRow> = rows_d
        .into_iter()
        .map(|(mut r, d)| {
            r.figures = Figures::of(&d);
            r
        })
        .collect();
    rows.sort_by(|a, b| {
        b.figures
            .count
            .cmp(&a.figures.count)
            .then(a.id.cookie.cmp(&b.id.cookie))
            .then(a.shown.cmp(&b.shown))
    });
    let column = by.name().to_uppercase();
    session.finish(stop, common, rows, |out, rows| {
        let w = human::key_width(&column, rows.iter().map(|r| r.shown.as_str()));
        writeln!(out, "{:<30} {:<w$} {}", "FUNCTION", column, header())?;
        for r in rows {
            writeln!(
                out,
                "{:<30} {:<w$} {}",
                human::fit(&r.id.label, 30),
                human::fit(&r.shown, w),
                r.figures.cells()
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::latency_bucket;

    #[test]
    fn figures_are_exact_where_kept_and_quantiles_within_the_bucket_error() {
        // 90 calls of 10 ms, 10 of 50 ms.
        let (a, b) = (10_000_000u64, 50_000_000u64);
        let d = Durations {
            buckets: vec![(latency_bucket(a), 90), (latency_bucket(b), 10)],
            min_ns: a,
            max_ns: b,
            sum_ns: 90 * a + 10 * b,
            entered: 100,
        };
        let f = Figures::of(&d);
        assert_eq!((f.count, f.min_ns, f.max_ns, f.mean_ns), (100, a, b, 14_000_000));
        assert!(f.p50_ns.abs_diff(a) * 16 <= a, "{}", f.p50_ns);
        assert!(f.p99_ns.abs_diff(b) * 16 <= b, "{}", f.p99_ns);
        let shown = filled(&f.histogram);
        assert_eq!(shown.first().map(|b| b.count), Some(90));
        assert_eq!(shown.last().map(|b| b.count), Some(10));
        assert!(shown.iter().any(|b| b.count == 0), "empty buckets between are shown");
    }
}
