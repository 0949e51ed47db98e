//! `sonde serve`'s configuration file (TOML), read and checked.
//!
//! ```toml
//! listen = "127.0.0.1:9464"          # default
//! retry_seconds = 5                  # how often missing binaries are retried
//! max_functions = 4096               # map sizes, fixed at start
//! max_latency_functions = 256
//!
//! [[probe]]
//! binary = "libssl.so.3"             # a path or a bare library name
//! functions = ["SSL_read", "SSL_write"]   # globs, demangled names, usdt:PROV:NAME
//! latency = true                     # adds sonde_call_duration_seconds
//! # pid = 1234                       # only this process
//! # container = 4321                 # the binary as this process sees it
//! # cgroup = "system.slice/app.service"   # only this cgroup v2 and below
//! # container_labels = true          # calls per container: container_id, pod_uid
//! ```

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::error::CliError;

/// The default listen address (the port Prometheus' exporter list gives sonde's
/// neighbours: 9464 is OpenTelemetry's Prometheus exporter default).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `HOST:PORT` to serve `/metrics` on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Seconds between retries of probes that could not attach, and checks for
    /// binaries replaced on disk.
    #[serde(default = "default_retry")]
    pub retry_seconds: u64,
    /// Functions counted at once, all probes together (map sizes, fixed at start).
    #[serde(default = "default_max_functions")]
    pub max_functions: u32,
    /// Functions timed at once (`latency = true`), all probes together.
    #[serde(default = "default_max_latency")]
    pub max_latency_functions: u32,
    /// (function, cgroup) pairs counted per container scope
    /// (`container_labels = true`); calls past it are counted in
    /// `sonde_container_calls_lost_total`.
    #[serde(default = "default_max_container_series")]
    pub max_container_series: u32,
    /// The probes.
    #[serde(default, rename = "probe")]
    pub probes: Vec<Probe>,
    /// The endpoint's TLS and basic auth (`[web]`), taken at start.
    #[serde(default)]
    pub web: super::web::Web,
}

/// One `[[probe]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// A path or a bare library name (`libc`, `libssl.so.3`).
    pub binary: String,
    /// Patterns: globs over raw and demangled names, `name@VERSION`,
    /// `usdt:PROVIDER:NAME`.
    pub functions: Vec<String>,
    /// Also time each call (a session program).
    #[serde(default)]
    pub latency: bool,
    /// Only in this process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// A process of a container (e.g. `docker inspect -f '{{.State.Pid}}'`):
    /// `binary` is found as that process sees it (its mount namespace, its
    /// libraries), and every process running that file is counted.
    #[serde(default)]
    pub container: Option<u32>,
    /// Only calls from processes of this cgroup (v2) and the cgroups below
    /// it, filtered in the program: a path relative to the cgroup v2 mount
    /// (`system.slice/app.service`, `kubepods.slice/…-podUID.slice`) or
    /// absolute. Without `pid` or `container`, `binary` is found as the
    /// cgroup's first process sees it (a container's own files). A cgroup
    /// that does not exist yet leaves the probe pending, retried.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// `sonde_calls_total` per container: `container_id` and `pod_uid`
    /// labels, named from the calling process's cgroup path (Docker,
    /// containerd, CRI-O, Podman, Kubernetes); empty for a process in no
    /// container. At most `max_container_series` (function, cgroup) pairs.
    #[serde(default)]
    pub container_labels: bool,
}

/// Where a probe counts: every process, one process, or a cgroup; and
/// whether per container. Probes of one scope share their jobs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// Only this process (`pid = N`).
    pub pid: Option<u32>,
    /// Only this cgroup and below (`cgroup = "..."`).
    pub cgroup: Option<String>,
    /// Calls counted per container (`container_labels = true`).
    pub containers: bool,
}

impl Probe {
    /// The query that resolves this probe's functions: in the process of `pid`
    /// or `container` when set (libraries and paths as it sees them).
    pub fn query(&self) -> sonde::Functions {
        // Many probes name one binary: one cached read of its table for all.
        let query = sonde::Functions::in_binary(&self.binary)
            .patterns(self.functions.clone())
            .whole_table();
        let seen_by = self.pid.or(self.container).or_else(|| self.cgroup_process());
        match seen_by {
            Some(pid) => query.pid(pid),
            None => query,
        }
    }

    /// Where it counts.
    pub fn scope(&self) -> Scope {
        Scope {
            pid: self.pid,
            cgroup: self.cgroup.clone(),
            containers: self.container_labels,
        }
    }

