//! Binaries named "as a process sees them" (`-p`, `--container`, the agent's
//! `pid`/`container`) resolve inside that process's root: a symlink planted in
//! a container, absolute or climbing with `..`, never reaches the host's files.
//! The container here is real: a process in its own mount namespace, chrooted.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sonde_tests::*;

/// A process in a new mount namespace whose root is `root`, waiting on stdin.
struct Container {
    child: Child,
    root: PathBuf,
}

impl Container {
    fn start(root: &Path) -> Container {
        let r = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).expect("path");
        let mut cmd = Command::new("/waiter");
        cmd.stdin(Stdio::piped()).stdout(Stdio::null());
        // SAFETY: between fork and exec: unshare, chroot and chdir only.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::chroot(r.as_ptr()) != 0
                    || libc::chdir(c"/".as_ptr()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start the container's process");
        // Wait until it sits in read(), chrooted.
        for _ in 0..500 {
            if std::fs::read_to_string(format!("/proc/{}/syscall", child.id()))
                .is_ok_and(|s| s.split_whitespace().next() == Some("0"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Container {
            child,
            root: root.to_path_buf(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn symlinks_planted_in_a_container_never_reach_the_host() {
    require_root();
    let root = std::env::temp_dir().join(format!("sonde-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).expect("rootfs");
    std::fs::copy(fixtures().join("fixture-waiter-static"), root.join("waiter")).expect("waiter");
    // The container's own binary, and a relative link to it: both fine.
    std::fs::copy(fixtures().join("fixture-pie"), root.join("bin/app")).expect("app");
    std::os::unix::fs::symlink("app", root.join("bin/rel")).expect("symlink");
    // Links aimed at the host's fixture-pie: absolute, and climbing with `..`.
    let host = fixtures().join("fixture-pie");
    std::os::unix::fs::symlink(&host, root.join("bin/abs")).expect("symlink");
    let climb = format!("../../../../../../../../../..{}", host.display());
    std::os::unix::fs::symlink(&climb, root.join("bin/climb")).expect("symlink");
    let c = Container::start(&root);
    let pid = c.pid();
    for (path, ok) in [
        ("/bin/app", true),
        ("/bin/rel", true),
        ("/bin/abs", false),
        ("/bin/climb", false),
    ] {
        for flag in ["-p", "--container"] {
            let args = if flag == "-p" {
                vec!["list", "-p", &pid, path, "fx_*"]
            } else {
                vec!["count", "-d", "0.2", "--container", &pid, path, "fx_*"]
            };
            let (code, out, err) = run_sonde(&args);
            if ok {
                assert_eq!(code, 0, "{args:?}: {err}");
                if flag == "-p" {
                    assert!(out.contains("4 functions in"), "{args:?}: {out}");
                }
            } else {
                assert_eq!(code, 2, "{args:?} reached the host's file: {out} {err}");
                assert!(err.contains("No such file"), "{args:?}: {err}");
            }
        }
    }
}
