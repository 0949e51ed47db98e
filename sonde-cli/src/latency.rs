//! `sonde latency`: per-function log2 histograms of call durations.
//!
//! One session program (`latency`) keeps each call's start time in its
//! per-call session value: natively on Linux 6.13+ (the kernel's slot), else
//! in sonde's emulation (a slot per thread and stack pointer at entry).
//! Recursion, nested probed calls and concurrent threads each get their own
//! interval. Calls are also counted at entry: a call whose return the kernel
//! never reported (nested deeper than its 64 return probes per thread) is
//! counted and reported as untimed, never paired with another's return.

use std::io::Write;

use serde::Serialize;

use crate::args::{By, Common};
use crate::error::CliError;
use crate::human;
use crate::probes::{Durations, Map, Program, Timing};
use crate::record::BUCKETS;
use crate::report::FunctionId;
use crate::session::Session;

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    id: FunctionId,
    /// Calls entered.
    count: u64,
    /// Calls whose return was seen and timed (the histogram's).
    timed: u64,
    /// Calls entered with no return seen: deeper than the kernel's 64 nested
    /// return probes, or still running at the end.
    untimed: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    max_ns: u64,
    histogram: Vec<Bucket>,
}

#[derive(Serialize, Clone, Copy)]
struct Bucket {
    le_ns: u64,
    count: u64,
}

/// The upper bound of the bucket holding quantile `q`, capped by the maximum.
fn quantile(histogram: &[Bucket], count: u64, q: f64, max: u64) -> u64 {
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for b in histogram {
        seen += b.count;
        if seen >= rank {
            return b.le_ns.min(max);
        }
    }
    max
}

fn rows(session: &Session) -> Result<Vec<Row>, CliError> {
    let timing = Timing::open(session.object())?;
    let mut rows = Vec::new();
    let several = session.several_binaries();
    for f in &session.functions() {
        let d = timing.get(f.cookie as u32)?;
        let max = d.max_ns;
        let histogram: Vec<Bucket> = d
            .buckets
            .iter()
            .map(|&(b, count)| Bucket {
                le_ns: Durations::upper_ns(b),
                count,
            })
            .collect();
        let timed = d.timed();
        rows.push(Row {
            id: FunctionId::of(f, several),
            count: d.entered.max(timed),
            timed,
            untimed: d.untimed(),
            p50_ns: quantile(&histogram, timed, 0.50, max),
            p90_ns: quantile(&histogram, timed, 0.90, max),
            p99_ns: quantile(&histogram, timed, 0.99, max),
            max_ns: max,
            histogram,
        });
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cookie.cmp(&b.id.cookie)));
    Ok(rows)
}

