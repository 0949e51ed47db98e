//! Where a binary named by the user is on disk.
//!
//! A name with a `/` is a path (inside the process's root when a pid is given and
//! the process lives in another mount namespace, e.g. a container). A bare name
//! (`libc`, `libssl.so.3`, `bash`) is looked up, in order:
//!
//! 1. the files mapped by process `pid` (`/proc/PID/maps`), when a pid is given;
//! 2. glibc's `/etc/ld.so.cache` (parsed);
//! 3. the directories of `LD_LIBRARY_PATH`, then the default library directories;
//! 4. `PATH`, for executables.
//!
//! `libc` matches `libc.so.6` and `libc-2.31.so`; `libssl.so` matches `libssl.so.3`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::TargetError;

const DEFAULT_DIRS: &[&str] = crate::arch::host::LIB_DIRS;

/// Resolves `name` to a file, as described in the module documentation.
pub fn find_binary(name: &Path, pid: Option<u32>) -> Result<PathBuf, TargetError> {
    if let Some(pid) = pid {
        crate::process::check(u64::from(pid))?;
    }
    let wanted = name.to_string_lossy().into_owned();
    if wanted.contains('/') {
        return Ok(match pid {
            Some(pid) if name.is_absolute() => as_seen_by(pid, name),
            _ => name.to_path_buf(),
        });
    }
    let mut looked = Vec::new();
    if let Some(pid) = pid {
        let maps = format!("/proc/{pid}/maps");
        match std::fs::read_to_string(&maps) {
            Ok(text) => {
                if let Some(path) = mapped_library(&text, &wanted) {
                    return Ok(as_seen_by(pid, &path));
                }
                looked.push(format!("the files process {pid} maps"));
            }
            Err(_) => return Err(TargetError::NoSuchProcess { pid }),
        }
    }
    if let Some(p) = ld_so_cache(Path::new("/etc/ld.so.cache")).into_iter().find(|p| {
        p.file_name()
            .is_some_and(|f| library_matches(&f.to_string_lossy(), &wanted))
            && p.exists()
    }) {
        return Ok(p);
    }
    looked.push("/etc/ld.so.cache".into());
    let ld_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    let dirs = ld_path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(DEFAULT_DIRS.iter().copied());
    for dir in dirs {
        if let Some(p) = find_in_dir(Path::new(dir), &wanted) {
            return Ok(p);
        }
    }
    looked.push("LD_LIBRARY_PATH and the default library directories".into());
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    looked.push("PATH".into());
    Err(TargetError::LibraryNotFound {
        name: wanted,
        looked: looked.join(", "),
    })
}

/// Absolute `path` as process `pid` sees it: through `/proc/PID/root` when the
/// process has another root or another mount namespace (a container, `unshare
/// -m` with its own mounts), else unchanged.
fn as_seen_by(pid: u32, path: &Path) -> PathBuf {
    if foreign_root(pid) {
        Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
    } else {
        path.to_path_buf()
    }
}

/// Whether file name `file` is library `wanted`: equal, or `wanted` followed by
/// `.so`, `.` (a version) or `-` (an old-style versioned name).
pub(crate) fn library_matches(file: &str, wanted: &str) -> bool {
    match file.strip_prefix(wanted) {
        Some("") => true,
        Some(rest) => {
            (rest.starts_with(".so") || (wanted.contains(".so") && rest.starts_with('.')) || rest.starts_with('-'))
                && (rest.contains(".so") || wanted.contains(".so"))
        }
        None => false,
    }
}

fn mapped_library(maps: &str, wanted: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|f| library_matches(&f.to_string_lossy(), wanted))
        })
        .map(PathBuf::from)
}

fn find_in_dir(dir: &Path, wanted: &str) -> Option<PathBuf> {
    let exact = dir.join(wanted);
    if exact.is_file() {
        return Some(exact);
    }
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| library_matches(&e.file_name().to_string_lossy(), wanted))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    // Prefer the runtime name (libc.so.6) over the development link (libc.so,
    // which may be a linker script).
    hits.sort_by_key(|p| (p.extension().is_some_and(|e| e == "so"), p.as_os_str().len()));
    hits.into_iter().next()
}

/// Whether process `pid` sees files differently from us: another root
/// directory, or another mount namespace (the same root with other mounts).
fn foreign_root(pid: u32) -> bool {
    let differs = |theirs: String, ours: &str| match (std::fs::metadata(theirs), std::fs::metadata(ours)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    };
    differs(format!("/proc/{pid}/root"), "/proc/self/root")
        || differs(format!("/proc/{pid}/ns/mnt"), "/proc/self/ns/mnt")
}

/// The library paths of glibc's `ld.so.cache` (new format, with or without the
/// old-format prefix), 64-bit x86 entries first. Empty if the file is absent or
/// malformed.
pub(crate) fn ld_so_cache(path: &Path) -> Vec<PathBuf> {
    std::fs::read(path).map(|d| parse_ld_so_cache(&d)).unwrap_or_default()
}

const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const HEADER: usize = 48;
const ENTRY: usize = 24;
const FLAG_X86_64: i32 = 0x0300;
const FLAG_ARCH_MASK: i32 = 0xff00;

fn parse_ld_so_cache(data: &[u8]) -> Vec<PathBuf> {
    let Some(base) = data.windows(NEW_MAGIC.len()).position(|w| w == NEW_MAGIC) else {
        return Vec::new();
    };
    let u32_at = |off: usize| {
        data.get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(nlibs) = u32_at(base + 20) else {
        return Vec::new();
    };
    let string = |off: u32| {
        let start = base + off as usize;
        let bytes = data.get(start..)?;
        let end = bytes.iter().position(|&b| b == 0)?;
        Some(PathBuf::from(String::from_utf8_lossy(&bytes[..end]).into_owned()))
    };
    let mut entries = Vec::new();
    for i in 0..nlibs as usize {
        let at = base + HEADER + i * ENTRY;
        let (Some(flags), Some(value)) = (u32_at(at), u32_at(at + 8)) else {
            break;
        };
        if let Some(p) = string(value) {
            entries.push(((flags as i32 & FLAG_ARCH_MASK) != FLAG_X86_64, p));
        }
    }
    entries.sort_by_key(|(other_arch, _)| *other_arch);
    entries.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(library_matches("libc.so.6", "libc"));
        assert!(library_matches("libc-2.31.so", "libc"));
        assert!(library_matches("libssl.so.3", "libssl.so.3"));
        assert!(library_matches("libssl.so.3", "libssl.so"));
        assert!(!library_matches("libcrypt.so.1", "libc"));
        assert!(!library_matches("libc_nonshared.a", "libc"));
    }

    #[test]
    fn reads_this_machines_ld_so_cache() {
        let libs = ld_so_cache(Path::new("/etc/ld.so.cache"));
        if Path::new("/etc/ld.so.cache").exists() {
            assert!(
                libs.iter().any(|p| p.file_name().is_some_and(|f| f == "libc.so.6")),
                "libc.so.6 not in {} entries",
                libs.len()
            );
        }
    }

    #[test]
    fn truncated_cache_is_empty_not_a_panic() {
        let mut data = b"glibc-ld.so.cache1.1".to_vec();
        data.extend_from_slice(&100u32.to_le_bytes());
        assert!(parse_ld_so_cache(&data).is_empty());
    }
}
