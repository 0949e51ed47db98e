//! Installs the eBPF toolchain: a rustc with library source (Debian's `rustc-web` +
//! `rust-web-src`), the `llvm-NN-dev` matching that rustc's LLVM, and `bpf-linker`
//! built against it; and what the benchmark's peers need (clang, libelf, zlib).
//! Each step is skipped when its result is already there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd::{cargo, run_cmd};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rustc with library source the eBPF build uses (sonde-build's order:
/// `SONDE_BPF_RUSTC`, a rustup nightly with rust-src, Debian's
/// `/usr/bin/rustc`); `cargo xtask dist` builds musl's std with it too.
pub fn rustc_with_source() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("SONDE_BPF_RUSTC") {
        return Some(PathBuf::from(r));
    }
    rustup_nightly().or_else(|| {
        let r = PathBuf::from(DEBIAN_RUSTC);
        has_library_source(&r).then_some(r)
    })
}

fn has_library_source(rustc: &Path) -> bool {
    output(Command::new(rustc).args(["--print", "sysroot"]))
        .map(|s| {
            PathBuf::from(s.trim())
                .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                .is_file()
        })
        .unwrap_or(false)
}

/// A rustup nightly with rust-src, if there is one.
fn rustup_nightly() -> Option<PathBuf> {
    let p = output(Command::new("rustup").args(["which", "--toolchain", "nightly", "rustc"]))?;
    let p = PathBuf::from(p.trim());
    has_library_source(&p).then_some(p)
}

fn llvm_major(rustc: &Path) -> Result<u32> {
    let v = output(Command::new(rustc).arg("-vV")).context("rustc -vV")?;
    let line = v
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("rustc -vV names no LLVM version")?;
    line.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .context("unparsable LLVM version")
}

fn bpf_linker() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let p = home.join("bin/bpf-linker");
    if p.is_file() {
        return Some(p);
    }
    output(Command::new("which").arg("bpf-linker")).map(|s| PathBuf::from(s.trim()))
}

