//! A real old Debian userland for the 5.10 guest: a bullseye (Debian 11,
//! glibc 2.31) root filesystem made by `debootstrap` from Debian's packages,
//! cached under `target/vm/bullseye`, with the old-userland fixture compiled
//! against its own C library. The guest unpacks it at `/bullseye`; sonde-tests'
//! `bullseye.rs` installs the dist `.deb` there with `dpkg -i`, reads
//! `man sonde`, and traces the fixture with the installed `sonde`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run_cmd};

/// The suite, and the archive key its Release file is signed with
/// (Debian's `debian-archive-keyring`).
const SUITE: &str = "bullseye";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-bullseye-stable.gpg";
/// Beyond `minbase`: `man` for the package's man pages, the C library's
/// headers and start files to build the fixture against.
const INCLUDE: &str = "man-db,libc6-dev";
/// Written last: a root without it is an interrupted debootstrap, made again.
const COMPLETE: &str = ".sonde-complete";

/// `target/vm/bullseye`: the directory the archive is packed from; the root
/// itself is its `bullseye` subdirectory (the guest's `/bullseye`).
fn dir() -> PathBuf {
    root().join("target/vm/bullseye")
}

/// The root filesystem, made once.
fn rootfs() -> Result<PathBuf> {
    let r = dir().join(SUITE);
    if r.join(COMPLETE).exists() {
        return Ok(r);
    }
    let _ = std::fs::remove_dir_all(&r);
    std::fs::create_dir_all(&r)?;
    println!("vm: debootstrap {SUITE} (minbase + {INCLUDE}) into {}", r.display());
    run_cmd(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}")])
            .arg(format!("--keyring={KEYRING}"))
            .arg(SUITE)
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
    // The loader's link is absolute (/lib/x86_64-linux-gnu/ld-2.31.so): the
    // host's linker, given this root as sysroot, would follow it out of the
    // root. The same file, named relatively.
    let ld = r.join("lib64/ld-linux-x86-64.so.2");
    let _ = std::fs::remove_file(&ld);
    std::os::unix::fs::symlink("../lib/x86_64-linux-gnu/ld-2.31.so", &ld)?;
    std::fs::write(r.join(COMPLETE), "")?;
    Ok(r)
}

/// The fixture `sonde-tests/fixtures/oldland.c`, compiled by this machine's
/// gcc against the root's headers, start files and C library (so it needs
/// nothing newer than glibc 2.31), installed as `/opt/oldland/oldland`.
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
    let out = r.join("opt/oldland");
    std::fs::create_dir_all(&out)?;
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
            .arg(out.join("oldland"))
            .arg(root().join("sonde-tests/fixtures/oldland.c")),
    )
    .context("compiling the old-userland fixture against bullseye's C library")
}

/// The root packed as a gzip'd cpio archive of `bullseye/…`, to be appended
/// to a guest's initramfs (the kernel unpacks concatenated archives in turn).
pub fn image() -> Result<PathBuf> {
    let r = rootfs()?;
    build_fixture(&r)?;
    let image = root().join("target/vm/bullseye.cpio.gz");
    run_cmd(Command::new("sh").current_dir(dir()).arg("-c").arg(format!(
        "find {SUITE} | cpio -o -H newc --quiet | gzip -1 > {}",
        image.display()
    )))?;
    Ok(image)
}
