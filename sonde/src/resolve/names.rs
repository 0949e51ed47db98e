//! Glob patterns over function names (raw, demangled, versioned), and the
//! closest names when nothing matches.

/// The longest glob accepted (a name is rarely over a few hundred bytes).
pub const MAX_PATTERN: usize = 4096;

/// A glob over function names: `*` any run, `?` one character, `[abc]`, `[a-z]`,
/// `[!abc]` a set, `{a,b}` alternatives (a literal brace is escaped: `\{`).
/// Matched against the raw name, every alias, the demangled name, and, when the pattern contains `@`, `name@VER`/`name@@VER`.
///
/// ```
/// use sonde::resolve::Pattern;
/// let p = Pattern::new("str*").unwrap();
/// assert!(p.matches("strlen") && !p.matches("memcpy"));
/// assert!(Pattern::new("geo::Shape::area*").unwrap().matches("geo::Shape::area(int)"));
/// ```
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    glob: Option<globset::GlobSet>,
    /// Identifiers a mangled name must contain to demangle to a match.
    tokens: Vec<String>,
    /// Literal runs every match contains (empty with `{a,b}` alternatives):
    /// a substring test rejects most names before the glob runs.
    literals: Vec<String>,
}

/// Identifiers that mangling abbreviates (C++ `St`, `Sa`, `Ss`…, operators,
/// Rust v0 closures and impls), so they are not required verbatim.
const ABBREVIATED: &[&str] = &[
    "std",
    "allocator",
    "basic_string",
    "string",
    "istream",
    "ostream",
    "iostream",
    "char_traits",
    "operator",
    "closure",
    "impl",
    "shim",
    "anonymous",
    "namespace",
    "const",
    "unsigned",
    "signed",
    "int",
    "long",
    "short",
    "char",
    "bool",
    "void",
    "float",
    "double",
];

/// `double geo::twice<double>(double)` → `geo::twice<double>(double)`: what
/// follows the last space outside `<...>` before the parameter list, unless that
/// space belongs to an operator name (`operator new`).
pub(crate) fn without_return_type(d: &str) -> Option<&str> {
    let mut depth = 0i32;
    let mut last_space = None;
    for (i, c) in d.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            '(' if depth == 0 => {
                let start = last_space? + 1;
                return (!d[..start].trim_end().ends_with("operator")).then(|| &d[start..]);
            }
            ' ' if depth == 0 => last_space = Some(i),
            _ => {}
        }
    }
    None
}

/// The C++ constructor or destructor variant a mangled name is (`D1` complete
/// object, `D2` base object, `D0` deleting, `C1`/`C2`, `C4`/`D4` unified), by
/// its Itanium code before the end of the nested name.
pub(crate) fn structor_variant(mangled: &str) -> Option<&'static str> {
    let b = mangled.as_bytes();
    let i = (0..b.len().saturating_sub(2))
        .rev()
        .find(|&i| matches!(b[i], b'C' | b'D') && b[i + 1].is_ascii_digit() && b[i + 2] == b'E')?;
    Some(match (b[i], b[i + 1]) {
        (b'C', b'1') | (b'D', b'1') => "complete",
        (b'C', b'2') | (b'D', b'2') => "base",
        (b'C', b'3') => "allocating",
        (b'D', b'0') => "deleting",
        (b'C', b'4') | (b'D', b'4') => "unified",
        _ => return None,
    })
}

/// Whether a mangled name is worth demangling to compare with `name`.
pub(crate) fn may_be_mangled_form(name: &str) -> bool {
    name.contains("::") || name.contains(['(', '<', ' '])
}

impl Pattern {
    /// Whether `text` is a glob (has `*`, `?` or `[`) rather than a name.
    pub fn is_glob_text(text: &str) -> bool {
        text.contains(['*', '?', '['])
    }

