//! Real Debian userlands for the packaged `sonde`: root filesystems made by
//! `debootstrap` from Debian's packages (bullseye: Debian 11, glibc 2.31;
//! bookworm: Debian 12, glibc 2.36), cached under `target/userland/<suite>`,
//! each with the old-userland fixture compiled against its own C library.
//! sonde-tests' `userland.rs` installs the dist `.deb` in one with `dpkg -i`,
//! reads `man sonde`, and traces the fixture with the installed `sonde`: on
//! the host (`cargo xtask test`, after dist) and in the guests, which unpack
//! the root at `/<suite>` (bullseye on 5.10, bookworm on 6.1).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd::{root, run_cmd};

/// Beyond `minbase`: `man` for the package's man pages, the C library's
/// headers and start files to build the fixture against.
const INCLUDE: &str = "man-db,libc6-dev";
/// Written last: a root without it is an interrupted debootstrap, made again.
const COMPLETE: &str = ".sonde-complete";
/// Where the fixture is installed in a root.
pub const FIXTURE: &str = "opt/oldland/oldland";

/// `target/userland`: roots are its `<suite>` subdirectories (a guest's
/// `/<suite>`), archives are packed from here.
fn dir() -> PathBuf {
    root().join("target/userland")
}

/// The root filesystem of Debian `suite`, made once.
fn rootfs(suite: &str) -> Result<PathBuf> {
    let r = dir().join(suite);
    // A test killed before its guard ran leaves the host's /proc, /sys and
    // /dev bound here: detached first, so nothing below can reach them.
    unmount_below(&r)?;
    if r.join(COMPLETE).exists() {
        return Ok(r);
    }
    let _ = std::fs::remove_dir_all(&r);
    std::fs::create_dir_all(&r)?;
    println!(
        "userland: debootstrap {suite} (minbase + {INCLUDE}) into {}",
        r.display()
    );
    run_cmd(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}")])
            .arg(format!(
                "--keyring=/usr/share/keyrings/debian-archive-{suite}-stable.gpg"
            ))
            .arg(suite)
            .arg(&r)
            .arg("http://deb.debian.org/debian"),
    )
    .context("debootstrap failed (cargo xtask setup installs it; deb.debian.org must be reachable)")?;
    // The downloaded packages are not part of the system.
    for e in std::fs::read_dir(r.join("var/cache/apt/archives"))?.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            std::fs::remove_file(e.path())?;
        }
    }
    relative_loader_link(&r)?;
    std::fs::write(r.join(COMPLETE), "")?;
    Ok(r)
}

/// Detaches (lazily) every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) -> Result<()> {
    let prefix = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        run_cmd(Command::new("umount").args(["-l", p]))?;
    }
    Ok(())
}

/// The loader's link `/lib64/ld-linux-x86-64.so.2` is absolute: the host's
/// linker, given the root as sysroot, would follow it out of the root. The
/// same file, named relatively.
fn relative_loader_link(r: &Path) -> Result<()> {
    // /lib64 itself may be a (relative) link to usr/lib64.
    let dir = r.join("lib64").canonicalize().context("the root's /lib64")?;
    let link = dir.join("ld-linux-x86-64.so.2");
    let target = std::fs::read_link(&link).context("the root's loader link")?;
    let Ok(inside) = target.strip_prefix("/") else {
        return Ok(());
    };
    let up = "../".repeat(dir.strip_prefix(r.canonicalize()?)?.components().count());
    std::fs::remove_file(&link)?;
    std::os::unix::fs::symlink(Path::new(&up).join(inside), &link)?;
    Ok(())
}

/// The fixture `sonde-tests/fixtures/oldland.c`, compiled by this machine's
/// gcc against the root's headers, start files and C library (so it needs
/// nothing newer than the root's glibc), installed as [`FIXTURE`].
fn build_fixture(r: &Path) -> Result<()> {
    let include = dir().join("include");
    std::fs::create_dir_all(include.join("sys"))?;
    // <sys/sdt.h> serves every libc; taken from this machine (systemtap-sdt-dev).
    let sdt = ["/usr/include/x86_64-linux-gnu/sys", "/usr/include/sys"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("sdt.h").exists())
        .context("<sys/sdt.h> (systemtap-sdt-dev) is needed: run `cargo xtask setup`")?;
    for h in ["sdt.h", "sdt-config.h"] {
        std::fs::copy(sdt.join(h), include.join("sys").join(h))?;
    }
    let out = r.join(FIXTURE);
    std::fs::create_dir_all(out.parent().context("fixture dir")?)?;
    let lib = r.join("usr/lib/x86_64-linux-gnu");
    run_cmd(
        Command::new("gcc")
            .arg(format!("--sysroot={}", r.display()))
            .arg(format!("-B{}", lib.display()))
            .arg(format!("-L{}", lib.display()))
            .arg(format!("-L{}", r.join("lib/x86_64-linux-gnu").display()))
            .arg("-isystem")
            .arg(&include)
            .args(["-O1", "-g", "-static-libgcc", "-o"])
            .arg(&out)
            .arg(root().join("sonde-tests/fixtures/oldland.c")),
    )
    .with_context(|| format!("compiling the old-userland fixture against {}'s C library", r.display()))
}

/// The root of `suite`, made if needed, with the fixture built: for the
/// host's run of sonde-tests' `userland.rs`.
pub fn prepare(suite: &str) -> Result<PathBuf> {
    let r = rootfs(suite)?;
    build_fixture(&r)?;
    Ok(r)
}

/// The root of `suite` packed as a gzip'd cpio archive of `<suite>/…`, to be
/// appended to a guest's initramfs (the kernel unpacks concatenated archives
/// in turn).
pub fn image(suite: &str) -> Result<PathBuf> {
    prepare(suite)?;
    let image = dir().join(format!("{suite}.cpio.gz"));
    run_cmd(Command::new("sh").current_dir(dir()).arg("-c").arg(format!(
        "find {suite} | cpio -o -H newc --quiet | gzip -1 > {}",
        image.display()
    )))?;
    Ok(image)
}