    /// A process of its cgroup (or below), the first listed.
    fn cgroup_process(&self) -> Option<u32> {
        let cgroup = sonde::cgroup::Cgroup::open(Path::new(self.cgroup.as_deref()?)).ok()?;
        cgroup.subtree_paths().into_iter().find_map(|(_, rel)| {
            let procs = std::fs::read_to_string(cgroup.path().join(rel).join("cgroup.procs")).ok()?;
            procs.lines().find_map(|l| l.trim().parse().ok())
        })
    }
}

/// The largest configuration file read.
pub const MAX_FILE: u64 = 1 << 20;
/// `retry_seconds`: a second to a day.
pub const RETRY_SECONDS: (u64, u64) = (1, 86_400);
/// `max_functions`: what one uprobe_multi link takes at most (2^20).
pub const MAX_FUNCTIONS: (u64, u64) = (1, 1 << 20);
/// `max_latency_functions`: each one has its histogram's slots in every map.
pub const MAX_LATENCY_FUNCTIONS: (u64, u64) = (1, 65_536);
/// `max_container_series`: hash map entries of one scope.
pub const MAX_CONTAINER_SERIES: (u64, u64) = (1, 1 << 20);
/// Process ids: 1 to the kernel's `PID_MAX_LIMIT` on 64-bit (2^22).
pub const PIDS: (u64, u64) = (1, 1 << 22);

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_retry() -> u64 {
    5
}
fn default_max_functions() -> u32 {
    4096
}
fn default_max_latency() -> u32 {
    256
}
fn default_max_container_series() -> u32 {
    16_384
}

impl Config {
    /// Reads and checks `path`: a regular file of at most [`MAX_FILE`] bytes.
    pub fn read(path: &Path) -> Result<Config, CliError> {
        use std::io::Read;
        let fail = |e: String| CliError::new(format!("cannot read the configuration {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        // It decides what a root agent probes: nobody but root (or the agent's
        // own user) may be able to change it, nor its directory.
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir_meta = std::fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
        for (what, m, shown) in [("the file", &meta, path), ("its directory", &dir_meta, dir)] {
            // On a read-only mount (a Kubernetes ConfigMap mounted readOnly) nobody writes.
            if read_only_mount(shown) {
                continue;
            }
            if let Some(why) = writable_by_others(m.uid(), m.gid(), m.mode(), me, m.is_dir()) {
                return Err(fail(format!(
                    "{what} {} is {why}, and it decides what sonde probes as root: \
                     `chown root: {} && chmod go-w {}`",
                    shown.display(),
                    shown.display(),
                    shown.display()
                )));
            }
        }
        let mut text = String::new();
        file.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_FILE {
            return Err(fail(format!("larger than {MAX_FILE} bytes")));
        }
        Self::parse(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
    }

    /// Parses and checks a configuration's text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.check()?;
        Ok(config)
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "listen = \"{}\" is not HOST:PORT (e.g. \"{DEFAULT_LISTEN}\")",
                self.listen
            )
        })
    }

    fn check(&self) -> Result<(), String> {
        self.listen_addr()?;
        self.web.check()?;
        let range = |name: &str, v: u64, (low, high): (u64, u64)| {
            if (low..=high).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} = {v} is out of range: {low} to {high}"))
            }
        };
        range("retry_seconds", self.retry_seconds, RETRY_SECONDS)?;
        range("max_functions", self.max_functions.into(), MAX_FUNCTIONS)?;
        range(
            "max_latency_functions",
            self.max_latency_functions.into(),
            MAX_LATENCY_FUNCTIONS,
        )?;
        range(
            "max_container_series",
            self.max_container_series.into(),
            MAX_CONTAINER_SERIES,
        )?;
        for (i, p) in self.probes.iter().enumerate() {
            let at = format!("probe {} ({})", i + 1, p.binary);
            if p.binary.trim().is_empty() {
                return Err(format!("probe {}: binary is empty", i + 1));
            }
            if p.functions.is_empty() || p.functions.iter().any(|f| f.trim().is_empty()) {
                return Err(format!("{at}: functions must list at least one non-empty pattern"));
            }
            for (name, v) in [("pid", p.pid), ("container", p.container)] {
                if let Some(v) = v {
                    range(&format!("{at}: {name}"), v.into(), PIDS)?;
                }
            }
            if let Some(c) = &p.cgroup {
                if c.trim().is_empty() || c.contains('\0') || c.split('/').any(|part| part == "..") {
                    return Err(format!(
                        "{at}: cgroup = {c:?} is not a cgroup path (relative to the cgroup v2 mount, no `..`)"
                    ));
                }
                if p.pid.is_some() {
                    return Err(format!(
                        "{at}: pid and cgroup are exclusive (pid: one process; cgroup: its processes)"
                    ));
                }
            }
            if p.pid.is_some() && p.container.is_some() {
                return Err(format!(
                    "{at}: pid and container are exclusive (pid: one process; container: every process running the container's file)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_defaults_fill_in() {
        let c = Config::parse(
            r#"
            [[probe]]
            binary = "libc"
            functions = ["malloc", "free"]
            latency = true

            [[probe]]
            binary = "/usr/bin/app"
            functions = ["usdt:app:*"]
            pid = 42
            "#,
        )
        .expect("parse");
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(
            (c.retry_seconds, c.max_functions, c.max_latency_functions),
            (5, 4096, 256)
        );
        assert_eq!(c.probes.len(), 2);
        assert!(c.probes[0].latency && !c.probes[1].latency);
        assert_eq!(c.probes[1].pid, Some(42));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| Config::parse(t).unwrap_err();
        assert!(err("listen = \"nowhere\"").contains("HOST:PORT"));
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunctions = []").contains("at least one"));
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunction = [\"x\"]").contains("unknown field"));
        assert!(err("[[probe]]\nfunctions = [\"x\"]").contains("binary"));
        assert!(err("retry_seconds = 0").contains("retry_seconds"));
        assert!(err("retry_seconds = 9223372036854775807").contains("out of range"));
        assert!(err("max_functions = 4294967295").contains("out of range"));
        assert!(err("max_latency_functions = 0").contains("out of range"));
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\npid = 0").contains("pid = 0 is out of range"));
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\npid = 4294967295").contains("out of range"));
        assert!(
            err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\ncontainer = 99999999").contains("out of range")
        );
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\npid = 1\ncontainer = 2").contains("exclusive"));
        assert!(
            err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\npid = 1\ncgroup = \"a\"").contains("exclusive")
        );
        assert!(err("[[probe]]\nbinary = \"libc\"\nfunctions = [\"x\"]\ncgroup = \"a/../b\"").contains("no `..`"));
        assert!(err("max_container_series = 0").contains("out of range"));
        assert!(err("[[probe]\n").contains("TOML") || !err("[[probe]\n").is_empty());
    }
}

