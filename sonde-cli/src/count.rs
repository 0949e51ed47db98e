//! `sonde count`: calls per function.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde::Serialize;
use sonde::maps::PerCpuArray;

use crate::human;
use crate::report::FunctionId;
use crate::session::{Common, Session};
use crate::CliError;

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    id: FunctionId,
    count: u64,
}

fn rows(session: &Session) -> Result<Vec<Row>, CliError> {
    let counts = PerCpuArray::<u64>::new(session.object().map("COUNTS")?)?;
    let several = session.several_binaries();
    let functions = session.functions();
    let mut rows = Vec::with_capacity(functions.len());
    for f in &functions {
        let count = counts.get(f.cookie as u32)?.iter().sum();
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

/// Runs `sonde count`.
pub fn run(common: &Common) -> Result<i32, CliError> {
    let mut session = Session::start(common, "counting calls of", &["count"], |n| vec![("COUNTS", n.max(1))])?;
    let live = !common.json && common.output.is_none() && std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let stop = session.wait(Duration::from_secs(1), |s| {
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
    session.finish(stop, common, rows, |out, rows| {
        if drawn > 0 {
            write!(out, "\x1b[{drawn}A\x1b[J")?;
        }
        table(out, rows, None)?;
        let total: u64 = rows.iter().map(|r| r.count).sum();
        writeln!(out, "{} calls in {seconds:.1} s, tier {tier}", human::count(total))
    })
}
