//! `sonde count --by KEY`: rows keyed by (function, key) in the program's
//! `BY_KEY` map, counted at entry (or at return for `ret`), with `-i` per
//! interval.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use super::Span;
use crate::args::{By, ByKeys, Common};
use crate::error::CliError;
use crate::human;
use crate::probes::{Map, Program};
use crate::record::ByKey;
use crate::report::FunctionId;
use crate::session::{report_output, Session};

/// One `--by` row: the function, its key and its calls.
#[derive(Serialize, Clone)]
struct ByRow {
    #[serde(flatten)]
    id: FunctionId,
    #[serde(flatten)]
    key: serde_json::Map<String, serde_json::Value>,
    count: u64,
    #[serde(skip)]
    shown: String,
    /// The program's key (intervals subtract by it).
    #[serde(skip)]
    raw: ByKey,
}

/// Reads `--by` rows from the program's `BY_KEY` map, stacks named.
struct ByReader {
    by: ByKeys,
    ids: std::collections::HashMap<u64, FunctionId>,
    map: sonde::maps::HashMap<ByKey, u64>,
    stacks: Option<(crate::stacks::StackMaps, crate::stacks::Stacks)>,
}

impl ByReader {
    fn new(session: &Session, by: ByKeys) -> Result<ByReader, CliError> {
        let stacks = match by.has(By::Stack) {
            true => Some(crate::stacks::StackMaps::of(session.object(), &session.functions())?),
            false => None,
        };
        Ok(ByReader {
            ids: session.function_ids(),
            map: sonde::maps::HashMap::<ByKey, u64>::new(Map::ByKey.of(session.object())?)?,
            stacks,
            by,
        })
    }

    /// Every row, most calls first.
    fn rows(&self) -> Result<Vec<ByRow>, CliError> {
        let mut rows = Vec::new();
        for entry in self.map.iter()? {
            let (mut key, count) = entry?;
            let Some(id) = self.ids.get(&u64::from(key.cookie)) else {
                continue;
            };
            let (key_map, shown) = match &self.stacks {
                Some((map, known)) => {
                    // `u64::MAX` (not captured) is negative as an id; a
                    // stack kept as addresses takes its twin's id.
                    let (stack, frames) = map.describe(known, u64::from(key.cookie), key.value as i64, key.value2);
                    key.value = stack as u64;
                    let shown = frames.join("\n");
                    let mut key_map = serde_json::Map::new();
                    key_map.insert(self.by.name(), serde_json::Value::from(frames));
                    (key_map, shown)
                }
                None => crate::report::by_fields(&self.by, &key),
            };
            rows.push(ByRow {
                id: id.clone(),
                key: key_map,
                count,
                shown,
                raw: key,
            });
        }
        if self.stacks.is_some() {
            // One row per stack, whichever map the kernel kept it in.
            rows = crate::report::merge_same(
                rows,
                |r| (r.id.cookie, r.raw.value, r.raw.value2),
                |a, b| a.count += b.count,
            );
        }
        if self.by.has(By::Container) {
            // One row per container, whatever number of its cgroups called;
            // keyed (for intervals) by what is shown, not by one cgroup's id.
            rows = crate::report::merge_same(rows, |r| (r.id.cookie, r.shown.clone()), |a, b| a.count += b.count);
            for r in &mut rows {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                r.shown.hash(&mut h);
                r.raw.value = h.finish();
                r.raw.value2 = 0;
            }
        }
        sort_by_rows(&mut rows);
        Ok(rows)
    }

    /// Calls a full map had no room for.
    fn lost(&self, session: &Session) -> Result<u64, CliError> {
        Ok(Map::ByLost.counters(session.object())?.get(0)?.iter().sum())
    }
}

fn sort_by_rows(rows: &mut [ByRow]) {
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.id.cookie.cmp(&b.id.cookie))
            // Numbers in order (signed: arguments and return values), then text.
            .then((a.raw.value as i64).cmp(&(b.raw.value as i64)))
            .then((a.raw.value2 as i64).cmp(&(b.raw.value2 as i64)))
            .then(a.shown.cmp(&b.shown))
    });
}

/// Prints `--by` rows: a table, or each row's stack under it.
fn by_table(out: &mut (impl Write + ?Sized), by: &ByKeys, rows: &[ByRow]) -> std::io::Result<()> {
    if by.has(By::Stack) {
        for r in rows {
            writeln!(out, "{:<66} {:>12}", human::fit(&r.id.label, 66), human::count(r.count))?;
            for frame in r.shown.lines() {
                writeln!(out, "    {frame}")?;
            }
        }
        return Ok(());
    }
    let header = by.name().to_uppercase();
    let w = human::key_width(&header, rows.iter().map(|r| r.shown.as_str()));
    writeln!(out, "{:<50} {:<w$} {:>12}", "FUNCTION", header, "CALLS")?;
    for r in rows {
        writeln!(
            out,
            "{:<50} {:<w$} {:>12}",
            human::fit(&r.id.label, 50),
            human::fit(&r.shown, w),
            human::count(r.count)
        )?;
    }
    Ok(())
}

/// A frame as a folded line names it: the function, without the offset and
/// source line (`main+0x1a (app.c:12)` is `main`); `;` (the separator) and
/// spaces (before the count) replaced.
fn folded_frame(frame: &str) -> String {
    let name = frame.split_whitespace().next().unwrap_or("?");
    let name = match name.rfind("+0x") {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    };
    name.replace(';', ":")
}

