//! Numbers for people: `1.2k`, `35 µs` (or exact, with `--exact`).

use std::sync::atomic::{AtomicBool, Ordering};

static EXACT: AtomicBool = AtomicBool::new(false);

/// Counts printed whole from now on (`--exact`).
pub fn set_exact(exact: bool) {
    EXACT.store(exact, Ordering::Relaxed);
}

/// A count: `999`, `1.2k`, `35k`, `1.2M`, `3.4G` (whole with `--exact`).
pub fn count(n: u64) -> String {
    if EXACT.load(Ordering::Relaxed) {
        return n.to_string();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(count(999), "999");
        assert_eq!(count(1234), "1.2k");
        assert_eq!(count(35_000), "35k");
        assert_eq!(count(1_200_000), "1.2M");
        assert_eq!(nanos(850), "850 ns");
        assert_eq!(nanos(35_000), "35 µs");
        assert_eq!(nanos(1_200_000), "1.2 ms");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
