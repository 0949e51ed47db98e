//! The object parser under mutated real objects: it must return (Ok or an error)
//! for every input, never panic, abort or take long.
//!
//! Stable Rust, no fuzzing engine: a fixed number of inputs (`SONDE_FUZZ_INPUTS`,
//! 20,000 by default; `cargo xtask fuzz` runs more) derived deterministically
//! from `SONDE_FUZZ_SEED` by mutating real objects, biased towards the ELF and
//! section headers and the symbol table where sizes and offsets live. The input
//! being parsed is kept in `target/fuzz/spec-current.bin`: after an abort it is
//! the reproducer.

use std::io::{Seek, Write};
use std::time::{Duration, Instant};

use sonde::object_file::ObjectSpec;
use sonde_tests::{crafted, PROBES};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    7,
    8,
    20,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// Byte ranges where a mutation most likely reaches a size or offset: the ELF
/// header, the section header table, and `.symtab`/`.rel*` contents.
fn hot_ranges(data: &[u8]) -> Vec<(usize, usize)> {
    use object::read::elf::{FileHeader, SectionHeader};
    let mut out = vec![(0, 64.min(data.len()))];
    let Ok(header) = object::elf::FileHeader64::<object::LittleEndian>::parse(data) else {
        return out;
    };
    let e = object::LittleEndian;
    let shoff = header.e_shoff(e) as usize;
    let shnum = usize::from(header.e_shnum(e));
    out.push((shoff.min(data.len()), (shoff + shnum * 64).min(data.len())));
    if let Ok(sections) = header.sections(e, data) {
        for s in sections.iter() {
            if matches!(s.sh_type(e), 2 | 4 | 9) {
                let (o, l) = (s.sh_offset(e) as usize, s.sh_size(e) as usize);
                out.push((o.min(data.len()), o.saturating_add(l).min(data.len())));
            }
        }
    }
    out.retain(|(a, b)| a < b);
    out
}

fn mutate(rng: &mut Rng, seed: &[u8], hot: &[(usize, usize)], other: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if rng.below(4) > 0 && !hot.is_empty() {
            let (a, b) = hot[rng.below(hot.len())];
            a + rng.below(b - a)
        } else {
            rng.below(d.len())
        };
        match rng.below(6) {
            0 => {
                if let Some(b) = d.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(b) = d.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            2 | 3 => {
                // An interesting value as a little-endian word of 2, 4 or 8 bytes.
                let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let w = [2, 4, 8][rng.below(3)];
                let end = (at + w).min(d.len());
                let n = end.saturating_sub(at);
                d[at.min(end)..end].copy_from_slice(&v[..n]);
            }
            4 => d.truncate(at),
            _ => {
                // Splice a chunk of another object in.
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let len = rng.below(256).min(other.len() - from);
                    let end = (at + len).min(d.len());
                    let n = end.saturating_sub(at);
                    d[at.min(end)..end].copy_from_slice(&other[from..from + n]);
                }
            }
        }
    }
    d
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Caps the address space so an allocation sized by a hostile field aborts the
/// test instead of exhausting the machine.
fn cap_memory(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid in-pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
}

#[test]
fn mutated_objects_never_panic_abort_or_stall() {
    let inputs = env_u64("SONDE_FUZZ_INPUTS", 20_000);
    let seed = env_u64("SONDE_FUZZ_SEED", 0x5eed_0b1e_c7ed);
    cap_memory(8 << 30);
    let seeds: Vec<Vec<u8>> = vec![
        PROBES.to_vec(),
        crafted::huge_bss(1 << 40),
        crafted::map_symbol_at(16),
        crafted::many_entries(64, 8, |_, _| 0),
    ];
    let hot: Vec<Vec<(usize, usize)>> = seeds.iter().map(|s| hot_ranges(s)).collect();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
    std::fs::create_dir_all(&dir).expect("fuzz dir");
    let current = dir.join("spec-current.bin");
    let mut file = std::fs::File::create(&current).expect("current input file");
    let mut rng = Rng(seed | 1);
    let (mut ok, mut err, mut slowest) = (0u64, 0u64, Duration::ZERO);
    let limit = Duration::from_millis(env_u64("SONDE_FUZZ_MS", 100));
    for n in 0..inputs {
        let which = rng.below(seeds.len());
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, &seeds[which], &hot[which], other);
        file.set_len(0).and_then(|()| file.rewind()).expect("rewind");
        file.write_all(&input).expect("write current input");
        let t = Instant::now();
        let result = std::panic::catch_unwind(|| ObjectSpec::parse(&input).is_ok());
        let took = t.elapsed();
        match result {
            Ok(true) => ok += 1,
            Ok(false) => err += 1,
            Err(_) => panic!("input {n} (seed {seed:#x}) panicked; it is in {}", current.display()),
        }
        assert!(
            took <= limit,
            "input {n} (seed {seed:#x}) took {took:?}; it is in {}",
            current.display()
        );
        slowest = slowest.max(took);
    }
    let _ = std::fs::remove_file(&current);
    println!("fuzz: {inputs} inputs (seed {seed:#x}): {ok} parsed, {err} refused, slowest {slowest:?}");
    assert_eq!(ok + err, inputs);
}