/// Whether `path` lies on a file system mounted read-only.
fn read_only_mount(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed statvfs to fill.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0
    }
}

/// Why a file (or directory) with this owner, group and mode could be changed
/// by a user other than root and `me`, or `None`. A sticky directory (like
/// /tmp) still lets others add files, but not replace this one: allowed.
fn writable_by_others(uid: u32, gid: u32, mode: u32, me: u32, dir: bool) -> Option<String> {
    if uid != 0 && uid != me {
        return Some(format!("owned by user {uid}"));
    }
    let sticky = dir && mode & 0o1000 != 0;
    if mode & 0o002 != 0 && !sticky {
        return Some("writable by every user".into());
    }
    if mode & 0o020 != 0 && gid != 0 && !sticky {
        return Some(format!("writable by group {gid}"));
    }
    None
}

#[cfg(test)]
mod owner_tests {
    use super::writable_by_others;

    #[test]
    fn only_root_or_the_agent_may_write_the_configuration() {
        assert_eq!(writable_by_others(0, 0, 0o100644, 0, false), None);
        assert_eq!(writable_by_others(0, 0, 0o100664, 0, false), None, "group root");
        assert!(writable_by_others(0, 100, 0o100664, 0, false).is_some_and(|w| w.contains("group 100")));
        assert!(writable_by_others(0, 0, 0o100666, 0, false).is_some_and(|w| w.contains("every user")));
        assert!(writable_by_others(1000, 1000, 0o100644, 0, false).is_some_and(|w| w.contains("user 1000")));
        assert_eq!(
            writable_by_others(1000, 1000, 0o100644, 1000, false),
            None,
            "the agent's own file"
        );
        assert_eq!(writable_by_others(0, 0, 0o041777, 0, true), None, "/tmp: sticky");
        assert!(writable_by_others(0, 0, 0o040777, 0, true).is_some());
    }
}
