//! Builds the eBPF test programs and the probe-target fixtures (C, C++, Rust,
//! a versioned shared library, stripped binaries with their debug files) into
//! `$OUT_DIR/fixtures`, for the target being built: a cross build for arm64
//! (`cargo xtask vm --kernel arm64-6.1`) uses Debian's `aarch64-linux-gnu-`
//! tools and `GOARCH=arm64`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target's tools: `aarch64-linux-gnu-gcc` when building for arm64 on
/// another machine, the host's otherwise.
struct Tools {
    prefix: &'static str,
    goarch: Option<&'static str>,
    /// Whether `rustc` has a standard library for the target (the Rust
    /// fixture is built only then).
    rust_std: bool,
}

impl Tools {
    fn find() -> Tools {
        let target = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        let host_is_target = std::env::var("HOST")
            .unwrap_or_default()
            .starts_with(&format!("{target}-"));
        match target.as_str() {
            "aarch64" if !host_is_target => Tools {
                prefix: "aarch64-linux-gnu-",
                goarch: Some("arm64"),
                rust_std: false,
            },
            _ => Tools {
                prefix: "",
                goarch: None,
                rust_std: true,
            },
        }
    }

    fn tool(&self, name: &str) -> Command {
        Command::new(format!("{}{name}", self.prefix))
    }
}

/// `<sys/sdt.h>` where a cross compiler finds it: Debian installs it under
/// the host's multiarch include directory, which a cross compiler must not
/// search (the host's libc headers are there too). The header itself serves
/// every architecture.
fn sdt_include(out: &Path) -> PathBuf {
    let dir = out.join("include");
    std::fs::create_dir_all(dir.join("sys")).expect("include dir");
    let found = [
        "/usr/include/x86_64-linux-gnu/sys",
        "/usr/include/aarch64-linux-gnu/sys",
        "/usr/include/sys",
    ]
    .iter()
    .map(Path::new)
    .find(|d| d.join("sdt.h").exists())
    .expect("<sys/sdt.h> (systemtap-sdt-dev) is needed: run `cargo xtask setup`");
    for h in ["sdt.h", "sdt-config.h"] {
        let _ = std::fs::copy(found.join(h), dir.join("sys").join(h));
    }
    dir
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (gcc, g++ and binutils are needed)"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn main() {
    if let Err(e) = sonde_build::EbpfCrate::new("ebpf").build() {
        panic!("{e}");
    }
    let src = Path::new("fixtures");
    println!("cargo:rerun-if-changed=fixtures");
    let out = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("fixtures");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join(".debug")).expect("fixtures dir");
    let o = |name: &str| out.join(name);
    let tools = Tools::find();
    let include = sdt_include(&out);
    let gcc = || {
        let mut c = tools.tool("gcc");
        c.args(["-O1", "-g", "-Wl,--build-id"]).arg("-I").arg(&include);
        c
    };
    run(gcc()
        .args(["-fPIC", "-shared"])
        .arg(format!("-Wl,--version-script={}", src.join("vers.map").display()))
        .arg(src.join("vers.c"))
        .arg("-o")
        .arg(o("libvers.so")));
    for (name, flags) in [
        ("fixture-pie", ["-fPIE", "-pie"]),
        ("fixture-nopie", ["-fno-PIE", "-no-pie"]),
    ] {
        run(gcc()
            .args(flags)
            .arg(src.join("fixture.c"))
            .arg("-L")
            .arg(&out)
            .args(["-lvers", "-Wl,-rpath,$ORIGIN", "-o"])
            .arg(o(name)));
    }
    run(gcc()
        .args(["-fPIE", "-pie"])
        .arg(src.join("semaphore.c"))
        .arg("-o")
        .arg(o("fixture-semaphore")));
    // USDT fixtures need <sys/sdt.h> (Debian's systemtap-sdt-dev, installed by
    // `cargo xtask setup`).
    run(gcc()
        .args(["-fPIC", "-shared"])
        .arg(src.join("usdtlib.c"))
        .arg("-o")
        .arg(o("libusdt.so")));
    run(gcc()
        .args(["-fPIE", "-pie"])
        .arg(src.join("usdt.c"))
        .arg("-L")
        .arg(&out)
        .args(["-lusdt", "-Wl,-rpath,$ORIGIN", "-o"])
        .arg(o("fixture-usdt")));
    // `nop; nop5` sites: x86-64's.
    if tools.goarch.is_none() {
        run(gcc()
            .args(["-fPIE", "-pie"])
            .arg(src.join("usdt_nop5.c"))
            .arg("-o")
            .arg(o("fixture-usdt-nop5")));
    }
    run(gcc()
        .args(["-fPIE", "-pie", "-fno-omit-frame-pointer"])
        .arg(src.join("stack.c"))
        .arg("-o")
        .arg(o("fixture-stack")));
    // The same with no build id (the kernel leaves its frames as addresses).
    run(gcc()
        .args(["-fPIE", "-pie", "-fno-omit-frame-pointer", "-Wl,--build-id=none"])
        .arg(src.join("stack.c"))
        .arg("-o")
        .arg(o("fixture-stack-noid")));
    // The same built as Ubuntu and Fedora build everything (CET): every
    // function starts with endbr64, then push %rbp (arm64: with branch
    // protection, `paciasp`/`bti c` first).
    let protection = if tools.goarch.is_some() {
        "-mbranch-protection=standard"
    } else {
        "-fcf-protection=full"
    };
    run(gcc()
        .args(["-fPIE", "-pie", "-fno-omit-frame-pointer", protection])
        .arg(src.join("stack.c"))
        .arg("-o")
        .arg(o("fixture-cet")));
    run(gcc()
        .args(["-fPIE", "-pie", "-pthread"])
        .arg(src.join("sleeper.c"))
        .arg("-o")
        .arg(o("fixture-sleeper")));
    run(tools
        .tool("g++")
        .args(["-O1", "-g"])
        .arg(src.join("fixture.cpp"))
        .arg("-o")
        .arg(o("fixture-cpp")));
    if tools.rust_std {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        run(Command::new(rustc)
            .args([
                "-Copt-level=1",
                "-Csymbol-mangling-version=v0",
                "-Crelocation-model=static",
                "--edition=2021",
            ])
            .arg(src.join("fixture_rs.rs"))
            .arg("-o")
            .arg(o("fixture-rs-nopie")));
    }
    // Stripped copies of fixture-pie: with a debuglink to .debug/, with only a
    // build-id file under debugroot/.build-id, and with no debug file at all.
    let debug = o(".debug/fixture-stripped-link.debug");
    run(tools
        .tool("objcopy")
        .arg("--only-keep-debug")
        .arg(o("fixture-pie"))
        .arg(&debug));
    run(tools
        .tool("objcopy")
        .arg("--strip-all")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(o("fixture-pie"))
        .arg(o("fixture-stripped-link")));
    for name in ["fixture-stripped-id", "fixture-stripped-bare"] {
        run(tools
            .tool("objcopy")
            .arg("--strip-all")
            .arg(o("fixture-pie"))
            .arg(o(name)));
    }
    run(gcc()
        .args(["-fPIE", "-pie"])
        .arg(src.join("hostile.c"))
        .arg(src.join("hostile2.c"))
        .arg("-o")
        .arg(o("fixture-hostile")));
    hostile_names(&o("fixture-hostile"));
    run(gcc()
        .arg("-static")
        .arg(src.join("waiter.c"))
        .arg("-o")
        .arg(o("fixture-waiter-static")));
    // Threads single-stepping different instructions under signal storms
    // (static: the guests carry no libpthread of their own).
    run(gcc()
        .args(["-static", "-O1", "-pthread"])
        .arg(src.join("threads.c"))
        .arg("-o")
        .arg(o("fixture-threads")));
    // A Go program (Debian's golang-go, installed by `cargo xtask setup`),
    // and a copy without symbols or section headers' debug info.
    let go = || {
        let mut c = Command::new("go");
        c.env("GOCACHE", out.join("gocache"))
            .env("GOPATH", out.join("gopath"))
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0");
        if let Some(arch) = tools.goarch {
            c.env("GOARCH", arch);
        }
        c
    };
    run(go().args(["build", "-o"]).arg(o("fixture-go")).arg(src.join("gofx.go")));
    run(go()
        .args(["build", "-ldflags=-s -w", "-o"])
        .arg(o("fixture-go-stripped"))
        .arg(src.join("gofx.go")));
    let _ = std::fs::remove_dir_all(out.join("gocache"));
    let _ = std::fs::remove_dir_all(out.join("gopath"));
    many_functions(&out, &tools);
    let id = build_id(&o("fixture-pie"));
    let dir = o("debugroot/.build-id").join(&id[..2]);
    std::fs::create_dir_all(&dir).expect("build-id dir");
    std::fs::copy(&debug, dir.join(format!("{}.debug", &id[2..]))).expect("copy debug file");
}

