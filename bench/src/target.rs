//! Generated probe targets: a C program with N `noinline` functions whose first
//! instruction is known, calling them a known number of times.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// How each function begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Prologue {
    /// `push %rbp` (frame pointer): emulated by the kernel's uprobe code.
    PushRbp,
    /// `mov sink(%rip), %eax`: RIP-relative, executed out of line.
    Mov,
}

impl Prologue {
    pub fn name(self) -> &'static str {
        match self {
            Prologue::PushRbp => "push %rbp",
            Prologue::Mov => "mov",
        }
    }
}

/// Writes and compiles `bench-target-<n>-<prologue>` under `dir`:
/// `bench-target CALLS FIRST LAST` waits for a line on stdin, then calls
/// `f<FIRST>..=f<LAST>` CALLS times each and prints the loop's nanoseconds.
pub fn build(dir: &Path, n: usize, prologue: Prologue) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tag = match prologue {
        Prologue::PushRbp => "fp",
        Prologue::Mov => "mov",
    };
    let exe = dir.join(format!("bench-target-{n}-{tag}"));
    if exe.exists() {
        return Ok(exe);
    }
    let mut src = String::from(
        "#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\nvolatile int sink;\n\
         #define F(i) __attribute__((noipa)) int f##i(int x) { return sink + x + i; }\n",
    );
    for i in 0..n {
        src.push_str(&format!("F({i})\n"));
    }
    src.push_str("typedef int (*fn_t)(int);\nstatic fn_t table[] = {");
    for i in 0..n {
        src.push_str(&format!("f{i},"));
    }
    src.push_str(
        "};\nint main(int argc, char **argv) {\n  if (argc < 4) return 2;\n  long calls = atol(argv[1]); int first = atoi(argv[2]), last = atoi(argv[3]);\n  char line[16]; if (!fgets(line, sizeof line, stdin)) return 1;\n  struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);\n  int s = 0;\n  for (int f = first; f <= last; f++) for (long c = 0; c < calls; c++) s += table[f](c);\n  clock_gettime(CLOCK_MONOTONIC, &b);\n  printf(\"%ld %d\\n\", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec), s);\n  return 0;\n}\n",
    );
    let c = dir.join(format!("bench-target-{n}-{tag}.c"));
    std::fs::write(&c, src)?;
    let fp = match prologue {
        Prologue::PushRbp => "-fno-omit-frame-pointer",
        Prologue::Mov => "-fomit-frame-pointer",
    };
    let status = Command::new("gcc")
        .args(["-O1", "-fcf-protection=none", fp, "-o"])
        .arg(&exe)
        .arg(&c)
        .status()
        .context("gcc (the benchmark targets are C)")?;
    if !status.success() {
        bail!("gcc failed on {}", c.display());
    }
    Ok(exe)
}

/// A target process waiting for its go line.
pub struct Running(Child);

impl Running {
    pub fn spawn(exe: &Path, calls: u64, first: usize, last: usize) -> Result<Running> {
        let child = Command::new(exe)
            .args([calls.to_string(), first.to_string(), last.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        Ok(Running(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Runs the calls; returns the loop's nanoseconds as the target measured them.
    pub fn go(mut self) -> Result<u64> {
        use std::io::Write;
        self.0.stdin.take().context("stdin")?.write_all(b"go\n")?;
        let out = self.0.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("target output")
    }
}
