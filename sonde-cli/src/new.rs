//! `sonde new DIR`: a ready project (host crate, eBPF crate, build script) whose
//! example counts calls per function with one program and cookies.

use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Where the sonde crates are: this checkout when it is still there, else the
/// published versions.
fn dependency(krate: &str) -> String {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(|p| p.join(krate));
    match checkout {
        Some(dir) if dir.join("Cargo.toml").is_file() => {
            format!("{krate} = {{ path = {:?} }}", dir.display().to_string())
        }
        _ => format!("{krate} = \"{}\"", env!("CARGO_PKG_VERSION")),
    }
}

/// A package name cargo accepts, from `name` (or the directory's name).
fn package_name(name: Option<&str>, dir: &Path) -> Result<String, CliError> {
    let raw = match name {
        Some(n) => n.to_string(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| CliError::new(format!("{}: give --name NAME", dir.display())))?,
    };
    let ok = raw.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(CliError::new(format!(
            "`{raw}` is not a package name (letters, digits, `-`, `_`, starting with a letter): give --name NAME"
        )));
    }
    Ok(raw)
}

/// The files of a new project named `name`.
fn files(name: &str) -> Vec<(&'static str, String)> {
    let host = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
{sonde}

[build-dependencies]
{build}

# The eBPF crate builds for the BPF target through build.rs, never as a member.
[workspace]
exclude = ["ebpf"]
"#,
        sonde = dependency("sonde"),
        build = dependency("sonde-build"),
    );
    let ebpf = format!(
        r#"[package]
# The binary `probes` becomes $OUT_DIR/probes.bpf.o (one object per binary).
name = "probes"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
{ebpf}

[profile.release]
panic = "abort"
debug = 2

[profile.dev]
panic = "abort"

# Its own workspace: built by sonde-build with the BPF toolchain, apart from the host's.
[workspace]
"#,
        ebpf = dependency("sonde-ebpf"),
    );
    vec![
        ("Cargo.toml", host),
        ("build.rs", BUILD_RS.to_string()),
        ("src/main.rs", MAIN_RS.to_string()),
        ("ebpf/Cargo.toml", ebpf),
        ("ebpf/src/main.rs", EBPF_MAIN_RS.to_string()),
        (".gitignore", "/target\n/ebpf/target\n".to_string()),
        ("README.md", README_MD.replace("NAME", name)),
    ]
}

const BUILD_RS: &str = r#"// Builds the eBPF crate in ebpf/ into $OUT_DIR/probes.bpf.o (needs the eBPF
// toolchain: `cargo xtask setup` in the sonde checkout installs it).
fn main() {
    if let Err(e) = sonde_build::EbpfCrate::new("ebpf").build() {
        panic!("{e}");
    }
}
"#;

const EBPF_MAIN_RS: &str = r#"//! One program for every function: the cookie each was attached with is its
//! index in the per-function counter array.
#![no_std]
#![no_main]

use sonde_ebpf::maps::PerCpuArray;
use sonde_ebpf::{map, uprobe, ProbeContext};

sonde_ebpf::license!("GPL");
sonde_ebpf::panic_handler!();

/// Calls per function (slot = cookie), per CPU; sized by user space at load.
#[map]
static COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1);

#[uprobe]
fn count(ctx: ProbeContext) -> u32 {
    if let Some(p) = COUNTS.get_ptr_mut(ctx.cookie() as u32) {
        // SAFETY: the kernel's pointer to this CPU's counter.
        unsafe { *p += 1 };
    }
    0
}
"#;

const MAIN_RS: &str = r#"//! `cargo run --release -- BINARY PATTERN... [-- COMMAND]`: counts calls of the
//! functions PATTERN selects in BINARY (a path or a library name such as `libc`),
//! with one eBPF program and one cookie per function, then prints `name count`.
//! With a COMMAND, it traces that command (held until the probes are attached)
//! until it exits; without, every process, until Enter.

use sonde::command::HeldCommand;
use sonde::maps::PerCpuArray;
use sonde::{AttachOptions, Functions, Object};

