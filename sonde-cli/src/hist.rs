//! `sonde hist`: the distribution of an argument or of the return value, per
//! function, counted in the program (log2 or linear buckets), like BCC's
//! argdist.

use std::time::Duration;

use serde::Serialize;

use crate::args::Common;
use crate::error::CliError;
use crate::human;
use crate::probes::{Map, Program};
use crate::record::BUCKETS;
use crate::report::FunctionId;
use crate::session::Session;

/// What `sonde hist` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Of {
    /// Argument N (0..=5).
    Arg(u8),
    /// The return value.
    Ret,
}

/// Parses `--of argN|ret`.
pub fn parse_of(s: &str) -> Result<Of, String> {
    if s == "ret" {
        return Ok(Of::Ret);
    }
    match s.strip_prefix("arg").and_then(|n| n.parse::<u8>().ok()) {
        Some(n) if n <= 5 => Ok(Of::Arg(n)),
        _ => Err(format!("`{s}`: arg0..arg5 or ret")),
    }
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    id: FunctionId,
    count: u64,
    histogram: Vec<Bucket>,
}

/// Values in `[ge, lt)` (for log2, `[2^(b-1), 2^b)`; bucket 0 holds 0).
#[derive(Serialize, Clone, Copy)]
struct Bucket {
    ge: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    lt: Option<u64>,
    count: u64,
}

/// The range of bucket `b`.
fn range(b: u32, step: u64) -> (u64, Option<u64>) {
    if step > 0 {
        let ge = u64::from(b).saturating_mul(step);
        // The last linear bucket takes everything above.
        let lt = (b < BUCKETS - 1).then(|| ge.saturating_add(step));
        return (ge, lt);
    }
    match b {
        0 => (0, Some(1)),
        b => (1u64 << (b - 1), 1u64.checked_shl(b)),
    }
}

/// Runs `sonde hist`.
pub fn run(common: &Common, of: Of, linear: Option<u64>) -> Result<i32, CliError> {
    if common.by.is_some() {
        return Err(CliError::new(
            "--by breaks down `sonde count`; here it has nothing to do",
        ));
    }
    common.no_interval("hist")?;
    if linear == Some(0) {
        return Err(CliError::new("--linear 0: the bucket width must be at least 1"));
    }
    let step = linear.unwrap_or(0);
    let (program, what) = match of {
        Of::Arg(n) => (Program::HistArg, u64::from(n)),
        Of::Ret => (Program::HistReturn, 6),
    };
    let site = match of {
        Of::Arg(_) => crate::filter::Site::Entry,
        Of::Ret => crate::filter::Site::Return,
    };
    let mut session = Session::start_with(
        common,
        "measuring",
        &[program],
        site,
        |n| vec![(Map::Values, n.max(1).saturating_mul(BUCKETS))],
        |s| {
            crate::session::update_settings(s.object(), |c| {
                c.hist_what = what;
                c.hist_step = step;
            })
        },
    )?;
    let stop = session.wait(Duration::from_millis(200), |_| {});
    let values = Map::Values.counters(session.object())?;
    let several = session.several_binaries();
    let mut rows = Vec::new();
    for f in &session.functions() {
        let mut histogram = Vec::new();
        for b in 0..BUCKETS {
            let n: u64 = values.get(f.cookie as u32 * BUCKETS + b)?.iter().sum();
            let (ge, lt) = range(b, step);
            histogram.push(Bucket { ge, lt, count: n });
        }
        // Every bucket from the first to the last non-empty one: an empty
        // bucket between two others is part of the shape.
        let first = histogram.iter().position(|b| b.count > 0);
        let last = histogram.iter().rposition(|b| b.count > 0);
        let histogram = match (first, last) {
            (Some(a), Some(z)) => histogram[a..=z].to_vec(),
            _ => Vec::new(),
        };
        rows.push(Row {
            id: FunctionId::of(f, several),
            count: histogram.iter().map(|b| b.count).sum(),
            histogram,
        });
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cookie.cmp(&b.id.cookie)));
    let label = match of {
        Of::Arg(n) => format!("arg{n}"),
        Of::Ret => "ret".into(),
    };
    session.finish(stop, common, rows, |out, rows| {
        for r in rows {
            writeln!(out, "{} {label}: {} calls", r.id.label, human::count(r.count))?;
            let peak = r.histogram.iter().map(|b| b.count).max().unwrap_or(1);
            for b in &r.histogram {
                let bar = "#".repeat(((b.count * 40).div_ceil(peak)) as usize);
                let range = match b.lt {
                    Some(lt) => format!("[{}, {})", b.ge, lt),
                    None => format!("[{}, ...)", b.ge),
                };
                writeln!(out, "  {range:>24} {:>8} {bar}", human::count(b.count))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ranges() {
        assert_eq!(range(0, 0), (0, Some(1)));
        assert_eq!(range(1, 0), (1, Some(2)));
        assert_eq!(range(4, 0), (8, Some(16)));
        assert_eq!(range(2, 10), (20, Some(30)));
        assert_eq!(range(BUCKETS - 1, 10), (630, None));
        assert_eq!(parse_of("arg2"), Ok(Of::Arg(2)));
        assert!(parse_of("arg6").is_err());
    }
}
