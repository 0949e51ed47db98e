//! The packaged `sonde` on real Debian userlands (#31): a root filesystem
//! made by `debootstrap` (`cargo xtask`'s userland.rs): Debian 11 (bullseye,
//! glibc 2.31) on the host after dist and in the 5.10 guest, Debian 12
//! (bookworm, glibc 2.36) in the 6.1 guest. The dist `.deb` installs there
//! with `dpkg -i`, `man sonde` shows its page, and the installed binary counts,
//! times and traces (strings, USDT, the root's own libc) a fixture built
//! against that C library, and serves the same counts as metrics — exactly,
//! on every tier the kernel has, leaving nothing attached; `dpkg --purge`
//! removes it all. Without a root (arm64, or `cargo test` alone) it skips by
//! name.

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sonde::Tier;
use sonde_tests::agent::{free_port, get, samples};
use sonde_tests::cli::{counts, json, owned};
use sonde_tests::{link_count, require_root, tier_supported};

/// The fixture inside the root, and what it calls after a line on stdin.
const OLDLAND: &str = "/opt/oldland/oldland";
const CALLS: [(&str, u64); 3] = [("ol_tick", 5), ("ol_nap", 3), ("ol_greet", 2)];
/// Where `chroot` is found (busybox's /bin in the guests, /usr/sbin here), and
/// the root's own programs after it.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The host's /proc, /sys (with tracefs and bpffs under it) and /dev, bound
/// into the root for as long as the test runs; detached (lazily, whole trees)
/// when it ends, so nothing of the host stays reachable inside the root.
struct Binds(Vec<PathBuf>);

impl Binds {
    fn new(root: &Path) -> Binds {
        let mut done = Vec::new();
        for what in ["proc", "sys", "dev"] {
            let target = root.join(what);
            let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
            let (src, dst) = (c(&Path::new("/").join(what)), c(&target));
            // SAFETY: valid C strings; a recursive bind mount.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "bind /{what}: {}", std::io::Error::last_os_error());
            done.push(target);
        }
        Binds(done)
    }
}

