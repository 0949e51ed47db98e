//! `cargo xtask vm`: the integration tests on other kernels and machines under
//! QEMU (TCG).
//!
//! Debian's cloud kernels (bookworm's 6.1, bullseye's 5.10 for x86-64;
//! bookworm's 6.1 for arm64), each fetched through a private apt
//! configuration under `target/vm/apt-<suite>[-arm64]` (never the system's)
//! and cached under `target/vm`; an initramfs with busybox, the test binaries
//! and their shared libraries; one boot per kernel with a hard timeout. The
//! arm64 guest runs the same tests cross-built on this machine
//! (`aarch64-unknown-linux-gnu`, std through `-Z build-std` from the rustc
//! with library source, Debian's `aarch64-linux-gnu-gcc` as linker), on
//! `qemu-system-aarch64 -M virt`. The x86-64 guests also unpack a Debian
//! root filesystem (`userland.rs`: bullseye on 5.10, bookworm on 6.1), a
//! second archive after the initramfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{root, run_cmd};
use crate::machine::Machine;

/// What a machine means to its guests: its toolchain, its binaries, its time.
impl Machine {
    /// The Rust target the guest's binaries are built for, when not the host's.
    fn cross_target(self) -> Option<&'static str> {
        match self {
            Machine::X86_64 => None,
            Machine::Arm64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// Cargo's target directory for the guest's binaries.
    fn target_dir(self) -> PathBuf {
        match self {
            Machine::X86_64 => root().join("target"),
            Machine::Arm64 => root().join("target/aarch64"),
        }
    }

    /// Where cargo puts the guest's binaries.
    fn out_dir(self) -> PathBuf {
        match self.cross_target() {
            None => self.target_dir().join("debug"),
            Some(t) => self.target_dir().join(t).join("debug"),
        }
    }

    /// Prefix of the target's binutils.
    fn tool_prefix(self) -> &'static str {
        match self {
            Machine::X86_64 => "",
            Machine::Arm64 => "aarch64-linux-gnu-",
        }
    }

    /// The longest one guest may run: TCG emulating arm64 on x86-64 is
    /// several times slower than emulating x86-64 (measured: the same tests
    /// 4-5x slower in debug builds).
    fn timeout(self) -> Duration {
        match self {
            Machine::X86_64 => Duration::from_secs(900),
            Machine::Arm64 => Duration::from_secs(2400),
        }
    }
}

/// A kernel of the matrix.
struct Kernel {
    name: &'static str,
    /// Debian suite, fetched through a private apt configuration.
    suite: &'static str,
    /// Metapackage that depends on the current image.
    meta: &'static str,
    arch: Machine,
    /// The Debian userland the guest also unpacks at `/<suite>`, where the
    /// dist `.deb` is installed and run (see `userland.rs`).
    userland: Option<&'static str>,
}

const KERNELS: [Kernel; 3] = [
    Kernel {
        name: "5.10",
        suite: "bullseye",
        meta: "linux-image-cloud-amd64",
        arch: Machine::X86_64,
        userland: Some("bullseye"),
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        meta: "linux-image-cloud-amd64",
        arch: Machine::X86_64,
        userland: Some("bookworm"),
    },
    Kernel {
        name: "arm64-6.1",
        suite: "bookworm",
        meta: "linux-image-cloud-arm64",
        arch: Machine::Arm64,
        userland: None,
    },
];

fn vm_dir() -> PathBuf {
    root().join("target/vm")
}

