//! Generated probe targets: a C program with N `noinline` functions whose first
//! instruction is known, calling them a known number of times.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// How each function begins: written in assembly, so the compiler cannot change
/// the first instruction, and checked in the built binary before any figure is
/// reported ([`check_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Prologue {
    /// `push %rbp` (a frame): emulated by the kernel's uprobe code.
    PushRbp,
    /// A 5-byte nop (`nopl 0x0(%rax,%rax,1)`): on 6.18 x86-64 the kernel turns
    /// it into a call to the uprobe trampoline (no trap after the first hit).
    Nop5,
    /// `mov sink(%rip), %eax`: RIP-relative, single-stepped out of line.
    Mov,
    /// `endbr64` then `push %rbp`: how every function of a CET build
    /// (`-fcf-protection`, Ubuntu's and Fedora's default) begins. `endbr64` is
    /// single-stepped; sonde probes the `push` after it.
    Endbr64,
}

impl Prologue {
    pub const ALL: [Prologue; 4] = [Prologue::PushRbp, Prologue::Nop5, Prologue::Mov, Prologue::Endbr64];

    pub fn name(self) -> &'static str {
        match self {
            Prologue::PushRbp => "push %rbp",
            Prologue::Nop5 => "nop5",
            Prologue::Mov => "mov",
            Prologue::Endbr64 => "endbr64; push %rbp",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Prologue::PushRbp => "fp",
            Prologue::Nop5 => "nop5",
            Prologue::Mov => "mov",
            Prologue::Endbr64 => "endbr64",
        }
    }

    /// Whether the kernel single-steps the first instruction (a second trap
    /// per hit: fewer calls are measured).
    pub fn single_stepped(self) -> bool {
        matches!(self, Prologue::Mov | Prologue::Endbr64)
    }

    /// The function body in AT&T syntax (`{i}` is the function's number).
    fn body(self, i: usize) -> String {
        let work = format!("movl sink(%rip), %eax\\n addl %edi, %eax\\n addl ${i}, %eax\\n");
        match self {
            Prologue::PushRbp => format!("pushq %rbp\\n movq %rsp, %rbp\\n {work} popq %rbp\\n ret\\n"),
            // Spelled as bytes: the assembler shortens `nopl 0x0(%rax,%rax,1)`.
            Prologue::Nop5 => format!(".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\\n {work} ret\\n"),
            Prologue::Mov => format!("{work} ret\\n"),
            Prologue::Endbr64 => {
                format!(".byte 0xf3, 0x0f, 0x1e, 0xfa\\n pushq %rbp\\n movq %rsp, %rbp\\n {work} popq %rbp\\n ret\\n")
            }
        }
    }

    /// The bytes the first instruction must have.
    pub fn entry_bytes(self) -> &'static [u8] {
        match self {
            Prologue::PushRbp => &[0x55],
            Prologue::Nop5 => &[0x0f, 0x1f, 0x44, 0x00, 0x00],
            Prologue::Mov => &[0x8b, 0x05],
            Prologue::Endbr64 => &[0xf3, 0x0f, 0x1e, 0xfa, 0x55],
        }
    }
}

/// Writes and compiles `bench-target-<n>-<prologue>` under `dir`:
/// `bench-target CALLS FIRST LAST` waits for a line on stdin, then calls
/// `f<FIRST>..=f<LAST>` CALLS times each and prints the loop's nanoseconds.
/// The functions' entries are checked before it is returned.
pub fn build(dir: &Path, n: usize, prologue: Prologue) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tag = prologue.tag();
    let exe = dir.join(format!("bench-target-{n}-{tag}"));
    let c = dir.join(format!("bench-target-{n}-{tag}.c"));
    {
        let mut src = String::from("#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\nvolatile int sink;\n");
        for i in 0..n {
            src.push_str(&format!(
                "int f{i}(int);\n__asm__(\".text\\n.globl f{i}\\n.type f{i},@function\\n.p2align 4\\nf{i}:\\n {} .size f{i}, .-f{i}\\n\");\n",
                prologue.body(i)
            ));
        }
        src.push_str("typedef int (*fn_t)(int);\nstatic fn_t table[] = {");
        for i in 0..n {
            src.push_str(&format!("f{i},"));
        }
        src.push_str(
            "};\nint main(int argc, char **argv) {\n  if (argc < 4) return 2;\n  long calls = atol(argv[1]); int first = atoi(argv[2]), last = atoi(argv[3]);\n  char line[16]; if (!fgets(line, sizeof line, stdin)) return 1;\n  struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);\n  int s = 0;\n  for (int f = first; f <= last; f++) for (long c = 0; c < calls; c++) s += table[f](c);\n  clock_gettime(CLOCK_MONOTONIC, &b);\n  printf(\"%ld %d\\n\", (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec), s);\n  return 0;\n}\n",
        );
        // Built once per source: a target left by an older benchmark is rebuilt.
        if exe.exists() && std::fs::read_to_string(&c).is_ok_and(|old| old == src) {
            check_entry(&exe, "f0", prologue)?;
            return Ok(exe);
        }
        std::fs::write(&c, src)?;
        let status = Command::new("gcc")
            .args(["-O1", "-fcf-protection=none", "-o"])
            .arg(&exe)
            .arg(&c)
            .status()
            .context("gcc (the benchmark targets are C)")?;
        if !status.success() {
            bail!("gcc failed on {}", c.display());
        }
    }
    check_entry(&exe, "f0", prologue)?;
    Ok(exe)
}

/// Refuses to measure a target whose function `name` does not begin with the
/// prologue's bytes (the per-hit cost depends on the first instruction).
pub fn check_entry(exe: &Path, name: &str, prologue: Prologue) -> Result<()> {
    let set = sonde::Functions::in_binary(exe).pattern(name).resolve()?;
    let f = set.iter().next().context("entry symbol")?;
    let data = std::fs::read(exe)?;
    let want = prologue.entry_bytes();
    let start = f.file_offset as usize;
    let have = data.get(start..start + want.len()).context("entry bytes")?;
    if have != want {
        bail!(
            "{}: {name} begins {have:02x?}, not {want:02x?} ({}): refusing to report a per-hit figure",
            exe.display(),
            prologue.name()
        );
    }
    Ok(())
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
