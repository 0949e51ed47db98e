//! Numbers for people: counts whole (rounded, `1.2k`, with `--round`), `35 µs`.

use std::sync::atomic::{AtomicBool, Ordering};

static EXACT: AtomicBool = AtomicBool::new(true);

/// Counts printed whole from now on (the default), or rounded (`--round`).
pub fn set_exact(exact: bool) {
    EXACT.store(exact, Ordering::Relaxed);
}

/// A count: whole, or with `--round` `999`, `1.2k`, `35k`, `1.2M`, `3.4G`.
pub fn count(n: u64) -> String {
    if EXACT.load(Ordering::Relaxed) {
        n.to_string()
    } else {
        rounded(n)
    }
}

/// `999`, `1.2k`, `35k`, `1.2M`, `3.4G`.
fn rounded(n: u64) -> String {
    scaled(
        n,
        &[
            (1_000_000_000_000, "T"),
            (1_000_000_000, "G"),
            (1_000_000, "M"),
            (1_000, "k"),
        ],
        "",
        "",
    )
}

/// A duration in nanoseconds: `850 ns`, `35 µs`, `1.2 ms`, `2.5 s`.
pub fn nanos(ns: u64) -> String {
    scaled(
        ns,
        &[(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs")],
        " ",
        " ns",
    )
}

/// `n` in the largest unit it reaches (one decimal below 10), else as is.
fn scaled(n: u64, units: &[(u64, &str)], sep: &str, plain: &str) -> String {
    for &(scale, unit) in units {
        if n >= scale {
            let v = n as f64 / scale as f64;
            return if v < 10.0 {
                format!("{v:.1}{sep}{unit}")
            } else {
                format!("{v:.0}{sep}{unit}")
            };
        }
    }
    format!("{n}{plain}")
}

/// `s` cut to `width` characters, with `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Text from a traced process or a probed binary (a `comm`, a string argument,
/// a symbol, a USDT name, a path), made safe for a terminal: every control
/// character (C0, DEL, C1) and the backslash escaped (`\\`, `\n`, `\t`,
/// `\r`, `\e`, `\xNN`, `\u{NN}`), so it can neither move the cursor, retitle
/// the terminal nor forge a line.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if ('\u{80}'..='\u{9f}').contains(&c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as [`text`] shows them, invalid UTF-8 as `\xNN`.
pub fn bytes(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(&text(s));
                return out;
            }
            Err(e) => {
                let (good, bad) = bytes.split_at(e.valid_up_to());
                out.push_str(&text(std::str::from_utf8(good).unwrap_or_default()));
                let skip = e.error_len().unwrap_or(bad.len()).max(1);
                for b in &bad[..skip] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                bytes = &bad[skip..];
            }
        }
    }
}

/// A label value as both exposition formats require it written
/// (`prometheus-client` writes values as given): the backslash, the double
/// quote and the line feed escaped. Names come from probed binaries, so a
/// symbol can hold any of them.
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The key column's width: its widest cell, 16 to 32 characters.
pub fn key_width<'a>(header: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    cells
        .map(|c| c.chars().count())
        .chain([header.chars().count(), 16])
        .max()
        .unwrap_or(16)
        .min(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(text("plain name"), "plain name");
        assert_eq!(text("a\x1b[2Jb"), "a\\e[2Jb");
        assert_eq!(text("x\ny\rz\tw\x07"), "x\\ny\\rz\\tw\\x07");
        assert_eq!(text("back\\slash"), "back\\\\slash");
        assert_eq!(text("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(text("del\x7f é"), "del\\x7f é");
        assert_eq!(bytes(b"ok\xff\x1b]0;title\x07"), "ok\\xff\\e]0;title\\x07");
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let shown = text(&c.to_string());
            assert!(!shown.chars().any(|c| c.is_control()), "{c:?} -> {shown:?}");
        }
    }

    #[test]
    fn human_numbers() {
        assert_eq!(count(18_342), "18342", "whole by default");
        assert_eq!(rounded(999), "999");
        assert_eq!(rounded(1234), "1.2k");
        assert_eq!(rounded(35_000), "35k");
        assert_eq!(rounded(1_200_000), "1.2M");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(35_000), "35 µs");
        assert_eq!(nanos(1_200_000), "1.2 ms");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