fn apt_options(suite: &str, arch: Machine) -> Result<Vec<String>> {
    let d = match arch {
        Machine::X86_64 => vm_dir().join(format!("apt-{suite}")),
        other => vm_dir().join(format!("apt-{suite}-{}", other.debian())),
    };
    for sub in ["etc/preferences.d", "state/lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    std::fs::write(
        d.join("etc/sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-{suite}-automatic.gpg] http://deb.debian.org/debian {suite} main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-{suite}-security-automatic.gpg] http://deb.debian.org/debian-security {suite}-security main\n"
        ),
    )?;
    let p = |s: &str| d.join(s).display().to_string();
    Ok(vec![
        "-o".into(),
        format!("APT::Architecture={}", arch.debian()),
        "-o".into(),
        format!("APT::Architectures={}", arch.debian()),
        "-o".into(),
        format!("Dir::Etc::SourceList={}", p("etc/sources.list")),
        "-o".into(),
        "Dir::Etc::SourceParts=/nonexistent".into(),
        "-o".into(),
        format!("Dir::Etc::PreferencesParts={}", p("etc/preferences.d")),
        "-o".into(),
        format!("Dir::State={}", p("state")),
        "-o".into(),
        "Dir::State::status=/dev/null".into(),
        "-o".into(),
        format!("Dir::Cache={}", p("cache")),
        // Downloads land in target/, which apt's sandbox user may not write.
        "-o".into(),
        "APT::Sandbox::User=root".into(),
    ])
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Downloads (once) and unpacks the kernel image; returns the vmlinuz path.
fn fetch_kernel(k: &Kernel) -> Result<PathBuf> {
    let dir = vm_dir().join(format!("kernel-{}", k.name));
    if let Some(v) = find_vmlinuz(&dir) {
        return Ok(v);
    }
    std::fs::create_dir_all(&dir)?;
    let opts = apt_options(k.suite, k.arch)?;
    println!("vm: apt-get update ({}, private configuration)", k.suite);
    run_cmd(Command::new("apt-get").args(&opts).args(["update", "-qq"]))?;
    let deps = output(Command::new("apt-cache").args(&opts).args(["depends", k.meta]))?;
    let image = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-"))
        .context("the metapackage names no kernel image")?
        .to_string();
    // Another machine's guest also needs that machine's busybox.
    let mut packages = vec![image.as_str()];
    if k.arch != Machine::X86_64 {
        packages.push("busybox-static");
    }
    println!("vm: downloading {}", packages.join(" "));
    run_cmd(
        Command::new("apt-get")
            .args(&opts)
            .args(["download", "-qq"])
            .args(&packages)
            .current_dir(&dir),
    )?;
    for deb in std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
    {
        run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("root")))?;
    }
    find_vmlinuz(&dir).context("no vmlinuz in the package")
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("root/boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// A cargo command building for `arch`: the host's toolchain for the host;
/// for another machine, its target with std built from source (the rustc
/// with library source, `RUSTC_BOOTSTRAP`), Debian's cross gcc as linker and
/// C compiler, in its own target directory.
fn cargo_for(arch: Machine, args: &[&str]) -> Result<Command> {
    let Some(target) = arch.cross_target() else {
        let mut cmd = crate::cmd::cargo();
        cmd.args(args);
        return Ok(cmd);
    };
    let gcc = format!("{}gcc", arch.tool_prefix());
    let mut cmd = crate::setup::cross_cargo(args, target, "build-std", &gcc, &arch.target_dir())?;
    // Emulated arm64 runs several times slower than emulated x86-64:
    // optimised code (std included, which `-Z build-std` otherwise builds
    // unoptimised) keeps the guest's run within its budget.
    cmd.env("CARGO_PROFILE_DEV_OPT_LEVEL", "1");
    Ok(cmd)
}

/// Builds the test binaries (and the `sonde` and `target-app` binaries the guest
/// runs beside them) for `arch` and returns the test binaries' paths.
fn test_binaries(arch: Machine) -> Result<Vec<PathBuf>> {
    run_cmd(&mut cargo_for(
        arch,
        &["build", "-p", "sonde-cli", "-p", "sonde-tests", "--bins"],
    )?)?;
    let out = output(
        cargo_for(
            arch,
            &[
                "test",
                "-p",
                "sonde-tests",
                "-p",
                "sonde",
                "-p",
                "sonde-cli",
                "--no-run",
                "--message-format=json",
            ],
        )?
        .stderr(Stdio::inherit()),
    )?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(kind)) = (v["executable"].as_str(), v["target"]["kind"][0].as_str()) else {
            continue;
        };
        if matches!(kind, "test" | "lib") {
            bins.push(PathBuf::from(exe));
        }
    }
    if bins.is_empty() {
        bail!("cargo test --no-run listed no test binaries");
    }
    Ok(bins)
}

