//! Patterns over a binary's functions: the one way the CLI and library users say
//! "these functions of that binary". What a query finds is a [`FunctionSet`].

use super::name::Name;
use std::path::PathBuf;
use std::sync::Arc;

use super::names::Pattern;
use super::set::{FunctionMatch, FunctionSet, Implementation};
use super::{cache, debuginfo, find_binary, BinaryFile, FunctionSymbol, SymbolTable, TargetError};

/// A query: glob patterns over the functions of one binary or library.
///
/// ```no_run
/// # fn main() -> Result<(), sonde::Error> {
/// use sonde::{AttachOptions, Functions, Object};
/// // Every str* function of the libc process 4242 has loaded.
/// let set = Functions::in_binary("libc").pid(4242).pattern("str*").resolve()?;
/// for f in set.iter() {
///     println!("{:>4} {} at {:#x}", f.cookie, f.name, f.file_offset);
/// }
/// let mut object = Object::load(&std::fs::read("probes.bpf.o").unwrap())?;
/// // Cookie i is the i-th function of the set.
/// let attachment = object
///     .uprobe("count_calls")?
///     .attach_sites(set.targets(), &AttachOptions::default().pid(4242))?;
/// # Ok(()) }
/// ```
///
/// Patterns: `*`, `?`, `[...]` globs or exact names; matched against raw names,
/// aliases, demangled names (Rust legacy and v0, C++) and, with an `@`,
/// versioned names (`memcpy@GLIBC_2.2.5`). An exact demangled C++ name without
/// parameters (`geo::Shape::area`) selects every overload.
#[derive(Debug, Clone)]
pub struct Functions {
    binary: PathBuf,
    pid: Option<u32>,
    patterns: Vec<String>,
    debug_root: PathBuf,
    whole_table: bool,
}

impl Functions {
    /// Functions of `binary`: a path or a bare library name (see [`find_binary`]).
    pub fn in_binary(binary: impl Into<PathBuf>) -> Self {
        Functions {
            binary: binary.into(),
            pid: None,
            patterns: Vec::new(),
            debug_root: PathBuf::from(debuginfo::DEFAULT_DEBUG_ROOT),
            whole_table: false,
        }
    }

    /// Reads (and caches) the binary's whole symbol table even for a few exact
    /// names, which alone are looked up by a scan: for callers that resolve
    /// many queries on one binary (the agent's probes), where one read shared
    /// by all beats a scan each.
    pub fn whole_table(mut self) -> Self {
        self.whole_table = true;
        self
    }

