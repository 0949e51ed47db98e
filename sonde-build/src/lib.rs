//! Compiles an eBPF crate (written with `sonde-ebpf`) from a `build.rs`.
//!
//! ```no_run
//! // build.rs
//! if let Err(e) = sonde_build::EbpfCrate::new("ebpf").build() {
//!     panic!("{e}");
//! }
//! ```
//!
//! Each binary of the eBPF crate becomes `$OUT_DIR/<bin>.bpf.o`:
//! `include_bytes!(concat!(env!("OUT_DIR"), "/probes.bpf.o"))`.
//!
//! The eBPF toolchain is a Rust compiler whose sysroot carries the standard library
//! source (for `-Z build-std=core`) and `bpf-linker`. It is found in this order:
//! `SONDE_BPF_RUSTC` (a rustc path); a rustup `nightly` toolchain with `rust-src`;
//! a `rustc` with library source, such as Debian's `rustc-web` at `/usr/bin/rustc`.
//! `cargo xtask setup` installs one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an eBPF crate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No compiler with library source was found.
    #[error(
        "no eBPF Rust toolchain found (tried {tried}): run `cargo xtask setup`, or set \
         SONDE_BPF_RUSTC to a rustc whose sysroot has lib/rustlib/src/rust/library"
    )]
    NoToolchain {
        /// The candidates looked at.
        tried: String,
    },
    /// `bpf-linker` is not on PATH nor in ~/.cargo/bin.
    #[error("bpf-linker not found on PATH or in ~/.cargo/bin: run `cargo xtask setup`")]
    NoLinker,
    /// A required build-script variable is missing.
    #[error("environment variable {0} is not set (is this running from build.rs?)")]
    Env(&'static str),
    /// Cargo could not be started or the build failed.
    #[error("building eBPF crate {krate} failed: {detail}")]
    Cargo {
        /// Crate directory.
        krate: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// An I/O error on the named path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The compiler and linker that build eBPF crates.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// The rustc to use (`RUSTC` for the nested cargo).
    pub rustc: PathBuf,
    /// Directory holding `bpf-linker`, put first on PATH.
    pub linker_dir: PathBuf,
}

fn has_library_source(rustc: &Path) -> bool {
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file()
}

fn cargo_home_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(cargo_home_bin())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Toolchain {
    /// Finds the eBPF toolchain (see the crate documentation for the order).
    pub fn find() -> Result<Self, BuildError> {
        let linker = find_on_path("bpf-linker").ok_or(BuildError::NoLinker)?;
        let linker_dir = linker.parent().map(Path::to_path_buf).ok_or(BuildError::NoLinker)?;
        let mut tried = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(r) = env::var_os("SONDE_BPF_RUSTC") {
            candidates.push(r.into());
        }
        if let Ok(out) = Command::new("rustup")
            .args(["which", "--toolchain", "nightly", "rustc"])
            .output()
        {
            if out.status.success() {
                candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
            }
        }
        candidates.push("/usr/bin/rustc".into());
        if let Some(r) = find_on_path("rustc") {
            candidates.push(r);
        }
        for rustc in candidates {
            if has_library_source(&rustc) {
                return Ok(Toolchain { rustc, linker_dir });
            }
            tried.push(rustc.display().to_string());
        }
        Err(BuildError::NoToolchain {
            tried: tried.join(", "),
        })
    }
}

/// An eBPF crate to build.
#[derive(Debug, Clone)]
pub struct EbpfCrate {
    dir: PathBuf,
    watch: Vec<PathBuf>,
}

impl EbpfCrate {
    /// The crate at `dir`, relative to the calling package's manifest directory.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        let base = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
        let dir = base.join(dir);
        EbpfCrate {
            watch: vec![dir.join("src"), dir.join("Cargo.toml")],
            dir,
        }
    }

    /// Also rebuild when files under `path` change. Rarely needed: [`build`]
    /// already watches the crate, every file its sources pull in from
    /// elsewhere (`#[path = "../../src/event.rs"] mod event;`, `include!`,
    /// `include_str!`, `include_bytes!`, followed through the files they name)
    /// and the crates its `Cargo.toml` names by `path`.
    ///
    /// [`build`]: EbpfCrate::build
    pub fn watch(mut self, path: impl AsRef<Path>) -> Self {
        self.watch.push(path.as_ref().to_path_buf());
        self
    }

    /// Builds every binary of the crate into `$OUT_DIR/<bin>.bpf.o` and returns their
    /// paths.
    pub fn build(&self) -> Result<Vec<PathBuf>, BuildError> {
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or(BuildError::Env("OUT_DIR"))?);
        // The eBPF side's own crates rebuild the object when they change.
        let sonde_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let found = pulled_in(&self.dir);
        for p in self
            .watch
            .iter()
            .chain(&found)
            .chain(&[sonde_root.join("sonde-ebpf/src"), sonde_root.join("sonde-macros/src")])
        {
            println!("cargo:rerun-if-changed={}", p.display());
        }
        println!("cargo:rerun-if-env-changed=SONDE_BPF_RUSTC");
        let toolchain = Toolchain::find()?;
        let target_dir = shared_target_dir(&out_dir).join("bpf");
        let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.into());
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.dir)
            .args([
                "build",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--bins",
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        // The outer build's settings are for the host; none of them apply here.
        for (k, _) in env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_") && k != "CARGO_HOME"
                || k.starts_with("RUSTC")
                || k.starts_with("RUSTFLAGS")
                || k == "RUSTDOC"
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![toolchain.linker_dir.clone()];
        paths.extend(env::split_paths(&path));
        cmd.env("PATH", env::join_paths(paths).unwrap_or(path))
            .env("RUSTC", &toolchain.rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                [
                    "-Cdebuginfo=2",
                    "-Clink-arg=--btf",
                    "--cfg",
                    &format!("sonde_target_arch=\"{arch}\""),
                ]
                .join("\x1f"),
            );
        let out = cmd.output().map_err(|e| BuildError::Cargo {
            krate: self.dir.clone(),
            detail: format!("cannot run cargo: {e}"),
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Inside the user's own workspace, the nested build needs the eBPF
            // crate out of it: say how, before cargo's long explanation.
            let fix = if stderr.contains("believes it's in a workspace") {
                "the eBPF crate sits inside your workspace but is not built as its member: \
                 add an empty `[workspace]` table to its Cargo.toml (as `sonde new` does), \
                 or list it in the workspace's `exclude`\n"
            } else {
                ""
            };
            return Err(BuildError::Cargo {
                krate: self.dir.clone(),
                detail: format!(
                    "{fix}cargo exited with {} using rustc {}:\n{stderr}",
                    out.status,
                    toolchain.rustc.display(),
                ),
            });
        }
        let built = target_dir.join("bpfel-unknown-none/release");
        let mut objects = Vec::new();
        for bin in bin_names(&self.dir)? {
            let src = built.join(&bin);
            let dst = out_dir.join(format!("{bin}.bpf.o"));
            std::fs::copy(&src, &dst).map_err(|source| BuildError::Io { path: src, source })?;
            objects.push(dst);
        }
        Ok(objects)
    }
}

/// The binaries of an eBPF crate: `src/main.rs` as the package name, and
/// `src/bin/*.rs`.
fn bin_names(dir: &Path) -> Result<Vec<String>, BuildError> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|source| BuildError::Io {
        path: manifest.clone(),
        source,
    })?;
    let mut bins = Vec::new();
    if dir.join("src/main.rs").is_file() {
        let name = text
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix("name")
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .map(|r| r.trim().trim_matches('"').to_string())
            })
            .ok_or_else(|| BuildError::Cargo {
                krate: dir.to_path_buf(),
                detail: "Cargo.toml has no package name".into(),
            })?;
        bins.push(name);
    }
    if let Ok(rd) = std::fs::read_dir(dir.join("src/bin")) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs") {
                if let Some(stem) = p.file_stem() {
                    bins.push(stem.to_string_lossy().into_owned());
                }
            }
        }
    }
    Ok(bins)
}