/// Drops the DWARF of a debug build copied into the guest (symbols stay): the
/// test binaries are most of the initramfs, which the guest must unpack in RAM.
fn strip_debug(arch: Machine, path: &Path) -> Result<()> {
    run_cmd(
        Command::new(format!("{}objcopy", arch.tool_prefix()))
            .arg("--strip-debug")
            .arg(path),
    )
}

/// The shared libraries `path` needs, as paths on this machine: `ldd` for the
/// host's binaries; for another machine's, their `NEEDED` entries (and those
/// of the libraries found) in Debian's cross root `/usr/<triplet>/lib`.
fn libraries(arch: Machine, path: &Path) -> Result<Vec<PathBuf>> {
    if arch == Machine::X86_64 {
        let ldd = Command::new("ldd").arg(path).output()?;
        return Ok(String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
            .collect());
    }
    let cross = Path::new("/usr/aarch64-linux-gnu/lib");
    let mut found: Vec<PathBuf> = Vec::new();
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        let d = Command::new("readelf").arg("-dlW").arg(&p).output()?;
        for line in String::from_utf8_lossy(&d.stdout).lines() {
            let name = if let Some(rest) = line.split("Shared library: [").nth(1) {
                rest.trim_end_matches(']')
            } else if let Some(rest) = line.split("program interpreter: ").nth(1) {
                rest.trim_end_matches(']').rsplit('/').next().unwrap_or_default()
            } else {
                continue;
            };
            let lib = cross.join(name);
            // Libraries beside the binary ($ORIGIN: the fixtures' own) are copied with it.
            if lib.exists() && !found.contains(&lib) {
                found.push(lib.clone());
                todo.push(lib);
            }
        }
    }
    Ok(found)
}