/// The rows as folded stacks (outermost frame first, the probed function
/// last), one line per stack, the same stacks of several rows added up.
fn folded(rows: &[ByRow]) -> Vec<String> {
    let mut stacks: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for r in rows {
        let frames: Vec<String> = r.shown.lines().rev().map(folded_frame).collect();
        *stacks.entry(frames.join(";")).or_default() += r.count;
    }
    stacks.into_iter().map(|(s, n)| format!("{s} {n}")).collect()
}

/// `--folded FILE` and `--flamegraph FILE.svg` of `--by stack` rows.
fn write_stack_files(common: &Common, rows: &[ByRow]) -> Result<(), CliError> {
    if common.folded.is_none() && common.flamegraph.is_none() {
        return Ok(());
    }
    let lines = folded(rows);
    let create = |path: &std::path::Path| {
        std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
    };
    if let Some(path) = &common.folded {
        let mut out = create(path)?;
        for l in &lines {
            writeln!(out, "{l}")?;
        }
        out.flush()?;
    }
    if let Some(path) = &common.flamegraph {
        let mut options = inferno::flamegraph::Options::default();
        options.title = "sonde count --by stack".to_string();
        options.count_name = "calls".to_string();
        if lines.is_empty() {
            return Err(CliError::new(format!(
                "{}: no stacks were counted, so there is no flame graph to draw",
                path.display()
            )));
        }
        let out = create(path)?;
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
            .map_err(|e| CliError::new(format!("cannot draw the flame graph in {}: {e}", path.display())))?;
    }
    Ok(())
}

/// One `-i` interval's `--by` rows (JSON).
#[derive(Serialize)]
struct ByInterval<'a> {
    interval: Span,
    rows: &'a [ByRow],
}

/// Prints the `--by` rows' calls since `previous` (by key), and remembers the totals.
fn print_by_interval(
    out: &mut dyn Write,
    json: bool,
    by: &ByKeys,
    rows: Vec<ByRow>,
    previous: &mut std::collections::HashMap<ByKey, u64>,
    span: Span,
) -> Result<(), CliError> {
    let mut deltas: Vec<ByRow> = rows
        .into_iter()
        .filter_map(|mut r| {
            let before = previous.insert(r.raw, r.count).unwrap_or(0);
            r.count -= before.min(r.count);
            (r.count > 0).then_some(r)
        })
        .collect();
    sort_by_rows(&mut deltas);
    if json {
        let record = ByInterval {
            interval: span,
            rows: &deltas,
        };
        serde_json::to_writer(&mut *out, &record).map_err(|e| CliError::new(e.to_string()))?;
        writeln!(out)?;
    } else {
        writeln!(out, "-- {:.1} s to {:.1} s", span.start_s, span.end_s)?;
        by_table(out, by, &deltas)?;
    }
    out.flush()?;
    Ok(())
}

/// `sonde count --by KEY`: rows keyed by (function, key) in the program's
/// map, counted at entry, or at return for `ret`; with `-i`, each interval's.
pub(super) fn run_by(common: &Common, by: ByKeys) -> Result<i32, CliError> {
    let [(kind, arg), (kind2, arg2)] = by.settings();
    let (program, site) = match by.has(By::Ret) {
        true => (Program::CountReturn, crate::filter::Site::Return),
        false => (Program::CountFiltered, crate::filter::Site::Entry),
    };
    let mut session = Session::start_with(
        common,
        "counting calls of",
        &[program],
        site,
        |n| vec![(Map::Counts, n.max(1))],
        |s| {
            // Stacks at functions' first instructions: their callers at the
            // stack pointer (not inside a USDT probe's function).
            let entries = !s.functions().iter().any(|f| f.function.usdt.is_some());
            crate::session::update_settings(s.object(), |c| {
                c.by_arg = arg;
                c.by_kind = kind;
                c.by_arg2 = arg2;
                c.by_kind2 = kind2;
                c.by_caller = u64::from(entries && by.has(By::Stack));
            })
        },
    )?;
    let reader = ByReader::new(&session, by.clone())?;
    let mut previous = std::collections::HashMap::new();
    let mut last = 0.0f64;
    let every = common.interval.unwrap_or(Duration::from_millis(200));
    let stop = session.wait(every, |s| {
        if common.interval.is_none() {
            return;
        }
        let now = s.started.elapsed().as_secs_f64();
        if let (Ok(rows), Ok(mut out)) = (reader.rows(), report_output(common)) {
            let span = Span {
                start_s: last,
                end_s: now,
            };
            let _ = print_by_interval(&mut out, common.json, &by, rows, &mut previous, span);
        }
        last = now;
    });
    let rows = reader.rows()?;
    let (seconds, tier) = (session.started.elapsed().as_secs_f64(), session.tier());
    if common.interval.is_some() {
        // The last, partial interval: the intervals add up to the totals.
        let span = Span {
            start_s: last,
            end_s: seconds,
        };
        // The same read as the totals: a second read could count calls made since.
        let again = rows.clone();
        print_by_interval(
            &mut report_output(common)?,
            common.json,
            &by,
            again,
            &mut previous,
            span,
        )?;
    }
    if by.has(By::Stack) {
        write_stack_files(common, &rows)?;
    }
    let lost = reader.lost(&session)?;
    if lost > 0 {
        eprintln!(
            "sonde: {lost} calls not counted: more than 16,384 (function, {}) keys",
            by.name()
        );
    }
    session.finish(stop, common, rows, |out, rows| {
        by_table(out, &by, rows)?;
        let total: u64 = rows.iter().map(|r| r.count).sum();
        writeln!(out, "{} calls in {seconds:.1} s, tier {tier}", human::count(total))
    })
}
