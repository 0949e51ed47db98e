//! Cgroups made for a test (cgroup v2): the hierarchy (mounted here where
//! none is), groups removed on drop, fixture-pie started inside one.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fixtures;

/// The cgroup v2 hierarchy: where it is mounted, or mounted here for the test
/// (a guest's initramfs mounts none); `None` where the kernel has none.
pub fn hierarchy() -> Option<PathBuf> {
    if let Some(m) = sonde::cgroup::mount_point() {
        return Some(m);
    }
    let at = std::env::temp_dir().join("sonde-cgroup2");
    std::fs::create_dir_all(&at).ok()?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let target = c(at.to_str()?);
    // SAFETY: NUL-terminated strings; mounting a cgroup2 file system, as root.
    let r = unsafe {
        libc::mount(
            c("none").as_ptr(),
            target.as_ptr(),
            c("cgroup2").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    (r == 0).then_some(at)
}

/// A cgroup made for the test, removed (with the cgroups below it) on drop.
pub struct Made(pub PathBuf);

impl Made {
    /// Makes `path` (and its parents).
    pub fn new(path: PathBuf) -> Made {
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Made(path)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        // Deepest first; a cgroup goes once its processes have exited.
        let mut dirs = vec![self.0.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// fixture-pie started in `cgroup`, waiting for a line on stdin.
pub fn pie_in(cgroup: &Path) -> Child {
    let procs =
        std::ffi::CString::new(cgroup.join("cgroup.procs").into_os_string().into_encoded_bytes()).expect("no NUL");
    let mut cmd = Command::new(fixtures().join("fixture-pie"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    // SAFETY: between fork and exec, open/write/close of a prepared path: the
    // child moves itself into the cgroup before it runs the fixture.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
            libc::close(fd);
            if n != 2 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn fixture-pie in its cgroup")
}

/// Lets a fixture started by [`pie_in`] run to its end (it must succeed).
pub fn go(mut child: Child) {
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("go");
    assert!(child.wait().expect("wait").success());
}
