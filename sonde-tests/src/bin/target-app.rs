//! A probe target with known functions: `target-app SEQUENCE` waits for a line on
//! stdin, then calls `sonde_fn_<letter>(i)` for each letter of SEQUENCE (a-d), `i`
//! the position in the sequence, and the Rust-mangled (legacy)
//! `workload::Counter::bump` once per letter.

use std::hint::black_box;
use std::io::BufRead;

#[no_mangle]
#[inline(never)]
pub extern "C" fn sonde_fn_a(x: u64) -> u64 {
    black_box(x) * 3 + 1
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn sonde_fn_b(x: u64) -> u64 {
    black_box(x) * 5 + 2
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn sonde_fn_c(x: u64) -> u64 {
    black_box(x) * 7 + 3
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn sonde_fn_d(x: u64) -> u64 {
    black_box(x) * 11 + 4
}

mod workload {
    /// A Rust method with a mangled (legacy) name, for demangled-name tests.
    pub struct Counter(pub u64);

    impl Counter {
        #[inline(never)]
        pub fn bump(&mut self, x: u64) {
            self.0 = self.0.wrapping_add(std::hint::black_box(x));
        }
    }
}

fn main() {
    let seq = std::env::args().nth(1).unwrap_or_default();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let mut sum = 0u64;
    let mut counter = workload::Counter(0);
    for (i, c) in seq.chars().enumerate() {
        let f: extern "C" fn(u64) -> u64 = match c {
            'a' => sonde_fn_a,
            'b' => sonde_fn_b,
            'c' => sonde_fn_c,
            'd' => sonde_fn_d,
            _ => continue,
        };
        sum = sum.wrapping_add(black_box(f)(i as u64));
        counter.bump(1);
    }
    println!("{sum} {}", counter.0);
}
