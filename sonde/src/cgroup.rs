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

/// Cgroup ids named by their paths under the cgroup v2 mount (`/` its root),
/// read from the hierarchy when an id is not known yet; a cgroup removed since
/// it was seen keeps its name (cgroup v2 ids are not reused). Grows by one
/// entry per cgroup ever seen.
///
/// ```no_run
/// let mut names = sonde::cgroup::Names::default();
/// let id = sonde::cgroup::Cgroup::open("system.slice".as_ref())?.id();
/// assert_eq!(names.path(id).as_deref(), Some("/system.slice"));
/// # Ok::<(), sonde::cgroup::CgroupError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Names {
    known: std::collections::HashMap<u64, String>,
}

impl Names {
    /// The path of cgroup `id` (`/system.slice/nginx.service`), or `None`
    /// when no cgroup has it now and none had it before.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if !self.known.contains_key(&id) {
            let root = mount_point().and_then(|m| Cgroup::open(&m).ok());
            for (i, p) in root.map(|r| r.subtree_paths()).unwrap_or_default() {
                self.known.entry(i).or_insert_with(|| format!("/{}", p.display()));
            }
        }
        self.known.get(&id).cloned()
    }
}

/// The container runtimes whose cgroup names [`container_of`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Runtime {
    /// Docker: `docker-ID.scope` (systemd driver) or `/docker/ID` (cgroupfs driver).
    Docker,
    /// containerd through CRI: `cri-containerd-ID.scope`.
    Containerd,
    /// CRI-O: `crio-ID.scope`.
    CriO,
    /// Podman: `libpod-ID.scope`.
    Podman,
    /// A container under a `kubepods` cgroup named by its bare id (the
    /// cgroupfs driver): the runtime is not in the path.
    Cri,
}

impl Runtime {
    /// `docker`, `containerd`, `cri-o`, `podman` or `cri`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Cri => "cri",
        }
    }
}

/// A container as its cgroup path names it: see [`container_of`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Container {
    /// Who runs it.
    pub runtime: Runtime,
    /// Its id: 64 lowercase hexadecimal digits (what `docker ps --no-trunc`
    /// and `crictl ps` show, and Kubernetes' `containerID` after `://`).
    pub id: String,
    /// The Kubernetes pod's UID (`8c2b…-…`, with dashes) when the path is
    /// under `kubepods`.
    pub pod_uid: Option<String>,
}

/// The container a cgroup path (relative to the cgroup v2 mount, as
/// `/proc/PID/cgroup` gives it) belongs to, from the names runtimes give
/// their cgroups: systemd's `docker-ID.scope`, `cri-containerd-ID.scope`,
/// `crio-ID.scope`, `libpod-ID.scope` (not the `*-conmon-*` monitors), the
/// cgroupfs driver's `/docker/ID` and `/kubepods/…/podUID/ID`; the pod UID
/// from `kubepods-…-podUID.slice` or `podUID`. The deepest component that
/// names a container wins (a cgroup made inside a container is still that
/// container's). `None` for a path of no container (a service, a session).
/// Only hexadecimal ids and UIDs are accepted, so the results are safe as
/// label values.
///
/// ```
/// use sonde::cgroup::{container_of, Runtime};
/// let id = "a".repeat(64);
/// let c = container_of(&format!(
///     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f3e6a41_1b2c_4d5e_8f90_a1b2c3d4e5f6.slice/cri-containerd-{id}.scope"
/// )).expect("a container");
/// assert_eq!((c.runtime, c.id.as_str()), (Runtime::Containerd, id.as_str()));
/// assert_eq!(c.pod_uid.as_deref(), Some("0f3e6a41-1b2c-4d5e-8f90-a1b2c3d4e5f6"));
/// assert!(container_of("/system.slice/nginx.service").is_none());
/// ```
pub fn container_of(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let kube = parts.iter().any(|p| p.starts_with("kubepods"));
    let (at, runtime, id) = parts.iter().enumerate().rev().find_map(|(i, part)| {
        let (runtime, id) = container_part(part, i.checked_sub(1).map(|j| parts[j]), kube)?;
        Some((i, runtime, id))
    })?;
    let pod_uid = parts[..at].iter().rev().find_map(|p| pod_part(p));
    Some(Container {
        runtime,
        id: id.to_ascii_lowercase(),
        pod_uid,
    })
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One path component naming a container: (runtime, id).
fn container_part<'a>(part: &'a str, parent: Option<&str>, kube: bool) -> Option<(Runtime, &'a str)> {
    if let Some(unit) = part.strip_suffix(".scope") {
        for (prefix, runtime) in [
            ("docker-", Runtime::Docker),
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::CriO),
            ("libpod-", Runtime::Podman),
        ] {
            if let Some(id) = unit.strip_prefix(prefix).filter(|id| is_id(id)) {
                return Some((runtime, id));
            }
        }
        return None;
    }
    if !is_id(part) {
        return None;
    }
    match parent {
        Some("docker") => Some((Runtime::Docker, part)),
        _ if kube => Some((Runtime::Cri, part)),
        _ => None,
    }
}

