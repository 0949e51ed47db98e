//! The demo target: calls `function_a` 3 times, `function_b` 5 times and
//! `function_c` 7 times (or the counts given as arguments).

use std::hint::black_box;

#[no_mangle]
#[inline(never)]
pub extern "C" fn function_a(x: u64) -> u64 {
    black_box(x) + 1
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn function_b(x: u64) -> u64 {
    black_box(x) * 2
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn function_c(x: u64) -> u64 {
    black_box(x) ^ 0x5a
}

fn main() {
    let n: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (a, b, c) = (
        n.first().copied().unwrap_or(3),
        n.get(1).copied().unwrap_or(5),
        n.get(2).copied().unwrap_or(7),
    );
    let mut acc = 0u64;
    for i in 0..a {
        acc = acc.wrapping_add(function_a(i));
    }
    for i in 0..b {
        acc = acc.wrapping_add(function_b(i));
    }
    for i in 0..c {
        acc = acc.wrapping_add(function_c(i));
    }
    black_box(acc);
}
