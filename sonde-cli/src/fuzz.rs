//! Every parser of user text (the command line, the agent's configuration,
//! patterns, USDT argument specs from binaries) under generated input, in
//! `cargo test`: no input may panic, overflow the stack or take long.
//!
//! Inputs mix the grammars' own tokens (so deep and wide structures come out)
//! with random bytes; a fixed seed keeps failures reproducible.

use std::time::Duration;

/// xorshift64*: a small, seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Tokens of every grammar parsed here, and characters that break naive code
/// (multi-byte whitespace, quotes, NUL, controls).
const TOKENS: &[&str] = &[
    "(",
    ")",
    "((((",
    "))))",
    "&&",
    "||",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "arg0",
    "arg5",
    "arg9",
    "ret",
    "pid",
    "tid",
    "comm",
    "func",
    "\"",
    "'",
    "\"x*\"",
    "*",
    "?",
    "[",
    "]",
    "{",
    "}",
    "-",
    "0x",
    "-9223372036854775808",
    "18446744073709551616",
    "1e400",
    "NaN",
    "inf",
    "0",
    "42",
    " ",
    "\u{3000}",
    "\u{a0}",
    "\u{2003}",
    "é",
    "\0",
    "\x1b",
    "\n",
    ",",
    "=",
    "s",
    "i",
    "x",
    "l",
    "u",
    "p",
    "usdt:",
    ":",
    "@",
    "%rax",
    "8@",
    "-4@$",
    "(%rsp)",
    "8(%rbp,%rax,8)",
    "[[probe]]",
    "binary = \"a\"",
    "functions = [",
    "]",
    "pid = ",
    "retry_seconds = ",
    "\\",
];

fn input(rng: &mut Rng) -> String {
    let mut s = String::new();
    let parts = rng.below(64);
    for _ in 0..parts {
        if rng.below(8) == 0 {
            let bytes: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
            s.push_str(&String::from_utf8_lossy(&bytes));
        } else {
            let t = TOKENS[rng.below(TOKENS.len())];
            for _ in 0..1 + rng.below(3) {
                s.push_str(t);
            }
        }
    }
    s
}

/// This thread's CPU time: what an input costs, whatever else the machine
/// runs (a wall clock on a loaded machine would blame the parser).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes this thread's CPU time into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` on `n` generated inputs plus `extra`; none may take a second of CPU.
fn fuzz(name: &str, n: usize, extra: &[String], f: impl Fn(&str)) {
    let mut rng = Rng(0x5eed_0000_0000_0001 ^ name.len() as u64);
    let inputs = extra.iter().cloned().chain((0..n).map(|_| input(&mut rng)));
    for text in inputs {
        let start = thread_cpu();
        f(&text);
        let spent = thread_cpu().saturating_sub(start);
        assert!(
            spent < Duration::from_secs(1),
            "{name}: {:?} took {spent:?} of CPU",
            text.chars().take(80).collect::<String>(),
        );
    }
}

/// Inputs built to hurt: deep nesting, wide expansion, long repetition.
fn hostile() -> Vec<String> {
    let expand = (0..30)
        .map(|i| format!("(arg0 == {i} || arg1 == {i})"))
        .collect::<Vec<_>>()
        .join(" && ");
    vec![
        format!("{}pid == 1{}", "(".repeat(100_000), ")".repeat(100_000)),
        expand,
        "pid == 1 || ".repeat(100_000),
        "pid == 1 && ".repeat(100_000),
        "\u{3000}".repeat(10_000),
        "[".repeat(100_000),
        "*".repeat(100_000),
        "a=".repeat(10_000),
    ]
}

#[test]
fn the_filter_parser_survives_anything() {
    fuzz("filter", 20_000, &hostile(), |t| {
        if let Ok(f) = crate::filter::FilterExpr::parse(t) {
            let _ = f.uses_ret();
            for site in [crate::filter::Site::Entry, crate::filter::Site::Return] {
                let _ = f.compile("fx_alpha", "fx_alpha", site);
            }
        }
    });
}

#[test]
fn the_argument_parsers_survive_anything() {
    let n = std::cell::Cell::new(0usize);
    fuzz("args", 20_000, &hostile(), |t| {
        n.set(n.get() + 1);
        let _ = crate::trace::ArgSpecs::parse(&[t.to_string()]);
        let _ = crate::trace::parse_ret(t);
        let _ = crate::hist::parse_of(t);
        let _ = crate::args::parse_by(t);
        let _ = crate::args::parse_duration(t);
        let _ = crate::args::parse_pid(t);
        // Whole command lines through clap (slow in a debug build): every 10th
        // generated input.
        let whole = t.len() < 10_000 && n.get().is_multiple_of(10);
        for command in ["count", "trace", "latency", "hist", "list", "serve"]
            .iter()
            .filter(|_| whole)
        {
            let words = ["sonde", command].into_iter().chain(t.split(' '));
            let _ = crate::parse_command_line(words.map(std::ffi::OsString::from));
        }
    });
}

#[test]
fn patterns_and_usdt_specs_survive_anything() {
    fuzz("patterns", 5_000, &hostile(), |t| {
        if let Ok(p) = sonde::resolve::Pattern::new(t) {
            let _ = p.matches("fx_alpha");
            let _ = p.matches(t);
        }
        let _ = sonde::resolve::usdt::parse_args(t);
    });
}

#[test]
fn the_agent_configuration_survives_anything() {
    let mut extra = hostile();
    extra.push("retry_seconds = 9223372036854775807\n".into());
    extra.push(format!(
        "{}\n",
        "[[probe]]\nbinary = \"a\"\nfunctions = [\"x\"]\n".repeat(10_000)
    ));
    fuzz("config", 5_000, &extra, |t| {
        let _ = crate::serve::config::Config::parse(t);
    });
}
