//! Finding functions in a [`SymbolTable`] by name: exact names (versioned,
//! aliases, demangled), glob patterns, and what to say when nothing matches.

use std::path::PathBuf;

use std::sync::OnceLock;

use super::elf::name_hash;
use super::names::{self, Pattern};
use super::{FunctionSymbol, SymbolTable, TargetError};

impl SymbolTable {
    /// Indices of the functions named (or aliased) `name`: a hash lookup.
    pub(super) fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = usize> + 'a {
        let h = name_hash(name);
        let start = self.by_name_more.partition_point(|&(x, _)| x < h);
        let more = self.by_name_more[start..]
            .iter()
            .take_while(move |&&(x, _)| x == h)
            .map(|&(_, i)| i);
        self.by_name
            .get(&h)
            .copied()
            .into_iter()
            .chain(more)
            .map(|i| i as usize)
            .filter(move |&i| {
                let f = &self.functions[i];
                &*f.name == name || f.aliases.iter().any(|a| &**a == name)
            })
    }

    /// The demangled name of function `index` (Rust legacy and v0, C++),
    /// computed on first use and kept.
    pub fn demangled(&self, index: usize) -> Option<&str> {
        let f = self.functions.get(index)?;
        self.demangled
            .get_or_init(|| (0..self.functions.len()).map(|_| OnceLock::new()).collect())
            .get(index)?
            .get_or_init(|| super::demangle(&f.name))
            .as_deref()
    }

    /// The function `name` (`name`, `name@VER` or `name@@VER`; a demangled name
    /// also works), or an error that says why not and what is close.
    pub fn function(&self, name: &str) -> Result<&FunctionSymbol, TargetError> {
        self.function_index(name).map(|i| &self.functions[i])
    }

    /// [`SymbolTable::function`], as the function's index in
    /// [`SymbolTable::functions`] (one hash lookup for a plain name).
    pub fn function_index(&self, name: &str) -> Result<usize, TargetError> {
        self.function_index_among(name, &mut Vec::new())
    }

    /// [`SymbolTable::function_index`], leaving in `named` every function
    /// named or aliased as `name` without its version (one hash lookup serves
    /// both).
    pub(super) fn function_index_among(&self, name: &str, named: &mut Vec<usize>) -> Result<usize, TargetError> {
        let (plain, version) = match name.split_once('@') {
            Some((n, v)) => (n, Some(v.strip_prefix('@').map_or((v, false), |v| (v, true)))),
            None => (name, None),
        };
        named.clear();
        named.extend(self.named(plain));
        // One pass over the functions of that name: the version asked for; with
        // none asked, the default version, else an unversioned one, else any.
        let mut best: Option<(u8, usize)> = None;
        for &i in named.iter() {
            let f = &self.functions[i];
            let rank = match version {
                Some((v, true)) if f.version.as_deref() == Some(v) && f.default_version => 0,
                Some((v, false)) if f.version.as_deref() == Some(v) => 0,
                Some(_) => continue,
                None if f.default_version => 0,
                None if f.version.is_none() => 1,
                None => 2,
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, i));
            }
        }
        if let Some((_, i)) = best {
            return Ok(i);
        }
        if version.is_none() && names::may_be_mangled_form(name) {
            let exact = Pattern::exact(name);
            let hit = (0..self.functions.len())
                .find(|&i| exact.may_demangle_to(&self.functions[i].name) && self.demangled(i) == Some(name));
            if let Some(i) = hit {
                return Ok(i);
            }
        }
        if self.imported.contains(plain) {
            return Err(TargetError::Imported {
                symbol: name.to_string(),
                binary: self.path().to_path_buf(),
            });
        }
        Err(TargetError::NoSymbol {
            symbol: name.to_string(),
            binary: self.path().to_path_buf(),
            hint: self.hint(plain),
        })
    }

    /// The functions whose raw, versioned, alias or demangled name matches
    /// `pattern`, in address order, each once.
    ///
    /// Demangling is lazy: a name is demangled only when its raw form does not
    /// match and contains every identifier the pattern spells (mangling keeps
    /// identifiers verbatim), so a glob over 100k symbols costs milliseconds.
    pub fn matching(&self, pattern: &Pattern) -> Vec<(usize, &FunctionSymbol)> {
        let demangle = pattern.needs_demangled();
        let mut out: Vec<(usize, &FunctionSymbol)> = self
            .functions
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                pattern.matches(&f.name)
                    || f.aliases.iter().any(|a| pattern.matches(a))
                    || (f.version.is_some() && pattern.has_at() && pattern.matches(&f.versioned_name()))
                    || (demangle
                        && pattern.may_demangle_to(&f.name)
                        && self.demangled(*i).is_some_and(|d| pattern.matches_demangled(d)))
            })
            .collect();
        out.sort_by_key(|(_, f)| f.address);
        out
    }

    /// Why a name is not there, and what is close.
    pub(crate) fn hint(&self, name: &str) -> String {
        if self.stripped && self.functions.is_empty() {
            return format!(
                " (the binary is stripped and no debug file was found{}: install its debug package or give a file offset)",
                looked(&self.looked_for_debug)
            );
        }
        let close = names::closest(name, self.functions.iter().map(|f| &*f.name), 5);
        let mut hint = if close.is_empty() {
            format!(" ({} functions defined there)", self.functions.len())
        } else {
            format!(" (did you mean: {}?)", close.join(", "))
        };
        if self.stripped {
            hint.push_str(&format!(
                "; only exported symbols are available, the binary is stripped and no debug file was found{}",
                looked(&self.looked_for_debug)
            ));
        }
        hint
    }
}

fn looked(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!(" (looked for {})", list.join(", "))
    }
}