impl Drop for Binds {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            if let Ok(c) = CString::new(target.as_os_str().as_encoded_bytes()) {
                // SAFETY: a valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// `args` run inside the root, with `stdin` written to them.
fn chrooted(root: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    let _ = child.stdin.take().expect("stdin").write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait")
}

/// Like [`chrooted`], failing with the command's output unless it succeeds;
/// returns (stdout, stderr).
fn ok(root: &Path, args: &[&str], stdin: &str) -> (String, String) {
    let out = chrooted(root, args, stdin);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?} failed ({}):\n{o}\n{e}", out.status);
    (o, e)
}

/// Polls the agent's /metrics until `good` (at most 30 s).
fn scrape_until(port: u16, what: &str, good: impl Fn(&[(String, f64)]) -> bool) -> Vec<(String, f64)> {
    let start = std::time::Instant::now();
    loop {
        let s = get(port, "/metrics", "*/*")
            .map(|(_, b)| samples(&b))
            .unwrap_or_default();
        if good(&s) {
            return s;
        }
        assert!(start.elapsed().as_secs() < 30, "the agent never showed {what}: {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_debian_package_installs_and_traces_exactly_in_a_debian_root() {
    require_root();
    let (Some(root), Some(deb)) = (std::env::var_os("SONDE_USERLAND_ROOT"), std::env::var_os("SONDE_DEB")) else {
        sonde_tests::skip(
            "a Debian userland",
            "SONDE_USERLAND_ROOT or SONDE_DEB is unset (cargo xtask test sets both after dist, and the x86-64 guests)",
        );
        return;
    };
    let root = PathBuf::from(root);
    let _binds = Binds::new(&root);
    let links = link_count();

    // A real Debian userland, with its own C library.
    let (version, _) = ok(&root, &["ldd", "--version"], "");
    assert!(version.contains("Debian GLIBC 2."), "{version}");
    eprintln!("userland: {}", version.lines().next().unwrap_or_default());

    // dpkg -i, then the man page through the root's man-db.
    std::fs::copy(&deb, root.join("tmp/sonde.deb")).expect("copy the .deb");
    ok(&root, &["dpkg", "-i", "/tmp/sonde.deb"], "");
    let (status, _) = ok(&root, &["dpkg-query", "-W", "-f=${Status}", "sonde"], "");
    assert_eq!(status, "install ok installed");
    let (page, _) = ok(&root, &["man", "-P", "cat", "sonde"], "");
    assert!(page.contains("Trace user-space functions"), "{page}");
    let (page, _) = ok(&root, &["man", "-P", "cat", "sonde-count"], "");
    assert!(page.contains("sonde-count"), "{page}");
    assert!(root.join("usr/share/bash-completion/completions/sonde").exists());

    // count, on every tier this kernel has.
    for tier in Tier::ALL.into_iter().filter(|t| tier_supported(*t)) {
        let (out, err) = ok(
            &root,
            &[
                "sonde",
                "count",
                "--json",
                "--tier",
                tier.name(),
                OLDLAND,
                "ol_*",
                "--",
                OLDLAND,
            ],
            "go\n",
        );
        let report = json(&out);
        assert_eq!(report["tier"], tier.name(), "{err}");
        assert_eq!(counts(&report), owned(&CALLS), "{tier}: {report}");
    }

    // latency: three 20 ms naps, each timed.
    let (out, _) = ok(
        &root,
        &["sonde", "latency", "--json", OLDLAND, "ol_nap", "--", OLDLAND],
        "go\n",
    );
    let nap: &Value = &json(&out)["functions"][0];
    assert_eq!(
        (nap["count"].as_u64(), nap["timed"].as_u64()),
        (Some(3), Some(3)),
        "{nap}"
    );
    assert!(nap["min_ns"].as_u64().is_some_and(|n| n >= 20_000_000), "{nap}");
    let in_buckets: u64 = nap["histogram"]
        .as_array()
        .expect("histogram")
        .iter()
        .filter_map(|b| b["count"].as_u64())
        .sum();
    assert_eq!(in_buckets, 3, "{nap}");

    // trace: strings of a function and of a USDT probe.
    let (out, err) = ok(
        &root,
        &["sonde", "trace", OLDLAND, "ol_greet", "--args", "s", "--", OLDLAND],
        "go\n",
    );
    assert!(
        out.contains("ol_greet(\"debian\")") && out.contains("ol_greet(\"old glibc\")"),
        "{out}"
    );
    assert!(err.contains("2 calls"), "{err}");
    let (out, err) = ok(
        &root,
        &[
            "sonde",
            "trace",
            OLDLAND,
            "usdt:oldland:step",
            "--args",
            "i,s",
            "--",
            OLDLAND,
        ],
        "go\n",
    );
    for i in 0..4 {
        assert!(out.contains(&format!("usdt:oldland:step({i}, \"step {i}\")")), "{out}");
    }
    assert!(err.contains("4 calls"), "{err}");

    // The root's libc, found by name from inside it.
    let (out, err) = ok(
        &root,
        &["sonde", "count", "--json", "libc:getpid", "--", OLDLAND],
        "go\n",
    );
    assert!(err.contains("/x86_64-linux-gnu/libc"), "{err}");
    assert_eq!(counts(&json(&out)), owned(&[("getpid", 7)]), "{out}");

    // serve: the same counts as metrics, from the configuration the package
    // documents (root-owned, as the agent demands).
    let port = free_port();
    std::fs::create_dir_all(root.join("etc/sonde")).expect("etc/sonde");
    std::fs::write(
        root.join("etc/sonde/serve.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\n[[probe]]\nbinary = \"{OLDLAND}\"\nfunctions = [\"ol_tick\", \"ol_nap\"]\nlatency = true\n"
        ),
    )
    .expect("config");
    let mut agent = Command::new("chroot")
        .arg(&root)
        .args(["sonde", "serve", "/etc/sonde/serve.toml"])
        .env("PATH", PATH)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("sonde serve");
    let value = |s: &[(String, f64)], metric: &str, f: &str| {
        s.iter()
            .find(|(k, _)| k.starts_with(&format!("{metric}{{")) && k.contains(&format!("function=\"{f}\"")))
            .map_or(0.0, |(_, v)| *v)
    };
    scrape_until(port, "its configuration applied", |s| {
        s.iter().any(|(k, v)| k == "sonde_configuration_applied" && *v == 1.0)
    });
    ok(&root, &[OLDLAND], "go\n");
    let s = scrape_until(port, "5 calls of ol_tick", |s| {
        value(s, "sonde_calls_total", "ol_tick") >= 5.0
    });
    assert_eq!(value(&s, "sonde_calls_total", "ol_tick"), 5.0);
    assert_eq!(value(&s, "sonde_calls_total", "ol_nap"), 3.0);
    assert_eq!(value(&s, "sonde_call_duration_seconds_count", "ol_nap"), 3.0);
    assert!(value(&s, "sonde_call_duration_seconds_sum", "ol_nap") >= 0.06);
    let _ = agent.kill();
    let _ = agent.wait();

    // Nothing left: no link, and the package purged without a trace.
    assert_eq!(link_count(), links, "every link detached");
    ok(&root, &["dpkg", "--purge", "sonde"], "");
    assert!(!root.join("usr/bin/sonde").exists());
    assert!(!root.join("usr/share/man/man1/sonde.1.gz").exists());
}