fn print(out: &mut (impl Write + ?Sized), rows: &[Row]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "FUNCTION", "CALLS", "P50", "P90", "P99", "MAX"
    )?;
    for r in rows {
        let name = &r.id.label;
        writeln!(
            out,
            "{:<36} {:>7} {:>8} {:>8} {:>8} {:>8}",
            human::fit(name, 36),
            human::count(r.count),
            human::nanos(r.p50_ns),
            human::nanos(r.p90_ns),
            human::nanos(r.p99_ns),
            human::nanos(r.max_ns)
        )?;
    }
    for r in rows.iter().filter(|r| r.untimed > 0) {
        writeln!(
            out,
            "{}: {} of {} calls not timed: their returns were not seen (nested deeper than the kernel's 64 return probes per thread, or still running at the end)",
            r.id.label,
            human::count(r.untimed),
            human::count(r.count)
        )?;
    }
    for r in rows.iter().filter(|r| r.timed > 0) {
        writeln!(out, "\n{}", r.id.label)?;
        let peak = r.histogram.iter().map(|b| b.count).max().unwrap_or(1);
        for b in &r.histogram {
            let bar = "#".repeat(((b.count * 40).div_ceil(peak)) as usize);
            writeln!(
                out,
                "  < {:>8} {:>8} {bar}",
                human::nanos(b.le_ns),
                human::count(b.count)
            )?;
        }
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

/// Runs `sonde latency`.
pub fn run(common: &Common) -> Result<i32, CliError> {
    if let Some(by) = common.by {
        return run_by(common, by);
    }
    let mut session = Session::start(common, "timing", &[program(common)], |n| {
        let n = n.max(1);
        vec![
            (Map::Hist, n * BUCKETS),
            (Map::MaxNs, n),
            (Map::SumNs, n),
            (Map::Counts, n),
        ]
    })?;
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
    count: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    histogram: Vec<Bucket>,
    #[serde(skip)]
    shown: String,
}

/// `sonde latency --by pid|tid|comm`: a histogram per (function, key), the
/// bucket counted in the program's `BY_KEY` map (the key known at return).
fn run_by(common: &Common, by: By) -> Result<i32, CliError> {
    use crate::record::{ByKey, BY_COMM, BY_PID, BY_TID};
    let kind = match by {
        By::Pid => BY_PID,
        By::Tid => BY_TID,
        By::Comm => BY_COMM,
        _ => {
            return Err(CliError::new(
                "latency --by takes pid, tid or comm: arguments and stacks are not known at return",
            ))
        }
    };
    let mut session = Session::start_with(
        common,
        "timing",
        &[program(common)],
        crate::filter::Site::Entry,
        |n| {
            let n = n.max(1);
            vec![
                (Map::Hist, n * BUCKETS),
                (Map::MaxNs, n),
                (Map::SumNs, n),
                (Map::Counts, n),
            ]
        },
        |s| crate::session::update_settings(s.object(), |c| c.by_kind = kind),
    )?;
    let stop = session.wait(std::time::Duration::from_secs(1), |_| {});
    let ids = session.function_ids();
    let map = sonde::maps::HashMap::<ByKey, u64>::new(Map::ByKey.of(session.object())?)?;
    // (cookie, value, comm) -> log2 buckets.
    let mut groups: std::collections::BTreeMap<(u32, u64, u64, u64), [u64; 64]> = Default::default();
    for entry in map.iter()? {
        let (key, n) = entry?;
        let bucket = key.bucket() as usize;
        groups
            .entry((key.cookie, key.value, key.comm_lo, key.comm_hi))
            .or_insert([0; 64])[bucket] += n;
    }
    let mut rows = Vec::new();
    for ((cookie, value, lo, hi), buckets) in groups {
        let Some(id) = ids.get(&u64::from(cookie)) else {
            continue;
        };
        let histogram: Vec<Bucket> = buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| Bucket {
                le_ns: Durations::upper_ns(b as u32),
                count: *n,
            })
            .collect();
        let count = histogram.iter().map(|b| b.count).sum();
        let max = histogram.last().map_or(0, |b| b.le_ns);
        let (json, shown) = crate::report::by_value(by, value, lo, hi);
        let mut key = serde_json::Map::new();
        key.insert(by.name(), json);
        rows.push(ByRow {
            id: id.clone(),
            key,
            count,
            p50_ns: quantile(&histogram, count, 0.50, max),
            p90_ns: quantile(&histogram, count, 0.90, max),
            p99_ns: quantile(&histogram, count, 0.99, max),
            histogram,
            shown,
        });
    }
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.id.cookie.cmp(&b.id.cookie))
            .then(a.shown.cmp(&b.shown))
    });
    let header = by.name().to_uppercase();
    session.finish(stop, common, rows, |out, rows| {
        writeln!(
            out,
            "{:<30} {:<16} {:>7} {:>8} {:>8} {:>8}",
            "FUNCTION", header, "CALLS", "P50", "P90", "P99"
        )?;
        for r in rows {
            writeln!(
                out,
                "{:<30} {:<16} {:>7} {:>8} {:>8} {:>8}",
                human::fit(&r.id.label, 30),
                human::fit(&r.shown, 16),
                human::count(r.count),
                human::nanos(r.p50_ns),
                human::nanos(r.p90_ns),
                human::nanos(r.p99_ns)
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_log2_buckets() {
        let h = [
            Bucket { le_ns: 1024, count: 50 },
            Bucket { le_ns: 2048, count: 40 },
            Bucket {
                le_ns: 1 << 20,
                count: 10,
            },
        ];
        assert_eq!(quantile(&h, 100, 0.5, 900_000), 1024);
        assert_eq!(quantile(&h, 100, 0.9, 900_000), 2048);
        assert_eq!(quantile(&h, 100, 0.99, 900_000), 900_000, "capped by the maximum");
        assert_eq!(quantile(&[], 0, 0.5, 0), 0);
    }
}
