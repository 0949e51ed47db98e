//! How reports name functions, and the end-of-run JSON object.

use sonde::{FunctionSet, Tier};

use crate::CliError;

/// How a report names a function: raw and demangled names, version, cookie.
#[derive(serde::Serialize)]
pub struct FunctionId {
    /// Raw symbol name.
    pub name: String,
    /// Demangled name, if mangled.
    pub demangled: Option<String>,
    /// Symbol version, if versioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The name shown in tables.
    #[serde(skip)]
    pub label: String,
    /// The cookie (index in the resolved list).
    pub cookie: u64,
}

impl FunctionId {
    /// The identity of `f` in `set`.
    pub fn of(set: &FunctionSet, f: &sonde::FunctionMatch) -> Self {
        FunctionId {
            name: f.name.clone(),
            demangled: set.demangled(f).map(str::to_string),
            version: f.symbol.version.clone(),
            label: set.label(f),
            cookie: f.cookie,
        }
    }
}

/// The end-of-run JSON object of `count` and `latency`.
#[derive(serde::Serialize)]
struct Report<T> {
    /// The tier that ran.
    pub tier: String,
    /// One row per function.
    pub functions: Vec<T>,
}

/// Writes `{"tier", "functions"}` as one line.
pub fn write_report<T: serde::Serialize>(
    out: &mut impl std::io::Write,
    tier: Tier,
    functions: Vec<T>,
) -> Result<(), CliError> {
    let report = Report {
        tier: tier.name().to_string(),
        functions,
    };
    serde_json::to_writer(&mut *out, &report).map_err(|e| CliError::new(e.to_string()))?;
    writeln!(out)?;
    Ok(())
}
