//! `sonde list` and `sonde features`: nothing attached.

use std::io::Write;

use serde::Serialize;
use sonde::{Feature, Features, Functions, Scope, Tier};

use crate::error::CliError;

#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    demangled: Option<&'a str>,
    version: Option<String>,
    cookie: u64,
    address: u64,
    file_offset: u64,
    /// Where its probes go: `file_offset`, or 4 bytes on past an `endbr64`.
    probe_offset: u64,
    size: u64,
    ifunc: bool,
    /// For an ifunc: the implementation probed instead of its resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    implementation: Option<String>,
}

#[derive(Serialize)]
struct Listing<'a> {
    binary: &'a std::path::Path,
    functions: Vec<Listed<'a>>,
}

/// Runs `sonde list`: `TARGET [PATTERN...]` (every function without patterns),
/// or `BINARY:PATTERN...` for several binaries (cookies numbered across them,
/// as `count` gives them; with `--json`, one object per binary and line).
pub fn list(target: &str, patterns: &[String], pid: Option<u32>, json: bool) -> Result<i32, CliError> {
    let groups = if crate::args::split_spec(target).is_some() || !patterns.is_empty() {
        crate::args::probe_groups(target, patterns)?
    } else {
        vec![(target.to_string(), vec!["*".to_string()])]
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first_cookie = 0u64;
    for (binary, patterns) in groups {
        let mut q = Functions::in_binary(&binary).patterns(patterns);
        if let Some(pid) = pid {
            q = q.pid(pid);
        }
        let set = q.resolve()?;
        if json {
            let functions: Vec<Listed> = set
                .iter()
                .map(|f| {
                    let symbol = set.symbol(f);
                    Listed {
                        name: &f.name,
                        demangled: set.demangled(f),
                        version: set.versioned_name(f),
                        cookie: first_cookie + f.cookie,
                        // A USDT point's own address.
                        address: symbol
                            .map(|s| s.address)
                            .or(f.usdt.as_ref().map(|u| u.address))
                            .unwrap_or_default(),
                        file_offset: f.file_offset,
                        probe_offset: f.probe_offset(),
                        size: symbol.map_or(0, |s| s.size),
                        ifunc: symbol.is_some_and(|s| s.ifunc),
                        implementation: f.implementation.as_ref().map(|m| m.label()),
                    }
                })
                .collect();
            let listing = Listing {
                binary: set.path(),
                functions,
            };
            serde_json::to_writer(&mut out, &listing).map_err(|e| CliError::new(e.to_string()))?;
            writeln!(out)?;
        } else {
            writeln!(out, "{:>6} {:>12} {:>7}  FUNCTION", "COOKIE", "OFFSET", "SIZE")?;
            for f in set.iter() {
                let symbol = set.symbol(f);
                let name = set.versioned_name(f).unwrap_or_else(|| set.display_name(f).to_string());
                let note = match (&f.implementation, symbol.is_some_and(|s| s.ifunc), &f.usdt) {
                    (_, _, Some(u)) => {
                        let nop5 = match f.nop5_offset {
                            None => "",
                            Some(_) if sonde::Features::current().has(sonde::Feature::UprobeNop5) => {
                                "; nop; nop5: probed on the nop5, no trap"
                            }
                            Some(_) => "; nop; nop5: probed on the nop (this kernel traps on both)",
                        };
                        format!(
                            "  [args: {}{}{nop5}]",
                            if u.args_text.is_empty() { "none" } else { &u.args_text },
                            u.semaphore.map_or(String::new(), |s| format!("; semaphore at {s:#x}"))
                        )
                    }
                    (Some(m), _, None) => format!("  [ifunc: calls reach {}, probed there]", m.label()),
                    (None, true, None) => {
                        "  [ifunc resolver: runs once per binding; implementation unknown here]".to_string()
                    }
                    (None, false, None) if f.entry_skip > 0 && set.is_go() => format!(
                        "  [probed at +{}, past Go's stack check: a call that grows its stack is seen once]",
                        f.entry_skip
                    ),
                    (None, false, None) if f.entry_skip > 0 => format!(
                        "  [probed at +{}, past endbr64 (which the kernel single-steps): one trap a hit, not two]",
                        f.entry_skip
                    ),
                    (None, false, None) => String::new(),
                };
                // The size of what is probed: the implementation's for an ifunc.
                let size = f
                    .implementation
                    .as_ref()
                    .map_or(symbol.map_or(0, |s| s.size), |m| m.size);
                writeln!(
                    out,
                    "{:>6} {:>#12x} {:>7}  {}{}",
                    first_cookie + f.cookie,
                    f.file_offset,
                    size,
                    crate::human::text(&name),
                    crate::human::text(&note)
                )?;
            }
            writeln!(
                out,
                "{} functions in {}",
                set.len(),
                crate::human::text(&set.path().display().to_string())
            )?;
            if let Some(d) = set.symbols().debug_file() {
                writeln!(
                    out,
                    "symbols from debug file {}",
                    crate::human::text(&d.display().to_string())
                )?;
            }
        }
        first_cookie += set.len() as u64;
    }
    out.flush()?;
    Ok(0)
}

#[derive(Serialize)]
struct TierState {
    tier: &'static str,
    scope: &'static str,
    usable: bool,
    missing: Vec<&'static str>,
}

/// Runs `sonde features`.
pub fn features(json: bool) -> Result<i32, CliError> {
    // Probing loads tiny programs and opens perf events: without privileges every
    // probe would fail and every feature would read as missing.
    crate::system::require_privileges("to probe what the kernel supports (it loads test programs)")?;
    let f = Features::current();
    let scopes = [
        ("all processes", Scope::AllProcesses),
        ("one process", Scope::Process(1)),
    ];
    let tiers: Vec<TierState> = scopes
        .iter()
        .flat_map(|(label, scope)| {
            Tier::ALL.into_iter().map(move |t| {
                let missing: Vec<&'static str> = t
                    .requires(*scope)
                    .into_iter()
                    .filter(|x| !f.has(*x))
                    .map(Feature::name)
                    .collect();
                TierState {
                    tier: t.name(),
                    scope: label,
                    usable: missing.is_empty(),
                    missing,
                }
            })
        })
        .collect();
    // Session programs (`latency`): as an attach would decide (native on
    // multi with the session link and its kernel functions).
    let session =
        sonde::SessionMode::expected(&sonde::AttachOptions::default()).unwrap_or(sonde::SessionMode::Emulated);
    let mut out = std::io::stdout().lock();
    if json {
        let feats: serde_json::Map<String, serde_json::Value> = Feature::ALL
            .into_iter()
            .map(|x| (x.name().to_string(), f.has(x).into()))
            .collect();
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"kernel": f.kernel_release, "features": feats, "tiers": tiers, "sessions": session.short_name()}),
        )
        .map_err(|e| CliError::new(e.to_string()))?;
        writeln!(out)?;
    } else {
        write!(out, "{f}")?;
        for (label, _) in scopes {
            let usable: Vec<&str> = tiers
                .iter()
                .filter(|t| t.scope == label && t.usable)
                .map(|t| t.tier)
                .collect();
            writeln!(out, "tier order, {label}: {}", usable.join(" > "))?;
        }
        for t in tiers.iter().filter(|t| !t.usable && t.scope == "one process") {
            writeln!(out, "  {} unavailable: needs {}", t.tier, t.missing.join(", "))?;
        }
        match session {
            sonde::SessionMode::Native => writeln!(
                out,
                "session programs: native (one program and link at entry and return)"
            )?,
            _ => writeln!(
                out,
                "session programs: emulated (an entry and a return copy; native needs uprobe_session, Linux 6.13+)"
            )?,
        }
    }
    Ok(0)
}
