//! `cargo xtask dist`: what a user installs, in target/dist/: the `sonde`
//! binary (release, static: musl, no interpreter, no shared library, so it
//! runs on any distribution, glibc 2.31 included), its man pages and shell
//! completions, a tarball of them with the systemd unit and example config,
//! and a Debian package that lintian accepts without errors; the same for
//! arm64 (`target/dist/arm64/sonde`, `sonde_VERSION_arm64.deb`), cross-built.
//!
//! The static build: std for `x86_64-unknown-linux-musl` is built from the
//! library source of the eBPF build's rustc (`-Z build-std`), linked by
//! Debian's `musl-gcc` as a plain static executable (musl-gcc's specs would
//! give a static PIE an interpreter); its unwinder is LLVM's `libunwind.a`
//! from Debian's `libunwind-19-dev`, downloaded (not installed: it conflicts
//! with the system's libunwind) into target/musl-link/, with the one glibc
//! fortify symbol it calls (`__fprintf_chk`) supplied for musl.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{root, run_cmd};
use crate::machine::Machine;

/// The package's version: the workspace's.
fn version() -> Result<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))?;
    let in_package = manifest
        .split("[workspace.package]")
        .nth(1)
        .context("no [workspace.package] in Cargo.toml")?;
    in_package
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .context("no version in [workspace.package]")
}

/// Where dist puts the `.deb` for Debian architecture `arch` (`amd64`, `arm64`).
pub fn deb_path(arch: &str) -> Result<PathBuf> {
    Ok(root().join(format!("target/dist/sonde_{}_{arch}.deb", version()?)))
}