    /// Parses a pattern; an unbalanced `[` is an error, and so is a glob over
    /// 4,096 bytes (`MAX_PATTERN`) or one too complex to compile.
    pub fn new(text: &str) -> Result<Self, super::TargetError> {
        let is_glob = Self::is_glob_text(text);
        let bad = |reason: String| super::TargetError::BadPattern {
            pattern: text.chars().take(80).collect(),
            reason,
        };
        let glob = if is_glob {
            if text.len() > MAX_PATTERN {
                return Err(bad(format!("longer than {MAX_PATTERN} bytes")));
            }
            let glob = globset::GlobBuilder::new(text)
                .literal_separator(false)
                .backslash_escape(true)
                .empty_alternates(false)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            // A set's build reports a regex too large; a lone matcher panics.
            let set = globset::GlobSetBuilder::new()
                .add(glob)
                .build()
                .map_err(|e| bad(format!("too complex ({})", e.kind())))?;
            Some(set)
        } else {
            None
        };
        Ok(Pattern {
            tokens: tokens(text),
            literals: literals(text),
            text: text.to_string(),
            glob,
        })
    }

    /// A pattern that matches `text` literally.
    pub(crate) fn exact(text: &str) -> Self {
        Pattern {
            tokens: tokens(text),
            literals: Vec::new(),
            text: text.to_string(),
            glob: None,
        }
    }