fn apt_install(packages: &[&str], updated: &mut bool) -> Result<()> {
    if !*updated {
        println!("setup: apt-get update");
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        *updated = true;
    }
    println!("setup: apt-get install {}", packages.join(" "));
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Installs what is missing; prints one line per step.
pub fn run() -> Result<()> {
    let have_apt = Path::new("/usr/bin/apt-get").exists();
    let mut updated = false;

    let rustc = if let Some(r) = std::env::var_os("SONDE_BPF_RUSTC") {
        PathBuf::from(r)
    } else if let Some(r) = rustup_nightly() {
        r
    } else {
        let r = PathBuf::from(DEBIAN_RUSTC);
        if !has_library_source(&r) {
            if !have_apt {
                manual_route();
            }
            apt_install(&["rustc-web", "rust-web-src"], &mut updated)?;
        }
        r
    };
    if !has_library_source(&rustc) {
        bail!("{} has no library source after setup", rustc.display());
    }

    if bpf_linker().is_none() {
        let major = llvm_major(&rustc)?;
        let prefix = format!("/usr/lib/llvm-{major}");
        if !Path::new(&prefix).join("bin/llvm-config").exists() {
            if !have_apt {
                manual_route();
            }
            let dev = format!("llvm-{major}-dev");
            apt_install(&[&dev, "zlib1g-dev", "libzstd-dev", "libxml2-dev"], &mut updated)?;
        }
        println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} for LLVM {major} (a few minutes)");
        run_cmd(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{major}"),
                ])
                .env("LLVM_PREFIX", &prefix)
                .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix),
        )?;
    }
    // The benchmark's peers: libbpf (libbpf-sys builds its vendored copy with
    // make, against libelf and zlib found by pkg-config) and a C program compiled
    // by clang, loaded by libbpf and aya.
    let peer_tools = [
        ("/usr/bin/clang", "clang"),
        ("/usr/include/libelf.h", "libelf-dev"),
        ("/usr/include/zlib.h", "zlib1g-dev"),
        ("/usr/bin/pkg-config", "pkg-config"),
        ("/usr/bin/make", "make"),
        // libc's symbol names beyond .dynsym (`__strlen_evex`, the ifunc
        // implementations the tests name).
        ("/usr/share/doc/libc6-dbg", "libc6-dbg"),
        // <sys/sdt.h>: the USDT fixtures.
        ("/usr/include/x86_64-linux-gnu/sys/sdt.h", "systemtap-sdt-dev"),
        // The Prometheus server `sonde serve`'s test starts on 127.0.0.1 (no
        // service is started: the test runs its own with its own config).
        ("/usr/bin/prometheus", "prometheus"),
        // /metrics over TLS with basic auth: a certificate made by openssl,
        // fetched with curl as well as by Prometheus.
        ("/usr/bin/openssl", "openssl"),
        ("/usr/bin/curl", "curl"),
        // capsh: the agent's test runs it as `nobody` with capabilities only.
        ("/usr/sbin/capsh", "libcap2-bin"),
        // Go fixtures (sonde-tests' build.rs): Go programs must never get a
        // return probe.
        ("/usr/bin/go", "golang-go"),
        // `cargo xtask dist`: the Debian package is checked by lintian; the
        // one static binary is linked against musl by musl-gcc.
        ("/usr/bin/lintian", "lintian"),
        ("/usr/bin/musl-gcc", "musl-tools"),
        // arm64: the cross compilers (dist's static arm64 binary, the arm64
        // guest's tests and fixtures) and the emulator the guest boots on.
        ("/usr/bin/aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("/usr/bin/aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
        // arm64's C library to link against (only recommended by the cross gcc).
        ("/usr/aarch64-linux-gnu/lib/crt1.o", "libc6-dev-arm64-cross"),
        ("/usr/bin/qemu-system-aarch64", "qemu-system-arm"),
        // The Debian roots the .deb is installed in (userland.rs): made by
        // debootstrap, checked against Debian's archive keys.
        ("/usr/sbin/debootstrap", "debootstrap"),
        (
            "/usr/share/keyrings/debian-archive-bullseye-stable.gpg",
            "debian-archive-keyring",
        ),
    ];
    let missing: Vec<&str> = peer_tools
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        if !have_apt {
            bail!(
                "the benchmark peers and tests need {}: install them",
                missing.join(", ")
            );
        }
        apt_install(&missing, &mut updated)?;
    }
    println!(
        "setup: eBPF toolchain ready (rustc {}, bpf-linker {})",
        rustc.display(),
        bpf_linker().map_or("?".into(), |p| p.display().to_string())
    );
    Ok(())
}

fn manual_route() -> ! {
    eprintln!(
        "setup: this system has no apt-get. Install the eBPF toolchain by hand:\n  \
         rustup toolchain install nightly --component rust-src\n  \
         cargo install bpf-linker   (needs LLVM development files matching nightly's LLVM)\n\
         or set SONDE_BPF_RUSTC to a rustc whose sysroot has the library source."
    );
    std::process::exit(1);
}

/// `cargo ARGS` for another target (`target`), in its own `target_dir`: std
/// built from source by the rustc with library source (`-Z BUILD_STD`, e.g.
/// `build-std` or `build-std=std,panic_abort`; `RUSTC_BOOTSTRAP`), `cc` as
/// the target's C compiler and linker. What the static musl build, the static
/// arm64 build and the arm64 guest's build share; each adds its own flags.
pub fn cross_cargo(args: &[&str], target: &str, build_std: &str, cc: &str, target_dir: &Path) -> Result<Command> {
    let rustc = rustc_with_source().context("no rustc with library source: run `cargo xtask setup`")?;
    let mut c = cargo();
    c.args(args)
        .args(["--target", target, "-Z", build_std])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", rustc)
        .env(format!("CC_{}", target.replace('-', "_")), cc)
        .env(
            format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_")),
            cc,
        )
        .env("CARGO_TARGET_DIR", target_dir);
    Ok(c)
}