/// The workspace's target directory (the one holding `CACHEDIR.TAG`), so every eBPF
/// crate shares one build of `core`.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.to_path_buf())
}

/// What an eBPF crate at `dir` builds from outside its `src/`: the files its
/// sources name with `#[path = "..."]`, `include!`, `include_str!` and
/// `include_bytes!` (string literals, relative to the naming file's
/// directory; followed through the files found, once each), and the
/// directories of the dependencies its `Cargo.toml` names by `path = "..."`.
/// A file shared with the host (a record type) is then never stale in the
/// object.
pub fn pulled_in(dir: &Path) -> Vec<PathBuf> {
    let src = dir.join("src");
    let mut todo: Vec<PathBuf> = rust_files(&src);
    let mut seen: std::collections::BTreeSet<PathBuf> = todo.iter().cloned().collect();
    let mut out = Vec::new();
    while let Some(file) = todo.pop() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let base = file.parent().unwrap_or(Path::new("."));
        for named in named_paths(&text) {
            let path = base.join(named);
            let path = path.canonicalize().unwrap_or(path);
            if !seen.insert(path.clone()) {
                continue;
            }
            if !path.starts_with(&src) {
                out.push(path.clone());
            }
            if path.extension().is_some_and(|e| e == "rs") {
                todo.push(path);
            }
        }
    }
    if let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) {
        for line in manifest.lines() {
            let mut rest = line;
            while let Some(i) = rest.find("path") {
                rest = &rest[i + 4..];
                let after = rest.trim_start();
                let Some(value) = after.strip_prefix('=').map(str::trim_start) else {
                    continue;
                };
                if let Some(lit) = string_literal(value) {
                    out.push(dir.join(lit));
                }
            }
        }
    }
    out
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(p),
                Ok(_) if p.extension().is_some_and(|x| x == "rs") => {
                    out.push(p.canonicalize().unwrap_or(p));
                }
                _ => {}
            }
        }
    }
    out
}