/// Writes `text` to `path`, its directories made, mode `mode`.
fn write(path: &Path, text: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` of `data` (reproducible: no name, no time), as Debian wants
/// man pages and changelogs.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("gzip")?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// The Debian packages `binary` needs at run time: libc6 at the newest
/// symbol version it uses, libgcc-s1 when linked against it.
fn depends(binary: &Path) -> Result<String> {
    let dynamic = Command::new("objdump").arg("-T").arg(binary).output()?;
    let text = String::from_utf8_lossy(&dynamic.stdout);
    let newest = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("(GLIBC_").or_else(|| w.strip_prefix("GLIBC_")))
        .map(|v| v.trim_end_matches(')').to_string())
        .filter_map(|v| {
            let parts: Vec<u32> = v.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
            Some((parts, v))
        })
        .max()
        .map(|(_, v)| v);
    let needed = Command::new("readelf").arg("-d").arg(binary).output()?;
    let needed = String::from_utf8_lossy(&needed.stdout);
    let mut deps = Vec::new();
    if needed.contains("[libc.so.6]") {
        deps.push(match newest {
            Some(v) => format!("libc6 (>= {v})"),
            None => "libc6".to_string(),
        });
    }
    if needed.contains("[libgcc_s.so.1]") {
        deps.push("libgcc-s1 (>= 4.2)".to_string());
    }
    Ok(deps.join(", "))
}

/// Runs `cargo xtask dist`.
pub fn run() -> Result<()> {
    let start = Instant::now();
    let version = version()?;
    let built = static_binary()?;
    let dist = root().join("target/dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(&dist)?;
    let binary = dist.join("sonde");
    std::fs::copy(&built, &binary)?;
    run_cmd(Command::new("strip").arg("--strip-unneeded").arg(&binary))?;
    check_alone(&binary, &dist)?;

    // Man pages and completions, from the binary's own clap definitions (the
    // same for every machine: made once, by the binary that runs here).
    let man = dist.join("man");
    run_cmd(Command::new(&binary).arg("man").arg(&man))?;
    let mut completions = Vec::new();
    for (shell, path) in [
        ("bash", "share/bash-completion/completions/sonde"),
        ("zsh", "share/zsh/vendor-completions/_sonde"),
        ("fish", "share/fish/vendor_completions.d/sonde.fish"),
    ] {
        let out = Command::new(&binary).args(["completions", shell]).output()?;
        if !out.status.success() {
            bail!("sonde completions {shell} failed");
        }
        completions.push((path, out.stdout));
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)?.flatten().map(|e| e.path()).collect();
    pages.sort();
    let extras = Extras { pages, completions };

    let (tarball, deb) = package(&dist, &version, &binary, Machine::X86_64, &extras)?;
    let size = std::fs::metadata(&binary)?.len();
    let needs = depends(&binary)?;
    println!(
        "dist: {} ({:.1} MiB, {}), {}, {}",
        binary.display(),
        size as f64 / (1 << 20) as f64,
        if needs.is_empty() {
            "static: needs no shared library".to_string()
        } else {
            format!("needs {needs}")
        },
        tarball.display(),
        deb.display(),
    );

    // arm64: the same, cross-built (its run is checked in the arm64 guest,
    // `cargo xtask vm --kernel arm64-6.1`, which carries it).
    let arm = static_binary_arm64()?;
    let arm_dir = dist.join("arm64");
    std::fs::create_dir_all(&arm_dir)?;
    let arm_binary = arm_dir.join("sonde");
    std::fs::copy(&arm, &arm_binary)?;
    run_cmd(
        Command::new("aarch64-linux-gnu-strip")
            .arg("--strip-unneeded")
            .arg(&arm_binary),
    )?;
    let (tarball, deb) = package(&dist, &version, &arm_binary, Machine::Arm64, &extras)?;
    println!(
        "dist: {} ({:.1} MiB, static), {}, {}; all in {:.0} s",
        arm_binary.display(),
        std::fs::metadata(&arm_binary)?.len() as f64 / (1 << 20) as f64,
        tarball.display(),
        deb.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a machine means to its package.
impl Machine {
    /// How the binary is static, for lintian's override.
    fn libc(self) -> &'static str {
        match self {
            Machine::X86_64 => "musl",
            Machine::Arm64 => "glibc, static",
        }
    }
}

/// What every package holds beside the binary.
struct Extras {
    pages: Vec<PathBuf>,
    completions: Vec<(&'static str, Vec<u8>)>,
}

/// The tarball and the Debian package of `binary` for `machine`, checked
/// (the package's files by dpkg, the package by lintian).
fn package(dist: &Path, version: &str, binary: &Path, machine: Machine, extras: &Extras) -> Result<(PathBuf, PathBuf)> {
    // The tree both the tarball and the package hold, under a prefix.
    let lay_out = |prefix: &Path, etc: &Path| -> Result<()> {
        write(&prefix.join("bin/sonde"), &std::fs::read(binary)?, 0o755)?;
        for page in &extras.pages {
            let name = page.file_name().context("page name")?.to_string_lossy().into_owned();
            let gz = gzip(&std::fs::read(page)?)?;
            write(&prefix.join("share/man/man1").join(format!("{name}.gz")), &gz, 0o644)?;
        }
        for (path, script) in &extras.completions {
            write(&prefix.join(path), script, 0o644)?;
        }
        let doc = prefix.join("share/doc/sonde");
        write(
            &doc.join("examples/serve.toml"),
            &std::fs::read(root().join("contrib/serve.toml"))?,
            0o644,
        )?;
        write(&doc.join("copyright"), copyright().as_bytes(), 0o644)?;
        write(
            &etc.join("systemd/system/sonde-serve.service"),
            &std::fs::read(root().join("contrib/sonde-serve.service"))?,
            0o644,
        )?;
        Ok(())
    };

    // The tarball: sonde-VERSION-x86_64/{bin,share,lib}.
    let name = format!("sonde-{version}-{}", machine.rust());
    let tree = dist.join(&name);
    lay_out(&tree, &tree.join("lib"))?;
    write(
        &tree.join("README.md"),
        &std::fs::read(root().join("README.md"))?,
        0o644,
    )?;
    let tarball = dist.join(format!("{name}.tar.gz"));
    run_cmd(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(dist)
            .arg(&name),
    )?;

    // The Debian package.
    let deb_arch = machine.debian();
    let staging = dist.join(format!("deb-{deb_arch}"));
    lay_out(&staging.join("usr"), &staging.join("usr/lib"))?;
    let changelog = format!(
        "sonde ({version}) unstable; urgency=medium\n\n  * Built by cargo xtask dist.\n\n -- sonde developers <sonde@example.invalid>  Fri, 04 Dec 2026 00:00:00 +0000\n"
    );
    write(
        &staging.join("usr/share/doc/sonde/changelog.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;
    // Static on purpose: one binary for every distribution, glibc 2.31 too.
    write(
        &staging.join("usr/share/lintian/overrides/sonde"),
        format!(
            "# One static binary ({}) that runs on every distribution sonde supports.\n\
             sonde: statically-linked-binary [usr/bin/sonde]\n",
            machine.libc()
        )
        .as_bytes(),
        0o644,
    )?;
    let size_kib = dir_size(&staging.join("usr"))? / 1024;
    let control = format!(
        "Package: sonde\nVersion: {version}\nArchitecture: {deb_arch}\nMaintainer: sonde developers <sonde@example.invalid>\n\
         Installed-Size: {size_kib}\n{depends}Section: devel\nPriority: optional\n\
         Homepage: https://example.invalid/sonde\n\
         Description: trace user-space functions with uprobes and BPF cookies\n \
         sonde counts, times and traces calls of user-space functions (C, C++, Rust,\n \
         Go) with one eBPF program attached to many functions, told apart by BPF\n \
         cookies, on the best mechanism the kernel has (Linux 5.10 and later). It\n \
         includes a Prometheus exporter (sonde serve) for fleets.\n",
        depends = match depends(binary)? {
            d if d.is_empty() => String::new(),
            d => format!("Depends: {d}\n"),
        },
    );
    write(&staging.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    let deb = deb_path(deb_arch)?;
    run_cmd(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&staging)
            .arg(&deb),
    )?;
    // What the package holds, as dpkg sees it.
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "./usr/bin/sonde",
        "./usr/share/man/man1/sonde.1.gz",
        "./usr/share/man/man1/sonde-count.1.gz",
        "./usr/share/bash-completion/completions/sonde",
        "./usr/share/zsh/vendor-completions/_sonde",
        "./usr/share/fish/vendor_completions.d/sonde.fish",
        "./usr/lib/systemd/system/sonde-serve.service",
        "./usr/share/doc/sonde/copyright",
    ] {
        if !listing.lines().any(|l| l.ends_with(want)) {
            bail!("{} lacks {want}", deb.display());
        }
    }
    let lintian = Command::new("lintian")
        .args([
            "--fail-on",
            "error",
            "--suppress-tags",
            "bad-distribution-in-changes-file",
        ])
        .arg(&deb)
        .output()
        .context("lintian (installed by `cargo xtask setup`)")?;
    print!("{}", String::from_utf8_lossy(&lintian.stdout));
    if !lintian.status.success() {
        bail!("lintian found errors in {}", deb.display());
    }
    Ok((tarball, deb))
}

/// The arm64 binary: `aarch64-unknown-linux-gnu` with std built from source
/// and glibc linked statically (`+crt-static`: a static PIE, no interpreter;
/// Debian has no arm64 musl cross compiler), by `aarch64-linux-gnu-gcc`.
/// sonde calls nothing of glibc that needs its shared objects at run time
/// (no NSS, no `dlopen` reached: the ifunc lookup asks only libraries mapped
/// in sonde itself, and a static sonde maps none).
fn static_binary_arm64() -> Result<PathBuf> {
    let target = "aarch64-unknown-linux-gnu";
    let target_dir = root().join("target/aarch64-dist");
    run_cmd(
        crate::setup::cross_cargo(
            &["build", "--release", "-p", "sonde-cli"],
            target,
            "build-std=std,panic_abort",
            "aarch64-linux-gnu-gcc",
            &target_dir,
        )?
        .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let built = target_dir.join(target).join("release/sonde");
    let headers = Command::new("readelf").arg("-ld").arg(&built).output()?;
    let headers = String::from_utf8_lossy(&headers.stdout);
    if headers.contains("INTERP") || headers.contains("(NEEDED)") {
        bail!("{} is not static:\n{headers}", built.display());
    }
    Ok(built)
}

/// The musl target sonde is built for, for this machine's architecture.
fn musl_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// What `__fprintf_chk` (glibc's fortified `fprintf`, called by Debian's
/// glibc-built libunwind.a on its debug paths) is on musl: `vfprintf`.
const FORTIFY_SHIM: &str = r#"#include <stdarg.h>
#include <stdio.h>
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) {
    (void)flag;
    va_list ap;
    va_start(ap, fmt);
    int r = vfprintf(f, fmt, ap);
    va_end(ap);
    return r;
}
"#;

/// target/musl-link/ with `libunwind.a` and `libsonde_fortify.a`, made once.
fn musl_link_dir() -> Result<PathBuf> {
    let dir = root().join("target/musl-link");
    std::fs::create_dir_all(&dir)?;
    let unwind = dir.join("libunwind.a");
    if !unwind.exists() {
        let work = dir.join("download");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        run_cmd(
            Command::new("apt-get")
                .args(["download", "libunwind-19-dev"])
                .current_dir(&work),
        )
        .context("apt-get download libunwind-19-dev (LLVM's unwinder, for the static build)")?;
        let deb = std::fs::read_dir(&work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(work.join("x")))?;
        std::fs::copy(work.join("x/usr/lib/llvm-19/lib/libunwind.a"), &unwind)
            .context("libunwind-19-dev holds no usr/lib/llvm-19/lib/libunwind.a")?;
        let _ = std::fs::remove_dir_all(&work);
    }
    let shim = dir.join("libsonde_fortify.a");
    if !shim.exists() {
        let source = dir.join("fortify.c");
        let object = dir.join("fortify.o");
        std::fs::write(&source, FORTIFY_SHIM)?;
        run_cmd(
            Command::new("musl-gcc")
                .args(["-O2", "-c"])
                .arg(&source)
                .arg("-o")
                .arg(&object),
        )
        .context("musl-gcc (Debian's musl-tools, installed by `cargo xtask setup`)")?;
        run_cmd(Command::new("ar").arg("rcs").arg(&shim).arg(&object))?;
    }
    Ok(dir)
}

/// Builds the static `sonde` (see the module) and returns its path.
fn static_binary() -> Result<PathBuf> {
    let link = musl_link_dir()?;
    let target = musl_target();
    let target_dir = root().join("target/musl");
    run_cmd(
        crate::setup::cross_cargo(
            &["build", "--release", "-p", "sonde-cli"],
            &target,
            "build-std=std,panic_abort",
            "musl-gcc",
            &target_dir,
        )?
        .env(
            "RUSTFLAGS",
            format!(
                "-C link-self-contained=no -C relocation-model=static -C target-feature=+crt-static \
                     -L {} -l static=sonde_fortify",
                link.display()
            ),
        ),
    )?;
    let built = target_dir.join(&target).join("release/sonde");
    // Static means no interpreter and no shared library: checked, not assumed.
    let headers = Command::new("readelf").arg("-ld").arg(&built).output()?;
    let headers = String::from_utf8_lossy(&headers.stdout);
    if headers.contains("INTERP") || headers.contains("(NEEDED)") {
        bail!("{} is not static:\n{headers}", built.display());
    }
    Ok(built)
}

/// Runs the binary in a root holding nothing but it and a static program
/// (no libc, no loader, no /usr): only the kernel's /proc, /sys and /dev are
/// mounted, in a private mount namespace that goes with the run. It must count
/// the program's one call of `main` exactly, as root on this kernel.
fn check_alone(binary: &Path, dist: &Path) -> Result<()> {
    if !crate::cmd::is_root() {
        println!("dist: not root: the static binary's run in an empty root is not checked");
        return Ok(());
    }
    let root_dir = dist.join("alone");
    let _ = std::fs::remove_dir_all(&root_dir);
    for d in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root_dir.join(d))?;
    }
    std::fs::copy(binary, root_dir.join("sonde"))?;
    run_cmd(
        Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(root_dir.join("waiter"))
            .arg(root().join("sonde-tests/fixtures/waiter.c")),
    )?;
    let script = format!(
        "mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && mount --rbind /dev {r}/dev && \
         echo | chroot {r} /sonde count --json /waiter main -- /waiter",
        r = root_dir.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .context("unshare")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counted = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["functions"][0]["name"] == "main" && v["functions"][0]["count"] == 1);
    if !out.status.success() || !counted {
        bail!(
            "the static sonde alone in a root did not count main once:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&root_dir);
    println!("dist: the static binary counts exactly in a root with nothing else (no libc, no loader)");
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The package's copyright file (Debian's machine-readable format).
fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: sonde\n\
     Source: https://example.invalid/sonde\n\n\
     Files: *\n\
     Copyright: 2026 sonde developers\n\
     License: MIT or Apache-2.0\n \
     The sonde binary also contains code of the Rust crates it depends on, each\n \
     under its own license (MIT, Apache-2.0, BSD or ISC); the eBPF programs it\n \
     loads are GPL.\n\n\
     License: MIT\n \
     Permission is hereby granted, free of charge, to any person obtaining a copy\n \
     of this software and associated documentation files (the \"Software\"), to deal\n \
     in the Software without restriction, including without limitation the rights\n \
     to use, copy, modify, merge, publish, distribute, sublicense, and/or sell\n \
     copies of the Software, and to permit persons to whom the Software is\n \
     furnished to do so, subject to the following conditions:\n \
     .\n \
     The above copyright notice and this permission notice shall be included in\n \
     all copies or substantial portions of the Software.\n \
     .\n \
     THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n \
     IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n \
     FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE\n \
     AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n \
     LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,\n \
     OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE\n \
     SOFTWARE.\n\n\
     License: Apache-2.0\n \
     On Debian systems, the complete text of the Apache License, Version 2.0 is in\n \
     /usr/share/common-licenses/Apache-2.0.\n"
        .to_string()
}
