//! Resolves patterns in a binary and prints what they select, with timings:
//! `cargo run --release -p sonde --example resolve -- libc 'str*'`.

use std::time::Instant;

use sonde::Functions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let binary = args.next().ok_or("usage: resolve BINARY PATTERN...")?;
    let patterns: Vec<String> = args.collect();
    let cold = Instant::now();
    let set = Functions::in_binary(&binary).patterns(&patterns).resolve()?;
    let cold = cold.elapsed();
    let warm = Instant::now();
    let again = Functions::in_binary(&binary).patterns(&patterns).resolve()?;
    let warm = warm.elapsed();
    for f in set.iter().take(20) {
        let ver = set
            .symbol(f)
            .and_then(|s| s.version.as_deref())
            .map(|v| format!("@{v}"))
            .unwrap_or_default();
        let dem = set.demangled(f).map(|d| format!("  {d}")).unwrap_or_default();
        println!("{:>6} {:#010x} {}{ver}{dem}", f.cookie, f.file_offset, f.name);
    }
    println!(
        "{}: {} functions selected of {} ({} symbols read); cold {:.2} ms, cached {:.3} ms",
        set.path().display(),
        set.len(),
        set.symbols().functions().len(),
        set.symbols().symbols_read(),
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    assert_eq!(again.len(), set.len());
    Ok(())
}