const PROBES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"));

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (probe, command) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &args[args.len()..]),
    };
    let [binary, patterns @ ..] = probe else {
        return Err("usage: BINARY PATTERN... [-- COMMAND]".into());
    };
    if patterns.is_empty() {
        return Err("usage: BINARY PATTERN... [-- COMMAND]".into());
    }
    // The command starts now but runs nothing until released.
    let mut held = if command.is_empty() { None } else { Some(HeldCommand::spawn(command)?) };
    let mut functions = Functions::in_binary(binary).patterns(patterns.iter().cloned());
    let mut options = AttachOptions::default();
    if let Some(c) = &held {
        functions = functions.pid(c.pid());
        options = options.pid(c.pid());
    }
    let set = functions.resolve()?;
    let slots = u32::try_from(set.len())?.max(1);
    let mut object = Object::load_static_with(PROBES, &[("COUNTS", slots)])?;
    // One program, one cookie per function (its index in the set).
    let attachment = object.uprobe("count")?.attach_sites(set.targets(), &options)?;
    eprintln!("attached to {} functions ({})", set.len(), attachment.plan());
    match &mut held {
        Some(c) => {
            c.release()?;
            c.wait();
        }
        None => {
            eprintln!("counting: press Enter to stop");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
        }
    }
    let counts = PerCpuArray::<u64>::new(object.map("COUNTS")?)?;
    for f in set.iter() {
        let n: u64 = counts.get(f.cookie as u32)?.iter().sum();
        println!("{} {n}", set.label(f));
    }
    Ok(())
}
"#;

const README_MD: &str = r#"# NAME

Made by `sonde new`: one eBPF program counts calls of many functions, told apart
by the cookie each was attached with.

```sh
cargo build --release
sudo target/release/NAME /usr/bin/ls 'str*' -- ls -l     # or: NAME libc malloc free
```

- `ebpf/src/main.rs`: the program (`#[uprobe] fn count`), built by `build.rs`
  into `$OUT_DIR/probes.bpf.o` (one object per binary of the eBPF crate).
- `src/main.rs`: resolves the functions, loads the object with the counter array
  sized to them, attaches the one program to all of them, prints the counts.

Next: sonde's `docs/guide.md` adds return probes, sessions, typed events through
a ring buffer (an event loop that ends with the traced command; async readers),
log lines with strings and USDT probes, one section at a time; the files it adds
to this project are in sonde's `examples/guide` (copy `src/` and `ebpf/` over).
"#;

/// Runs `sonde new DIR [--name NAME]`.
pub fn new(dir: &Path, name: Option<&str>) -> Result<i32, CliError> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?
            .next()
            .is_none();
        if !empty {
            return Err(CliError::new(format!(
                "{} is not empty: sonde new writes a project into a new or empty directory",
                dir.display()
            )));
        }
    }
    let name = package_name(name, dir)?;
    for (path, text) in files(&name) {
        let path: PathBuf = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CliError::new(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    }
    // The versions this checkout is tested with (cargo drops what is unused).
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    for (from, to) in [
        ("Cargo.lock", "Cargo.lock"),
        ("examples/seed/ebpf/Cargo.lock", "ebpf/Cargo.lock"),
    ] {
        if let Some(src) = checkout.map(|c| c.join(from)).filter(|p| p.is_file()) {
            let _ = std::fs::copy(src, dir.join(to));
        }
    }
    println!(
        "created {name} in {}: cd there, `cargo build --release`, then `sudo target/release/{name} BINARY PATTERN... [-- COMMAND]`",
        dir.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            package_name(Some("my-probe"), Path::new("x")).ok(),
            Some("my-probe".into())
        );
        assert!(package_name(Some("1x"), Path::new("x")).is_err());
        assert!(package_name(Some("a b"), Path::new("x")).is_err());
        assert_eq!(package_name(None, Path::new("/tmp/tool_2")).ok(), Some("tool_2".into()));
    }
}