    /// Looks the binary up as process `pid` sees it (its mapped libraries, its
    /// mount namespace).
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Adds a pattern.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Adds patterns.
    pub fn patterns<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.patterns.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Looks for debug files of stripped binaries under `dir` instead of
    /// `/usr/lib/debug`.
    pub fn debug_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.debug_root = dir.into();
        self
    }

    /// Finds the binary, reads its symbols (once per file), and selects the
    /// functions. Every pattern must select at least one function; an exact name
    /// that is only imported, or absent, is an error naming the closest names.
    pub fn resolve(&self) -> Result<FunctionSet, TargetError> {
        let path = find_binary(&self.binary, self.pid)?;
        let binary = Arc::new(BinaryFile::open(&path)?);
        let table = self.table(&binary)?;
        let mut chosen: Vec<(usize, bool)> = Vec::with_capacity(self.patterns.len());
        let mut seen = vec![false; table.functions().len()];
        let mut named = Vec::new();
        // What one pattern selects (one buffer for all: 10,000 exact names
        // make no 10,000 vectors).
        let mut hits: Vec<usize> = Vec::new();
        for text in self.patterns.iter().filter(|p| !is_usdt(p)) {
            let glob = Pattern::is_glob_text(text);
            hits.clear();
            if glob {
                hits.extend(table.matching(&Pattern::new(text)?).into_iter().map(|(i, _)| i));
            } else {
                // An exact name: one lookup (versions, aliases, demangled names);
                // a C++ name without parameters selects its overloads.
                match table.function_index_among(text, &mut named) {
                    // Every unversioned symbol of that name: two `static`
                    // functions of one name are two sites, both asked for.
                    Ok(i) => {
                        let all = table.functions();
                        let f = &all[i];
                        hits.push(i);
                        if f.version.is_none() {
                            // Through the name index (a scan of every function
                            // per name made 3,000 names of a 100k-function
                            // library take 18 s); the functions of the name
                            // asked are those just looked up.
                            if *f.name != *text {
                                named.clear();
                                named.extend(table.named(&f.name));
                            }
                            hits.extend(
                                named
                                    .iter()
                                    .copied()
                                    .filter(|&j| j != i && all[j].name == f.name && all[j].version.is_none()),
                            );
                        }
                    }
                    Err(e @ TargetError::NoSymbol { .. }) => {
                        let pattern = Pattern::new(text)?;
                        hits.extend(table.matching(&pattern).into_iter().map(|(i, _)| i));
                        if hits.is_empty() {
                            return Err(e);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if hits.is_empty() {
                return Err(TargetError::NoMatch {
                    pattern: text.clone(),
                    binary: table.path().to_path_buf(),
                    hint: table.hint(text.trim_matches(['*', '?'])),
                });
            }
            for &i in &hits {
                if !std::mem::replace(&mut seen[i], true) {
                    chosen.push((i, !glob));
                }
            }
        }
        // Functions whose first instruction the kernel's uprobes refuse: an error
        // for a name asked for exactly, left out (and listed) for a glob. The
        // others are the set, numbered in order (one pass).
        let mut skipped = Vec::new();
        let mut functions: Vec<FunctionMatch> = Vec::with_capacity(chosen.len());
        // Told from the mapping the table holds: the file is not mapped again.
        let go = binary.is_go_in(table.contents());
        for (i, exact) in chosen {
            let f = &table.functions()[i];
            match table.refusal_at(f.file_offset) {
                None => {}
                Some(reason) if exact => {
                    return Err(TargetError::NotProbeable {
                        symbol: f.name.to_string(),
                        binary: table.path().to_path_buf(),
                        reason,
                    })
                }
                Some(reason) => {
                    skipped.push((f.name.to_string(), reason));
                    continue;
                }
            }
            let implementation = if f.ifunc {
                self.implementation(&binary, &table, f)
            } else {
                None
            };
            // An ifunc's implementation keeps its entry (its size may be unknown).
            let entry_skip = match implementation {
                Some(_) => 0,
                None => table.entry_skip_at(f.file_offset, f.size, go),
            };
            functions.push(FunctionMatch {
                cookie: functions.len() as u64,
                name: f.name.clone(),
                index: i,
                size: f.size,
                file_offset: implementation.as_ref().map_or(f.file_offset, |m| m.file_offset),
                entry_skip,
                implementation,
                usdt: None,
                nop5_offset: None,
            });
        }
        if functions.is_empty() {
            if let Some((name, reason)) = skipped.first() {
                return Err(TargetError::NotProbeable {
                    symbol: name.to_string(),
                    binary: table.path().to_path_buf(),
                    reason,
                });
            }
        }
        self.add_usdt(&binary, &table, &mut functions)?;
        Ok(FunctionSet {
            binary,
            table,
            names: std::sync::OnceLock::new(),
            functions,
            skipped,
        })
    }
}

/// Up to this many exact names of a binary not read yet are looked up by a scan
/// for just them (as libbpf does) instead of reading the whole table. Measured
/// on a binary of 10,000 functions: 1,000 names cost 1.4 ms this way against
/// 2.1 ms for the whole table (libbpf: 1.8 ms); all 10,000 cost more this way
/// (10.6 against 9.6 ms: two scans, and every symbol kept anyway), so a
/// quarter of the symbols or more are looked up in the whole table
/// ([`SymbolTable::named_only`]).
const FEW_NAMES: usize = 4096;

/// Whether a pattern names USDT probes (`usdt:PROVIDER:NAME`).
fn is_usdt(pattern: &str) -> bool {
    pattern.starts_with("usdt:")
}

impl Functions {
    /// Appends the USDT probes the `usdt:` patterns select, each once, with
    /// the next cookies.
    fn add_usdt(
        &self,
        binary: &BinaryFile,
        table: &SymbolTable,
        functions: &mut Vec<FunctionMatch>,
    ) -> Result<(), TargetError> {
        let patterns: Vec<&String> = self.patterns.iter().filter(|p| is_usdt(p)).collect();
        if patterns.is_empty() {
            return Ok(());
        }
        let probes = super::usdt::usdt_probes(binary)?;
        for text in patterns {
            let rest = &text["usdt:".len()..];
            let (provider, name) = rest.split_once(':').unwrap_or((rest, "*"));
            let (p, n) = (
                Pattern::new(provider)?,
                Pattern::new(if name.is_empty() { "*" } else { name })?,
            );
            let hits: Vec<&super::usdt::UsdtProbe> = probes
                .iter()
                .filter(|u| p.matches(&u.provider) && n.matches(&u.name))
                .collect();
            if hits.is_empty() {
                let known: Vec<String> = probes.iter().take(8).map(super::usdt::UsdtProbe::label).collect();
                return Err(TargetError::NoMatch {
                    pattern: text.clone(),
                    binary: binary.path().to_path_buf(),
                    hint: if known.is_empty() {
                        " (it has no USDT probes: no .note.stapsdt)".to_string()
                    } else {
                        format!(
                            " (its USDT probes: {}{})",
                            known.join(", "),
                            if probes.len() > 8 { ", …" } else { "" }
                        )
                    },
                });
            }
            for u in hits {
                if functions.iter().any(|f| f.usdt.as_deref() == Some(u)) {
                    continue;
                }
                super::check_usdt_site(table, u)?;
                let nop5_offset = super::usdt_nop5(table, u);
                functions.push(FunctionMatch {
                    cookie: functions.len() as u64,
                    name: Name::from(u.label()),
                    file_offset: u.file_offset,
                    entry_skip: 0,
                    implementation: None,
                    usdt: Some(Box::new(u.clone())),
                    nop5_offset,
                    index: usize::MAX,
                    size: 0,
                });
            }
        }
        Ok(())
    }

    /// The implementation the ifunc `f` binds to here, named from the whole
    /// table (a table of a few names does not hold it), and probeable.
    fn implementation(&self, binary: &BinaryFile, table: &SymbolTable, f: &FunctionSymbol) -> Option<Implementation> {
        let offset = super::ifunc::bound_implementation(binary, &f.name, f.version.as_deref())?;
        if offset == f.file_offset || table.refusal_at(offset).is_some() {
            return None;
        }
        let full = cache::symbols_of(binary, &self.debug_root).ok()?;
        let named = full
            .code_address_of(offset)
            .and_then(|addr| full.function_holding(addr))
            .filter(|(g, _)| g.file_offset == offset)
            .map(|(g, _)| (g.name.clone(), g.size));
        Some(Implementation {
            name: named.as_ref().map(|(n, _)| n.clone()),
            size: named.map_or(0, |(_, s)| s),
            file_offset: offset,
        })
    }

    /// The symbols to resolve against: the cached table; for a few exact names
    /// of a binary not read yet, a table of just those (when every one is there
    /// by its raw name); else the whole table, read and cached.
    fn table(&self, binary: &BinaryFile) -> Result<Arc<SymbolTable>, TargetError> {
        if let Some(t) = cache::cached(binary, &self.debug_root) {
            return Ok(t);
        }
        let exact = !self.whole_table
            && !self.patterns.is_empty()
            && self.patterns.len() <= FEW_NAMES
            && self.patterns.iter().all(|p| !Pattern::is_glob_text(p));
        let mut data = None;
        if exact {
            let names: Vec<&str> = self.patterns.iter().map(String::as_str).collect();
            // One mapping serves the scan and, when it declines, the whole read.
            match SymbolTable::named_only(binary, binary.map()?, &names)? {
                Ok(t) if names.iter().all(|n| t.function_index(n).is_ok()) => return Ok(Arc::new(t)),
                Ok(_) => {}
                Err(mapped) => data = Some(mapped),
            }
        }
        cache::symbols_of_mapped(binary, &self.debug_root, data)
    }
}
