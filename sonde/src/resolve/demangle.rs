//! Demangling: Rust (legacy and v0) and C++ symbol names as people write them.

/// The demangled form of a symbol name, if it is mangled: Rust (legacy `_ZN…E`
/// and v0 `_R…`, shown without the hash suffix) or C++ (Itanium `_Z…`).
///
/// ```
/// use sonde::resolve::demangle;
/// assert_eq!(demangle("_ZN4core3fmt5write17h0123456789abcdefE").as_deref(), Some("core::fmt::write"));
/// assert_eq!(demangle("_ZN3geo5Shape4areaEi").as_deref(), Some("geo::Shape::area(int)"));
/// assert_eq!(demangle("malloc"), None);
/// ```
pub fn demangle(name: &str) -> Option<String> {
    if !(name.starts_with("_Z") || name.starts_with("_R") || name.starts_with("__Z") || name.starts_with("__R")) {
        return None;
    }
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        let text = format!("{d:#}");
        return Some(strip_inherent_impl(&text).unwrap_or(text));
    }
    if let Some(d) = literal_operator(name) {
        return Some(d);
    }
    let sym = cpp_demangle::Symbol::new(name).ok()?;
    sym.demangle(&cpp_demangle::DemangleOptions::default()).ok()
}

/// A user-defined literal operator (`_Zli3_kmy`, `operator"" _km(unsigned long
/// long)`), which `cpp_demangle` spells wrongly: demangled with a placeholder
/// name in its place, then written as `c++filt` writes it.
fn literal_operator(name: &str) -> Option<String> {
    const PLACEHOLDER: &str = "SondeLiteralOperator";
    // `li <source-name>` as the first unqualified name, at top level or nested.
    let at = ["_Zli", "_ZNli"]
        .iter()
        .find(|p| name.starts_with(*p))
        .map(|p| p.len() - 2)
        .or_else(|| {
            let n = name.strip_prefix("_ZN")?;
            // After one or more `<len><id>` prefixes of a nested name.
            let mut i = 0;
            let b = n.as_bytes();
            while i < b.len() && b[i].is_ascii_digit() {
                let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let len: usize = n[i..i + digits].parse().ok()?;
                i += digits + len;
                if n.get(i..)?.starts_with("li") {
                    return Some(3 + i);
                }
            }
            None
        })?;
    let rest = &name[at + 2..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let len: usize = rest.get(..digits)?.parse().ok()?;
    let id = rest.get(digits..digits + len)?;
    let stand_in = format!("{PLACEHOLDER}{id}");
    let rewritten = format!("{}{}{stand_in}{}", &name[..at], stand_in.len(), &rest[digits + len..]);
    let sym = cpp_demangle::Symbol::new(rewritten.as_str()).ok()?;
    let text = sym.demangle(&cpp_demangle::DemangleOptions::default()).ok()?;
    text.contains(&stand_in)
        .then(|| text.replacen(&stand_in, &format!("operator\"\" {id}"), 1))
}

/// v0 manglings demangle an inherent method as `<a::Type>::method` where legacy
/// ones give `a::Type::method`: one spelling, the legacy one, for both, so a
/// pattern works whatever the crate was built with. Trait impls
/// (`<T as Trait>::f`) keep their brackets.
fn strip_inherent_impl(text: &str) -> Option<String> {
    let rest = text.strip_prefix('<')?;
    let mut depth = 1usize;
    for (i, c) in rest.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    let (inner, tail) = (&rest[..i], &rest[i + 1..]);
                    if inner.contains(" as ") || !tail.starts_with("::") {
                        return None;
                    }
                    return Some(format!("{inner}{tail}"));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_v0_and_legacy_and_cpp() {
        assert_eq!(
            demangle("_RNvCs1234_7mycrate3foo").as_deref(),
            Some("mycrate::foo"),
            "Rust v0"
        );
        assert_eq!(
            demangle("_ZN3std11collections4hash3map20HashMap$LT$K$C$V$GT$6insert17h0123456789abcdefE").as_deref(),
            Some("std::collections::hash::map::HashMap<K,V>::insert")
        );
        assert_eq!(
            demangle("_ZN3geo5Shape4areaEii").as_deref(),
            Some("geo::Shape::area(int, int)")
        );
        assert_eq!(demangle("_Zfoo_not_mangled"), None);
        assert_eq!(
            strip_inherent_impl("<a::Counter>::bump").as_deref(),
            Some("a::Counter::bump")
        );
        assert_eq!(strip_inherent_impl("<a::X<u8>>::f").as_deref(), Some("a::X<u8>::f"));
        assert_eq!(strip_inherent_impl("<u8 as a::T>::f"), None);
    }

    #[test]
    fn literal_operators_demangle_as_cxxfilt_does() {
        assert_eq!(
            demangle("_Zli3_kmy").as_deref(),
            Some("operator\"\" _km(unsigned long long)")
        );
        assert_eq!(
            demangle("_ZN5unitsli3_kmEy").as_deref(),
            Some("units::operator\"\" _km(unsigned long long)")
        );
        assert_eq!(demangle("_Z3fooi").as_deref(), Some("foo(int)"));
    }
}