fn copy_with_libs(arch: Machine, src: &Path, dst: &Path, rootfs: &Path) -> Result<()> {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::copy(src, dst).with_context(|| format!("copy {}", src.display()))?;
    for lib in libraries(arch, src)? {
        // Another machine's libraries go where its loader looks: the loader
        // in /lib, the others in /lib/<triplet>.
        let to = match arch {
            Machine::X86_64 => rootfs.join(lib.strip_prefix("/")?),
            Machine::Arm64 => {
                let name = lib.file_name().context("library name")?;
                if name.to_string_lossy().starts_with("ld-linux") {
                    rootfs.join("lib").join(name)
                } else {
                    rootfs.join("lib/aarch64-linux-gnu").join(name)
                }
            }
        };
        if !to.exists() {
            std::fs::create_dir_all(to.parent().context("lib dir")?)?;
            std::fs::copy(&lib, &to).with_context(|| format!("copy {}", lib.display()))?;
        }
    }
    Ok(())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
# Loopback up: `sonde serve`'s tests talk HTTP on 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
export SONDE_FIXTURES=/t/fixtures SONDE_BIN=/t/sonde SONDE_GUEST=1
# The static binary `cargo xtask dist` made for this machine, when it did.
[ -x /t/sonde-dist ] && export SONDE_DIST_BIN=/t/sonde-dist
[ -f /t/sonde.deb ] && export SONDE_DEB=/t/sonde.deb
# A Debian root filesystem, on the guests that unpack one (userland.rs).
for d in /bullseye /bookworm; do [ -d $d ] && export SONDE_USERLAND_ROOT=$d; done
# The guest emulates every instruction (TCG): a tenth of the host's fuzz budget.
export SONDE_FUZZ_INPUTS=2000
echo "SONDE-VM release $(uname -r)"
for t in /t/deps/*; do
  echo "SONDE-VM running $(basename $t)"
  $t --test-threads=1 --nocapture 2>&1
  echo "SONDE-VM exit $(basename $t) $?"
done
echo "SONDE-VM done"
poweroff -f
"#;

fn build_initramfs(arch: Machine, bins: &[PathBuf], busybox: &Path) -> Result<PathBuf> {
    let rootfs = vm_dir().join(format!("rootfs-{}", arch.debian()));
    let _ = std::fs::remove_dir_all(&rootfs);
    for d in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "t/deps",
        "sys/kernel/tracing",
        "sys/fs/bpf",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))
        .with_context(|| format!("no busybox at {} (busybox-static)", busybox.display()))?;
    std::fs::write(rootfs.join("init"), INIT)?;
    run_cmd(Command::new("chmod").arg("+x").arg(rootfs.join("init")))?;
    for b in bins {
        let name = b.file_name().context("binary name")?;
        let dst = rootfs.join("t/deps").join(name);
        copy_with_libs(arch, b, &dst, &rootfs)?;
        strip_debug(arch, &dst)?;
    }
    let out = arch.out_dir();
    copy_with_libs(arch, &out.join("target-app"), &rootfs.join("t/target-app"), &rootfs)?;
    copy_fixtures(arch, &rootfs.join("t/fixtures"), &rootfs)?;
    copy_with_libs(arch, &out.join("sonde"), &rootfs.join("t/sonde"), &rootfs)?;
    strip_debug(arch, &rootfs.join("t/sonde"))?;
    // `cargo xtask test` runs dist before the guests: its static binary for
    // this machine is checked in them (sonde-tests' cli.rs).
    let dist = match arch {
        Machine::X86_64 => root().join("target/dist/sonde"),
        Machine::Arm64 => root().join("target/dist/arm64/sonde"),
    };
    if dist.exists() {
        std::fs::copy(&dist, rootfs.join("t/sonde-dist"))?;
    }
    let deb = crate::dist::deb_path(arch.debian())?;
    if deb.exists() {
        std::fs::copy(&deb, rootfs.join("t/sonde.deb"))?;
    }
    let image = vm_dir().join(format!("initramfs-{}.cpio.gz", arch.debian()));
    run_cmd(Command::new("sh").current_dir(&rootfs).arg("-c").arg(format!(
        "find . | cpio -o -H newc --quiet | gzip -1 > {}",
        image.display()
    )))?;
    Ok(image)
}

/// The probe-target fixtures sonde-tests' build script compiled for `arch`
/// (the newest build directory), copied with the libraries they need.
fn copy_fixtures(arch: Machine, dst: &Path, rootfs: &Path) -> Result<()> {
    let build = arch.out_dir().join("build");
    let src = std::fs::read_dir(&build)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sonde-tests-"))
        .map(|e| e.path().join("out/fixtures"))
        .filter(|p| p.is_dir())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no fixtures built (cargo build -p sonde-tests)")?;
    run_cmd(Command::new("cp").arg("-a").arg(&src).arg(dst))?;
    for exe in [
        "fixture-cpp",
        "fixture-pie",
        "fixture-nopie",
        "fixture-rs-nopie",
        "fixture-sleeper",
        "fixture-semaphore",
        "fixture-hostile",
    ] {
        if src.join(exe).exists() {
            copy_with_libs(arch, &src.join(exe), &dst.join(exe), rootfs)?;
        }
    }
    Ok(())
}

/// `initramfs` followed by the archive of Debian `suite`'s root, for guest `k`.
fn with_userland(k: &Kernel, suite: &str, initramfs: &Path) -> Result<PathBuf> {
    let old = crate::userland::image(suite)?;
    let both = vm_dir().join(format!("initramfs-{}.cpio.gz", k.name));
    let mut out = std::fs::File::create(&both)?;
    for part in [initramfs, old.as_path()] {
        std::io::copy(&mut std::fs::File::open(part)?, &mut out)?;
    }
    Ok(both)
}

/// What one kernel's run showed.
struct Report {
    kernel: String,
    release: String,
    passed: u64,
    failed: u64,
    /// `SKIP test: what: why` lines: parts of tests this kernel could not run.
    skipped: Vec<String>,
    tier: String,
    ok: bool,
    seconds: f64,
    log: String,
}

fn boot(k: &Kernel, vmlinuz: &Path, initramfs: &Path) -> Result<Report> {
    let name = k.name;
    let start = Instant::now();
    // arm64: QEMU's `virt` board with a Cortex-A72 (ARMv8.0: no pointer
    // authentication to emulate), its PL011 UART as console.
    let (qemu, machine, console): (&str, &[&str], &str) = match k.arch {
        Machine::X86_64 => ("qemu-system-x86_64", &[], "console=ttyS0"),
        Machine::Arm64 => (
            "qemu-system-aarch64",
            &["-M", "virt", "-cpu", "cortex-a72"],
            "console=ttyAMA0",
        ),
    };
    let mut child = Command::new(qemu)
        .args(machine)
        // One host thread runs both vCPUs (`thread=single`): with multi-threaded
        // TCG a vCPU can run stale translated code of the uprobe XOL page after
        // the kernel rewrote a slot for another thread's single-step, which
        // crashes traced multi-threaded programs in the guest only (measured: a
        // C program whose threads single-step different instructions crashed
        // 6 of 6 runs on 5.10 and 6.1 with MTTCG, 0 of 6 with thread=single,
        // -smp 1, or on hardware). The same for both machines.
        .args([
            "-accel",
            "tcg,thread=single",
            "-m",
            "3072",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &format!("{console} panic=-1 quiet")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {qemu}"))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    // The guest's output, kept as it comes in target/vm/<kernel>.log (to
    // follow a long run: `tail -f`) and returned whole at the end.
    let live = vm_dir().join(format!("{name}.log"));
    let reader = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut s = String::new();
        let mut file = std::fs::File::create(&live).ok();
        let mut r = std::io::BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if let Some(f) = file.as_mut() {
                let _ = f.write_all(&buf);
            }
            s.push_str(&String::from_utf8_lossy(&buf));
            buf.clear();
        }
        s
    });
    let mut timed_out = false;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > k.arch.timeout() {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = reader.join().unwrap_or_default();
    let mut r = Report {
        kernel: name.to_string(),
        release: String::new(),
        passed: 0,
        failed: 0,
        skipped: Vec::new(),
        tier: "?".into(),
        ok: !timed_out,
        seconds: start.elapsed().as_secs_f64(),
        log: String::new(),
    };
    let mut done = false;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rel) = line.split("SONDE-VM release ").nth(1) {
            r.release = rel.to_string();
        } else if let Some(t) = line.split("planner tier: ").nth(1) {
            r.tier = t.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("SONDE-VM exit ") {
            if !rest.ends_with(" 0") {
                r.ok = false;
            }
        } else if let Some(rest) = line.split("SKIP ").nth(1) {
            // The first skip of a test shares the line libtest began with
            // `test name ... ` (output is not captured in the guests).
            r.skipped.push(rest.to_string());
        } else if line == "SONDE-VM done" {
            done = true;
        } else if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let part = part
                    .trim()
                    .trim_start_matches("ok.")
                    .trim_start_matches("FAILED.")
                    .trim();
                if let Some(n) = part.strip_suffix(" passed") {
                    r.passed += n.trim().parse::<u64>().unwrap_or(0);
                } else if let Some(n) = part.strip_suffix(" failed") {
                    r.failed += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    r.ok &= done && r.failed == 0 && r.passed > 0;
    if timed_out {
        r.log = format!("timed out after {:?}\n{log}", k.arch.timeout());
    } else {
        r.log = log;
    }
    Ok(r)
}

/// Runs the matrix for `which` ("5.10", "6.1", "arm64-6.1" or "all"); returns
/// the tests passed and failed in all guests.
pub fn run(which: &str) -> Result<(u64, u64)> {
    let kernels: Vec<&Kernel> = KERNELS.iter().filter(|k| which == "all" || k.name == which).collect();
    if kernels.is_empty() {
        bail!("unknown kernel {which}: use 5.10, 6.1, arm64-6.1 or all");
    }
    // Every guest's kernel and initramfs first (one initramfs per machine),
    // then each machine's guests one after another, the machines side by
    // side: each guest runs on one host thread (`thread=single`), so the
    // arm64 guests take the second core while the x86-64 ones run.
    let mut booted: Vec<(&Kernel, PathBuf, PathBuf)> = Vec::new();
    for k in &kernels {
        let vmlinuz = fetch_kernel(k)?;
        let initramfs = match booted.iter().find(|(o, _, _)| o.arch == k.arch) {
            Some((_, _, image)) => image.clone(),
            None => {
                let bins = test_binaries(k.arch)?;
                let busybox = match k.arch {
                    Machine::X86_64 => PathBuf::from("/bin/busybox"),
                    _ => vmlinuz
                        .parent()
                        .and_then(Path::parent)
                        .context("kernel root")?
                        .join("bin/busybox"),
                };
                build_initramfs(k.arch, &bins, &busybox)?
            }
        };
        let initramfs = match k.userland {
            Some(suite) => with_userland(k, suite, &initramfs)?,
            None => initramfs,
        };
        booted.push((k, vmlinuz, initramfs));
    }
    let start = Instant::now();
    let mut reports: Vec<Report> = std::thread::scope(|s| {
        let per_arch: Vec<_> = [Machine::X86_64, Machine::Arm64]
            .into_iter()
            .map(|arch| {
                let mine: Vec<&(&Kernel, PathBuf, PathBuf)> = booted.iter().filter(|b| b.0.arch == arch).collect();
                s.spawn(move || -> Result<Vec<Report>> {
                    let mut out = Vec::new();
                    for (k, vmlinuz, initramfs) in mine {
                        println!("vm: booting {} ({})", k.name, vmlinuz.display());
                        out.push(boot(k, vmlinuz, initramfs)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in per_arch {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a guest thread panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    reports.sort_by_key(|r| KERNELS.iter().position(|k| k.name == r.kernel));
    println!(
        "\n{:<10} {:<28} {:>7} {:>7} {:>7} {:<10} {:>8}",
        "kernel", "release", "passed", "failed", "skipped", "tier", "seconds"
    );
    for r in &reports {
        println!(
            "{:<10} {:<28} {:>7} {:>7} {:>7} {:<10} {:>8.1}",
            r.kernel,
            r.release,
            r.passed,
            r.failed,
            r.skipped.len(),
            r.tier,
            r.seconds
        );
    }
    for r in &reports {
        println!("parts skipped on {} (test: what: why):", r.kernel);
        for s in &r.skipped {
            println!("  {s}");
        }
    }
    println!("matrix wall time: {:.1} s", start.elapsed().as_secs_f64());
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        println!("\n===== guest output, kernel {} =====\n{}", r.kernel, r.log);
    }
    if !failed.is_empty() {
        bail!(
            "the kernel matrix failed on {}",
            failed.iter().map(|r| r.kernel.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok((
        reports.iter().map(|r| r.passed).sum(),
        reports.iter().map(|r| r.failed).sum(),
    ))
}

/// Installs QEMU (both machines), busybox-static, cpio and the arm64 cross
/// compilers if missing.
pub fn setup() -> Result<()> {
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"),
        ("/bin/busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("/usr/sbin/debootstrap", "debootstrap"),
    ]
    .iter()
    .filter(|(bin, _)| {
        if bin.starts_with('/') {
            !Path::new(bin).exists()
        } else {
            Command::new("which")
                .arg(bin)
                .output()
                .map_or(true, |o| !o.status.success())
        }
    })
    .map(|(_, pkg)| *pkg)
    .collect();
    if !missing.is_empty() {
        println!("vm: apt-get install {}", missing.join(" "));
        run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}
