//! `sonde count`: calls per function; `--by` breakdowns in `by`.

mod by;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;

use crate::args::Common;
use crate::error::CliError;
use crate::human;
use crate::probes::{Counts, Map, Program};
use crate::report::FunctionId;
use crate::session::{report_output, Session};

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    id: FunctionId,
    count: u64,
}

fn rows(session: &Session) -> Result<Vec<Row>, CliError> {
    let counts = Counts::open(session.object())?;
    let several = session.several_binaries();
    let functions = session.functions();
    let mut rows = Vec::with_capacity(functions.len());
    for f in &functions {
        let count = counts.get(f.cookie as u32)?;
        rows.push(Row {
            id: FunctionId::of(f, several),
            count,
        });
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cookie.cmp(&b.id.cookie)));
    Ok(rows)
}

/// Prints the table: the top `limit` rows (all when `None`), 80 columns.
fn table(out: &mut (impl Write + ?Sized), rows: &[Row], limit: Option<usize>) -> std::io::Result<usize> {
    writeln!(out, "{:<66} {:>12}", "FUNCTION", "CALLS")?;
    let mut lines = 1;
    let shown = limit.unwrap_or(rows.len()).min(rows.len());
    for r in &rows[..shown] {
        let name = &r.id.label;
        writeln!(out, "{:<66} {:>12}", human::fit(name, 66), human::count(r.count))?;
        lines += 1;
    }
    if shown < rows.len() {
        let rest: u64 = rows[shown..].iter().map(|r| r.count).sum();
        writeln!(
            out,
            "{:<66} {:>12}",
            format!("({} more)", rows.len() - shown),
            human::count(rest)
        )?;
        lines += 1;
    }
    Ok(lines)
}

/// One `-i` interval's calls (JSON).
#[derive(Serialize)]
struct Interval<'a> {
    interval: Span,
    functions: Vec<&'a Row>,
}

#[derive(Serialize)]
struct Span {
    start_s: f64,
    end_s: f64,
}

/// Prints the calls made since `previous` (by cookie), and remembers the totals.
fn print_interval(
    out: &mut dyn Write,
    json: bool,
    rows: Vec<Row>,
    previous: &mut std::collections::HashMap<u64, u64>,
    span: Span,
) -> Result<(), CliError> {
    let deltas: Vec<Row> = rows
        .into_iter()
        .filter_map(|mut r| {
            let before = previous.insert(r.id.cookie, r.count).unwrap_or(0);
            r.count -= before.min(r.count);
            (r.count > 0).then_some(r)
        })
        .collect();
    let mut deltas = deltas;
    deltas.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cookie.cmp(&b.id.cookie)));
    if json {
        let record = Interval {
            interval: span,
            functions: deltas.iter().collect(),
        };
        serde_json::to_writer(&mut *out, &record).map_err(|e| CliError::new(e.to_string()))?;
        writeln!(out)?;
    } else {
        writeln!(out, "-- {:.1} s to {:.1} s", span.start_s, span.end_s)?;
        table(out, &deltas, None)?;
    }
    out.flush()?;
    Ok(())
}

/// Runs `sonde count`.
pub fn run(common: &Common) -> Result<i32, CliError> {
    common.stack_files_need_count_by_stack("count")?;
    if let Some(by) = common.by.clone() {
        return by::run_by(common, by);
    }
    // The lean program unless a filter needs the other.
    let program = if common.filter.is_some() {
        Program::CountFiltered
    } else {
        Program::Count
    };
    let mut session = Session::start(common, "counting calls of", &[program], |n| {
        vec![(Map::Counts, n.max(1))]
    })?;
    let live = !common.json && common.output.is_none() && common.interval.is_none() && std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut previous = std::collections::HashMap::new();
    let mut last = 0.0f64;
    let every = common.interval.unwrap_or(Duration::from_secs(1));
    let stop = session.wait(every, |s| {
        if common.interval.is_some() {
            let now = s.started.elapsed().as_secs_f64();
            if let Ok(rows) = rows(s) {
                let span = Span {
                    start_s: last,
                    end_s: now,
                };
                if let Ok(mut out) = report_output(common) {
                    let _ = print_interval(&mut out, common.json, rows, &mut previous, span);
                }
            }
            last = now;
            return;
        }
        if !live {
            return;
        }
        if let Ok(rows) = rows(s) {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                let _ = write!(out, "\x1b[{drawn}A\x1b[J");
            }
            drawn = table(&mut out, &rows, Some(20)).unwrap_or(0);
        }
    });
    let rows = rows(&session)?;
    let (seconds, tier) = (session.started.elapsed().as_secs_f64(), session.tier());
    if common.interval.is_some() {
        // The last, partial interval: the intervals add up to the totals.
        let span = Span {
            start_s: last,
            end_s: seconds,
        };
        let mut out = report_output(common)?;
        let now: Vec<Row> = rows
            .iter()
            .map(|r| Row {
                id: r.id.clone(),
                count: r.count,
            })
            .collect();
        print_interval(&mut out, common.json, now, &mut previous, span)?;
    }
    session.finish(stop, common, rows, |out, rows| {
        if drawn > 0 {
            write!(out, "\x1b[{drawn}A\x1b[J")?;
        }
        table(out, rows, None)?;
        let total: u64 = rows.iter().map(|r| r.count).sum();
        writeln!(out, "{} calls in {seconds:.1} s, tier {tier}", human::count(total))
    })
}