include!("fixtures/hostile_names.rs");

/// Rewrites hostile.c's placeholder names into [`HOSTILE_NAMES`] everywhere
/// in `path` (symbol table, debug strings), padded to the same length.
fn hostile_names(path: &Path) {
    let mut data = std::fs::read(path).expect("read fixture-hostile");
    for (from, to) in HOSTILE_NAMES {
        assert!(to.len() <= from.len(), "hostile name longer than its placeholder");
        let to = hostile_name((from, to)).into_bytes();
        let mut at = 0;
        let mut found = 0;
        while let Some(i) = data[at..].windows(from.len()).position(|w| w == from.as_bytes()) {
            data[at + i..at + i + from.len()].copy_from_slice(&to);
            at += i + from.len();
            found += 1;
        }
        assert!(found > 0, "{from} not in fixture-hostile");
    }
    std::fs::write(path, data).expect("write fixture-hostile");
}

/// The build-id of `path` in hex, read with readelf.
fn build_id(path: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(path).output().expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .map(str::to_string)
        .expect("fixture-pie has a build-id")
}

/// How many functions `libmany.so` defines.
const MANY: usize = 100_000;

/// `libmany.so`: `many_00000` .. `many_99999`, each `push %rbp; pop %rbp; ret`
/// (an entry the kernel emulates; arm64: `stp x29, x30; ldp x29, x30; ret`),
/// for tests at the scale of a large library.
fn many_functions(out: &Path, tools: &Tools) {
    use std::fmt::Write;
    let (body, size, kind) = if tools.goarch.is_some() {
        ("stp x29, x30, [sp, #-16]!\n ldp x29, x30, [sp], #16\n ret", 12, "%")
    } else {
        ("push %rbp\n pop %rbp\n ret", 3, "@")
    };
    let mut asm = String::with_capacity(MANY * 140);
    asm.push_str(".text\n");
    for i in 0..MANY {
        let _ = writeln!(
            asm,
            ".globl many_{i:05}\n.type many_{i:05},{kind}function\nmany_{i:05}:\n {body}\n.size many_{i:05},{size}"
        );
    }
    let _ = writeln!(asm, ".section .note.GNU-stack,\"\",{kind}progbits");
    let src = out.join("many.s");
    std::fs::write(&src, asm).expect("write many.s");
    run(tools
        .tool("gcc")
        .args(["-shared", "-nostdlib", "-Wl,--build-id"])
        .arg(&src)
        .arg("-o")
        .arg(out.join("libmany.so")));
    let _ = std::fs::remove_file(&src);
}
