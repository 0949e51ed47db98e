//! Cgroups (v2) as the unit of scope: a cgroup named by its path, its id (what
//! `bpf_get_current_cgroup_id` returns for a task in it: the inode number of its
//! directory in the cgroup v2 file system), and the ids of its descendants, so a
//! program can count the processes of a container, a systemd service or a pod
//! and everything below it.
//!
//! ```no_run
//! let c = sonde::cgroup::Cgroup::open("system.slice/nginx.service".as_ref())?;
//! println!("{} is cgroup {}; {} cgroups below or at it", c.path().display(), c.id(), c.subtree_ids().len());
//! # Ok::<(), sonde::cgroup::CgroupError>(())
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `CGROUP2_SUPER_MAGIC` (`statfs` of a cgroup v2 file system).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Why a cgroup cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup)")]
    NotMounted,
    /// The path does not name a cgroup.
    #[error("no cgroup {path}: {source}{mount_hint}")]
    Missing {
        /// The path as given.
        path: PathBuf,
        /// What opening it said.
        source: std::io::Error,
        /// Where the hierarchy is mounted, when known.
        mount_hint: String,
    },
    /// The path is not in a cgroup v2 file system (a v1 hierarchy, or not a cgroup).
    #[error("{path} is not a cgroup v2 directory (cgroup v1 is not supported){mount_hint}")]
    NotCgroup2 {
        /// The path.
        path: PathBuf,
        /// Where the v2 hierarchy is mounted, when known.
        mount_hint: String,
    },
}

/// A cgroup v2, opened by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
    id: u64,
}

/// Where the cgroup v2 hierarchy is mounted (the first `cgroup2` line of
/// `/proc/self/mounts`), if anywhere.
pub fn mount_point() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(unescape_mount(at)))
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed statfs to fill.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

impl Cgroup {
    /// Opens the cgroup at `path`: absolute (`/sys/fs/cgroup/system.slice`), or
    /// relative to the cgroup v2 mount point (`system.slice/nginx.service`).
    pub fn open(path: &Path) -> Result<Cgroup, CgroupError> {
        let mount = mount_point();
        let mount_hint = mount.as_ref().map_or(String::new(), |m| {
            format!("; the cgroup v2 hierarchy is mounted at {}", m.display())
        });
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            mount.as_ref().ok_or(CgroupError::NotMounted)?.join(path)
        };
        let meta = std::fs::metadata(&full).map_err(|source| CgroupError::Missing {
            path: path.to_path_buf(),
            source,
            mount_hint: mount_hint.clone(),
        })?;
        if !meta.is_dir() || !is_cgroup2(&full) {
            return Err(CgroupError::NotCgroup2 { path: full, mount_hint });
        }
        Ok(Cgroup {
            path: full,
            id: meta.ino(),
        })
    }

    /// Its path (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its id: what `bpf_get_current_cgroup_id` (4.18) returns in its tasks.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its id and those of every cgroup below it, as the file system lists
    /// them now (a cgroup created later is not in it: call again).
    pub fn subtree_ids(&self) -> Vec<u64> {
        self.subtree_paths().into_iter().map(|(id, _)| id).collect()
    }

    /// Every cgroup at or below it: (id, path relative to it; empty for itself).
    pub fn subtree_paths(&self) -> Vec<(u64, PathBuf)> {
        let mut out = vec![(self.id, PathBuf::new())];
        let mut dirs = vec![PathBuf::new()];
        while let Some(rel) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(self.path.join(&rel)) else {
                continue;
            };
            for e in entries.flatten() {
                // Cgroups are directories; their files (cgroup.procs...) are not.
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() && !t.is_symlink() {
                    if let Ok(m) = e.metadata() {
                        let child = rel.join(e.file_name());
                        out.push((m.ino(), child.clone()));
                        dirs.push(child);
                    }
                }
            }
        }
        out
    }

    /// The cgroup of process `pid` (its line `0::/PATH` of `/proc/PID/cgroup`).
    pub fn of_process(pid: u32) -> Result<Cgroup, CgroupError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|source| CgroupError::Missing {
            path: PathBuf::from(format!("/proc/{pid}/cgroup")),
            source,
            mount_hint: String::new(),
        })?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or(CgroupError::NotMounted)?;
        Cgroup::open(Path::new(rel.trim_start_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/odd\\"), "/odd\\");
    }

    #[test]
    fn a_path_outside_cgroup2_is_refused_by_name() {
        match Cgroup::open(Path::new("/proc")) {
            Err(CgroupError::NotCgroup2 { path, .. }) => assert_eq!(path, Path::new("/proc")),
            other => panic!("{other:?}"),
        }
        match Cgroup::open(Path::new("/no/such/cgroup")) {
            Err(CgroupError::Missing { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