/// A pod's UID from `kubepods-…-podUID.slice` (systemd: dashes written as
/// underscores) or `podUID` (cgroupfs).
fn pod_part(part: &str) -> Option<String> {
    let uid = match part.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1.replace('_', "-"),
        Some(_) => return None,
        None => part.strip_prefix("pod")?.to_string(),
    };
    let uuid = uid.len() == 36
        && uid
            .bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit()));
    uuid.then(|| uid.to_ascii_lowercase())
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

    #[test]
    fn every_runtime_is_named_from_its_cgroup_path() {
        let id = "0123456789abcdef".repeat(4);
        let pod = "0f3e6a41-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        let pod_ = pod.replace('-', "_");
        let cases = [
            (format!("/system.slice/docker-{id}.scope"), Runtime::Docker, None),
            (format!("/docker/{id}"), Runtime::Docker, None),
            (format!("/machine.slice/libpod-{id}.scope/container"), Runtime::Podman, None),
            (format!("/system.slice/crio-{id}.scope"), Runtime::CriO, None),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{id}.scope"),
                Runtime::Containerd,
                Some(pod),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-{id}.scope"),
                Runtime::CriO,
                Some(pod),
            ),
            (format!("/kubepods/besteffort/pod{pod}/{id}"), Runtime::Cri, Some(pod)),
        ];
        for (path, runtime, pod_uid) in cases {
            let c = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(c.runtime, runtime, "{path}");
            assert_eq!(c.id, id, "{path}");
            assert_eq!(c.pod_uid.as_deref(), pod_uid, "{path}");
        }
        let upper = format!("/system.slice/docker-{}.scope", id.to_uppercase());
        assert_eq!(container_of(&upper).map(|c| c.id), Some(id.clone()));
        for none in [
            "/".to_string(),
            "/system.slice/nginx.service".into(),
            "/user.slice/user-1000.slice/session-2.scope".into(),
            format!("/system.slice/docker-{}.scope", &id[1..]),
            format!("/system.slice/crio-conmon-{id}.scope"),
            format!("/system.slice/libpod-conmon-{id}.scope"),
            format!("/somewhere/{id}"),
            format!("/system.slice/docker-{}x.scope", &id[1..]),
            "/kubepods/besteffort/podnot-a-uid".into(),
        ] {
            assert_eq!(container_of(&none), None, "{none}");
        }
        // A pod slice alone is no container; a malformed pod UID is left out.
        assert_eq!(container_of(&format!("/kubepods.slice/kubepods-pod{pod_}.slice")), None);
        let bad_pod = container_of(&format!("/kubepods/pod{}x/{id}", &pod[1..])).expect("container");
        assert_eq!(bad_pod.pod_uid, None);
    }
}