/// The paths a Rust source names in `#[path = "X"]`, `include!("X")`,
/// `include_str!("X")` and `include_bytes!("X")`.
fn named_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (marker, opener) in [
        ("#[path", '='),
        ("include!", '('),
        ("include_str!", '('),
        ("include_bytes!", '('),
    ] {
        let mut rest = text;
        while let Some(i) = rest.find(marker) {
            rest = &rest[i + marker.len()..];
            let Some(after) = rest.trim_start().strip_prefix(opener) else {
                continue;
            };
            if let Some(lit) = string_literal(after.trim_start()) {
                out.push(lit);
            }
        }
    }
    out
}

/// The plain string literal `text` starts with (no escapes), if any.
fn string_literal(text: &str) -> Option<String> {
    let body = text.strip_prefix('"')?;
    let end = body.find('"')?;
    let lit = &body[..end];
    (!lit.contains('\\')).then(|| lit.to_string())
}

#[cfg(test)]
mod pulled_in_tests {
    use super::*;

    #[test]
    fn shared_files_and_path_dependencies_are_found() {
        let root = std::env::temp_dir().join(format!("sonde-build-pulled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ebpf = root.join("ebpf");
        std::fs::create_dir_all(ebpf.join("src")).expect("mkdir");
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(
            ebpf.join("src/main.rs"),
            "#[path = \"../../src/event.rs\"]\nmod event;\nconst X: &[u8] = include_bytes!(\"../../blob.bin\");\n#[path=\"inner.rs\"] mod inner;\n",
        )
        .expect("main.rs");
        std::fs::write(ebpf.join("src/inner.rs"), "").expect("inner.rs");
        std::fs::write(root.join("src/event.rs"), "include!(\"more.rs\");").expect("event.rs");
        std::fs::write(root.join("src/more.rs"), "").expect("more.rs");
        std::fs::write(root.join("blob.bin"), "").expect("blob");
        std::fs::write(
            ebpf.join("Cargo.toml"),
            "[dependencies]\nshared = { path = \"../shared\" }\nsonde-ebpf = \"0.1\"\n",
        )
        .expect("Cargo.toml");
        let mut found = pulled_in(&ebpf);
        found.sort();
        let canon = root.canonicalize().expect("canonical");
        let mut want = vec![
            canon.join("src/event.rs"),
            canon.join("src/more.rs"),
            canon.join("blob.bin"),
            ebpf.join("../shared"),
        ];
        want.sort();
        assert_eq!(found, want);
        let _ = std::fs::remove_dir_all(&root);
    }
}
