//! Builds the eBPF test programs and the probe-target fixtures (C, C++, Rust,
//! a versioned shared library, stripped binaries with their debug files) into
//! `$OUT_DIR/fixtures`.

use std::path::Path;
use std::process::Command;

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
    let gcc = || {
        let mut c = Command::new("gcc");
        c.args(["-O1", "-g", "-Wl,--build-id"]);
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
    run(gcc()
        .args(["-fPIE", "-pie"])
        .arg(src.join("usdt_nop5.c"))
        .arg("-o")
        .arg(o("fixture-usdt-nop5")));
    run(gcc()
        .args(["-fPIE", "-pie", "-fno-omit-frame-pointer"])
        .arg(src.join("stack.c"))
        .arg("-o")
        .arg(o("fixture-stack")));
    // The same built as Ubuntu and Fedora build everything (CET): every
    // function starts with endbr64, then push %rbp.
    run(gcc()
        .args(["-fPIE", "-pie", "-fno-omit-frame-pointer", "-fcf-protection=full"])
        .arg(src.join("stack.c"))
        .arg("-o")
        .arg(o("fixture-cet")));
    run(gcc()
        .args(["-fPIE", "-pie", "-pthread"])
        .arg(src.join("sleeper.c"))
        .arg("-o")
        .arg(o("fixture-sleeper")));
    run(Command::new("g++")
        .args(["-O1", "-g"])
        .arg(src.join("fixture.cpp"))
        .arg("-o")
        .arg(o("fixture-cpp")));
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
    // Stripped copies of fixture-pie: with a debuglink to .debug/, with only a
    // build-id file under debugroot/.build-id, and with no debug file at all.
    let debug = o(".debug/fixture-stripped-link.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(o("fixture-pie"))
        .arg(&debug));
    run(Command::new("objcopy")
        .arg("--strip-all")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(o("fixture-pie"))
        .arg(o("fixture-stripped-link")));
    for name in ["fixture-stripped-id", "fixture-stripped-bare"] {
        run(Command::new("objcopy")
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
    run(Command::new("go")
        .args(["build", "-o"])
        .arg(o("fixture-go"))
        .arg(src.join("gofx.go"))
        .env("GOCACHE", out.join("gocache"))
        .env("GOPATH", out.join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0"));
    run(Command::new("go")
        .args(["build", "-ldflags=-s -w", "-o"])
        .arg(o("fixture-go-stripped"))
        .arg(src.join("gofx.go"))
        .env("GOCACHE", out.join("gocache"))
        .env("GOPATH", out.join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0"));
    let _ = std::fs::remove_dir_all(out.join("gocache"));
    let _ = std::fs::remove_dir_all(out.join("gopath"));
    many_functions(&out);
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
/// (an entry the kernel emulates), for tests at the scale of a large library.
fn many_functions(out: &Path) {
    use std::fmt::Write;
    let mut asm = String::with_capacity(MANY * 110);
    asm.push_str(".text\n");
    for i in 0..MANY {
        let _ = writeln!(
            asm,
            ".globl many_{i:05}\n.type many_{i:05},@function\nmany_{i:05}:\n push %rbp\n pop %rbp\n ret\n.size many_{i:05},3"
        );
    }
    asm.push_str(".section .note.GNU-stack,\"\",@progbits\n");
    let src = out.join("many.s");
    std::fs::write(&src, asm).expect("write many.s");
    run(Command::new("gcc")
        .args(["-shared", "-nostdlib", "-Wl,--build-id"])
        .arg(&src)
        .arg("-o")
        .arg(out.join("libmany.so")));
    let _ = std::fs::remove_file(&src);
}