    /// Whether raw name `mangled` contains every identifier the pattern spells
    /// before its first `(`, `<` or `{`: if not, its demangled form cannot match.
    pub(crate) fn may_demangle_to(&self, mangled: &str) -> bool {
        (mangled.starts_with("_Z") || mangled.starts_with("_R") || mangled.starts_with("__Z"))
            && self.tokens.iter().all(|t| mangled.contains(t.as_str()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has wildcards (else it names one function).
    pub fn is_glob(&self) -> bool {
        self.glob.is_some()
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match &self.glob {
            Some(g) => self.literals.iter().all(|l| name.contains(l.as_str())) && g.is_match(name),
            None => self.text == name,
        }
    }

    /// Whether demangled name `d` matches: as [`Pattern::matches`], and an exact
    /// name without parameters selects every overload (`ns::f` matches `ns::f(int)`).
    /// A function template's demangled name starts with its return type
    /// (`double geo::twice<double>(double)`): the qualified name without it is
    /// matched too, so `geo::*` finds it.
    pub fn matches_demangled(&self, d: &str) -> bool {
        let one = |d: &str| {
            self.matches(d)
                || (!self.is_glob() && d.strip_prefix(self.text.as_str()).is_some_and(|r| r.starts_with('(')))
        };
        one(d) || without_return_type(d).is_some_and(one)
    }

    /// Whether the pattern can only match a demangled name worth computing:
    /// demangled names contain `::`, spaces or parentheses, or are matched by a
    /// leading wildcard.
    pub(crate) fn needs_demangled(&self) -> bool {
        self.text.contains("::") || self.text.contains(['(', ' ', '<']) || self.text.starts_with(['*', '?', '['])
    }

    pub(crate) fn has_at(&self) -> bool {
        self.text.contains('@')
    }
}

/// The literal runs between wildcards; none when the pattern has alternatives
/// or escapes (then every name goes to the glob).
fn literals(text: &str) -> Vec<String> {
    if text.contains(['{', '\\']) {
        return Vec::new();
    }
    runs_outside_classes(text, |c| matches!(c, '*' | '?'))
}

fn tokens(text: &str) -> Vec<String> {
    let head = text.split(['(', '<', '{']).next().unwrap_or("");
    let mut out = runs_outside_classes(head, |c| !(c.is_alphanumeric() || c == '_'));
    out.retain(|t| !ABBREVIATED.contains(&t.as_str()));
    out
}

/// The runs of `text` between separator characters, character classes
/// (`[ab]`, which spell no fixed text) counting as separators.
fn runs_outside_classes(text: &str, is_separator: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_class = false;
    for c in text.chars() {
        let separates = match c {
            '[' if !in_class => {
                in_class = true;
                true
            }
            ']' if in_class => {
                in_class = false;
                true
            }
            _ => in_class || is_separator(c),
        };
        if !separates {
            cur.push(c);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Up to `n` names close to `wanted`: same name in another case, containing it
/// or contained in it, else the smallest edit distance (at most a third of the
/// length).
pub(crate) fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a str>, n: usize) -> Vec<String> {
    // No symbol is this long: comparing would only cost time.
    if wanted.len() > 1024 {
        return Vec::new();
    }
    let lower = wanted.to_lowercase();
    let budget = (wanted.len() / 3).max(1);
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|name| {
            let l = name.to_lowercase();
            if l.contains(&lower) || (l.len() >= 3 && lower.contains(&l)) {
                Some((0, name))
            } else if l.len().abs_diff(lower.len()) <= budget {
                let d = edit_distance(&lower, &l);
                (d <= budget).then_some((d, name))
            } else {
                None
            }
        })
        .collect();
    scored.sort_unstable();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, s)| s.to_string()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_types_and_structor_variants() {
        assert_eq!(
            without_return_type("double geo::twice<double>(double)"),
            Some("geo::twice<double>(double)")
        );
        assert_eq!(without_return_type("geo::Shape::area(int) const"), None);
        assert_eq!(without_return_type("operator new(unsigned long)"), None);
        assert_eq!(
            without_return_type("std::pair<int, int> f<std::pair<int, int> >(int)"),
            Some("f<std::pair<int, int> >(int)")
        );
        assert!(Pattern::new("geo::*")
            .unwrap()
            .matches_demangled("double geo::twice<double>(double)"));
        assert_eq!(structor_variant("_ZN2SqD1Ev"), Some("complete"));
        assert_eq!(structor_variant("_ZN2SqD2Ev"), Some("base"));
        assert_eq!(structor_variant("_ZN2SqD0Ev"), Some("deleting"));
        assert_eq!(structor_variant("_ZN3geo5Shape4areaEi"), None);
    }

    #[test]
    fn globs() {
        let p = Pattern::new("sonde_fn_[ab]").unwrap();
        assert!(p.matches("sonde_fn_a") && p.matches("sonde_fn_b") && !p.matches("sonde_fn_c"));
        assert!(Pattern::new("a?c").unwrap().matches("abc"));
        assert!(!Pattern::new("exact").unwrap().is_glob());
        assert!(Pattern::new("[abc").is_err());
        assert_eq!(literals("*HashMap*insert?x[ab]c"), ["HashMap", "insert", "x", "c"]);
        assert!(literals("{a,b}*").is_empty());
        let p = Pattern::new("*alloc*").unwrap();
        assert!(p.matches("malloc") && p.matches("__libc_calloc") && !p.matches("free"));
    }

    #[test]
    fn demangling_is_skipped_only_when_it_cannot_match() {
        let p = Pattern::new("*HashMap*insert*").unwrap();
        assert!(p.may_demangle_to("_ZN3std11collections4hash3map20HashMap$LT$K$C$V$GT$6insert17h0123456789abcdefE"));
        assert!(!p.may_demangle_to("_ZN3std11collections4hash3map20HashMap$LT$K$C$V$GT$3get17h0123456789abcdefE"));
        assert!(!p.may_demangle_to("malloc"));
        // std:: is `St` in C++ manglings: not required.
        assert!(Pattern::new("std::vector*push_back*")
            .unwrap()
            .may_demangle_to("_ZNSt6vectorIiSaIiEE9push_backEOi"));
        assert!(Pattern::new("geo::Shape::area(int)")
            .unwrap()
            .may_demangle_to("_ZN3geo5Shape4areaEi"));
        assert!(Pattern::new("sonde_[ab]*").unwrap().may_demangle_to("_ZN5sonde_3fooE"));
    }

    #[test]
    fn closest_names() {
        let names = ["malloc", "calloc", "realloc", "free", "memcpy"];
        assert_eq!(closest("maloc", names.iter().copied(), 2), vec!["malloc"]);
        assert_eq!(
            closest("alloc", names.iter().copied(), 5),
            vec!["calloc", "malloc", "realloc"]
        );
        assert_eq!(closest("xyzzy", names.iter().copied(), 3), Vec::<String>::new());
    }
}
