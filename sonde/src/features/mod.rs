//! What the running kernel can do, found by trying it (never by version number):
//! each probe is a tiny program load, link or perf call whose errno answers.
//!
//! The probes are a table ([`PROBES`]): feature, first mainline kernel, probe.
//! Each runs at most once per process, and only when something asks for its
//! feature (an attach plan asks for the features of the tiers it considers).
//! A probe answers yes, no, or could-not-tell (a privilege or resource error
//! says nothing about the kernel); probing never mounts anything.
//!
//! `SONDE_DISABLE_FEATURES=bpf_cookie,uprobe_multi,...` turns features off for
//! the whole library, and [`crate::AttachOptions::disable`] for one attach, so
//! every fallback can be exercised on a new kernel.

use std::ffi::CString;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use crate::sys::{bpf, perf, tracefs};
use sonde_abi::Insn;

/// One kernel capability sonde cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// The `uprobe` PMU: `perf_event_open` of uprobes without tracefs (4.17).
    UprobePmu,
    /// PMU uprobes allowed for this process (patched stable kernels want
    /// CAP_SYS_ADMIN since 2025-07).
    PmuPermitted,
    /// `BPF_LINK_CREATE` with `BPF_PERF_EVENT` (5.15).
    PerfLink,
    /// Helper `bpf_get_attach_cookie` in kprobe-type programs (5.15).
    BpfCookie,
    /// `BPF_TRACE_UPROBE_MULTI` links (6.6).
    UprobeMulti,
    /// uprobe_multi's pid filter works per process (6.10; 6.6.35, 6.9.5).
    UprobeMultiPidFilter,
    /// `BPF_TRACE_UPROBE_SESSION` links: entry and return in one program (6.13).
    UprobeSession,
    /// `BPF_MAP_TYPE_RINGBUF` (5.8).
    RingBuf,
    /// tracefs mounted with a writable `uprobe_events`, or mountable by this
    /// process (the tracefs tier mounts it when it runs; probing never does).
    Tracefs,
}

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// The kernel has it.
    Yes,
    /// The kernel does not have it.
    No,
    /// The probe could not tell (a privilege or resource error): treated as
    /// absent, and reported with the reason.
    Unknown(String),
}

/// One row of the probe table.
pub struct FeatureProbe {
    /// The feature.
    pub feature: Feature,
    /// Its first mainline kernel, `(major, minor)`; `None` where not a matter of
    /// version.
    pub since: Option<(u32, u32)>,
    /// The probe.
    pub probe: fn() -> Probed,
}

/// Every feature, with its first kernel and its probe, in report order.
pub const PROBES: [FeatureProbe; 9] = [
    FeatureProbe {
        feature: Feature::UprobePmu,
        since: Some((4, 17)),
        probe: probe_uprobe_pmu,
    },
    FeatureProbe {
        feature: Feature::PmuPermitted,
        since: None,
        probe: probe_pmu_permitted,
    },
    FeatureProbe {
        feature: Feature::PerfLink,
        since: Some((5, 15)),
        probe: probe_perf_link,
    },
    FeatureProbe {
        feature: Feature::BpfCookie,
        since: Some((5, 15)),
        probe: probe_bpf_cookie,
    },
    FeatureProbe {
        feature: Feature::UprobeMulti,
        since: Some((6, 6)),
        probe: probe_uprobe_multi,
    },
    FeatureProbe {
        feature: Feature::UprobeMultiPidFilter,
        since: Some((6, 10)),
        probe: probe_uprobe_multi_pid_filter,
    },
    FeatureProbe {
        feature: Feature::UprobeSession,
        since: Some((6, 13)),
        probe: probe_uprobe_session,
    },
    FeatureProbe {
        feature: Feature::RingBuf,
        since: Some((5, 8)),
        probe: probe_ring_buf,
    },
    FeatureProbe {
        feature: Feature::Tracefs,
        since: None,
        probe: probe_tracefs,
    },
];

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 9] = [
        Feature::UprobePmu,
        Feature::PmuPermitted,
        Feature::PerfLink,
        Feature::BpfCookie,
        Feature::UprobeMulti,
        Feature::UprobeMultiPidFilter,
        Feature::UprobeSession,
        Feature::RingBuf,
        Feature::Tracefs,
    ];

    fn index(self) -> usize {
        Feature::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }

    /// The name used in reports and in `SONDE_DISABLE_FEATURES`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::UprobePmu => "uprobe_pmu",
            Feature::PmuPermitted => "pmu_permitted",
            Feature::PerfLink => "perf_link",
            Feature::BpfCookie => "bpf_cookie",
            Feature::UprobeMulti => "uprobe_multi",
            Feature::UprobeMultiPidFilter => "uprobe_multi_pid_filter",
            Feature::UprobeSession => "uprobe_session",
            Feature::RingBuf => "ring_buf",
            Feature::Tracefs => "tracefs",
        }
    }

    /// The first mainline kernel that has it, as (major, minor); `None` where it is
    /// not a matter of version.
    pub fn since(self) -> Option<(u32, u32)> {
        PROBES[self.index()].since
    }

    /// Parses a name of [`Feature::name`].
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name.trim())
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The answers so far, one per feature, shared by the whole process.
fn memo() -> &'static [OnceLock<Probed>; 9] {
    static MEMO: [OnceLock<Probed>; 9] = [const { OnceLock::new() }; 9];
    &MEMO
}

/// The kernel's capabilities, probed on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    /// The uprobe PMU's perf type, if the PMU exists.
    pub uprobe_pmu_type: Option<u32>,
    /// The bit of `config` that makes a PMU uprobe a uretprobe.
    pub retprobe_bit: Option<u32>,
    /// Features turned off by `SONDE_DISABLE_FEATURES` or options.
    disabled: Vec<Feature>,
    /// Fixed answers instead of probes (unit tests).
    fixed: Option<Vec<Feature>>,
}

impl Features {
    /// The running kernel, with `SONDE_DISABLE_FEATURES` applied. Nothing is
    /// probed until a feature is asked for.
    pub fn current() -> &'static Features {
        static CURRENT: OnceLock<Features> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let disabled: Vec<Feature> = std::env::var("SONDE_DISABLE_FEATURES")
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .filter_map(|s| {
                    let f = Feature::from_name(s);
                    if f.is_none() {
                        log::warn!("SONDE_DISABLE_FEATURES: unknown feature `{s}`");
                    }
                    f
                })
                .collect();
            Features::unprobed().without(&disabled)
        })
    }

    fn unprobed() -> Features {
        Features {
            kernel_release: kernel_release(),
            uprobe_pmu_type: read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type"),
            retprobe_bit: std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/retprobe")
                .ok()
                .and_then(|s| s.trim().strip_prefix("config:").and_then(|b| b.parse().ok())),
            disabled: Vec::new(),
            fixed: None,
        }
    }

    /// The running kernel with every feature probed now (each probe still runs
    /// once per process), nothing disabled.
    pub fn probe() -> Features {
        let f = Features::unprobed();
        for x in Feature::ALL {
            f.probed(x);
        }
        f
    }

    /// Features with fixed answers: `present` are there, the others are not (for
    /// tests of code that chooses by features).
    pub fn fixed(present: &[Feature]) -> Features {
        Features {
            kernel_release: "fixed".into(),
            uprobe_pmu_type: Some(0),
            retprobe_bit: Some(0),
            disabled: Vec::new(),
            fixed: Some(present.to_vec()),
        }
    }

    /// A copy with `features` turned off.
    pub fn without(&self, features: &[Feature]) -> Features {
        let mut out = self.clone();
        for f in features {
            if !out.disabled.contains(f) {
                out.disabled.push(*f);
            }
        }
        out
    }

    /// What the probe of `f` answered (probing it now if nobody asked yet); a
    /// disabled feature reads as absent in [`Features::has`] but keeps its answer.
    pub fn probed(&self, f: Feature) -> Probed {
        if let Some(fixed) = &self.fixed {
            return if fixed.contains(&f) { Probed::Yes } else { Probed::No };
        }
        memo()[f.index()].get_or_init(|| (PROBES[f.index()].probe)()).clone()
    }

    /// Whether the kernel has `f` (and it is not disabled).
    pub fn has(&self, f: Feature) -> bool {
        !self.disabled.contains(&f) && self.probed(f) == Probed::Yes
    }

    /// Features turned off on purpose.
    pub fn disabled(&self) -> &[Feature] {
        &self.disabled
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel {}", self.kernel_release)?;
        for feat in Feature::ALL {
            let state = match (self.disabled.contains(&feat), self.probed(feat)) {
                (true, _) => "disabled".to_string(),
                (false, Probed::Yes) => "yes".to_string(),
                (false, Probed::No) => "no".to_string(),
                (false, Probed::Unknown(why)) => format!("unknown ({why})"),
            };
            let since = feat
                .since()
                .map_or(String::new(), |(a, b)| format!(" (Linux {a}.{b}+)"));
            writeln!(f, "  {:<24} {state}{since}", feat.name())?;
        }
        Ok(())
    }
}

/// An errno from a probe: EINVAL-like answers mean no; privilege and resource
/// errors say nothing about the kernel.
fn answer(result: Result<(), i32>, yes_errno: Option<i32>) -> Probed {
    match result {
        Ok(()) if yes_errno.is_none() => Probed::Yes,
        Ok(()) => Probed::Unknown("the probe unexpectedly succeeded".into()),
        Err(e) if Some(e) == yes_errno => Probed::Yes,
        Err(libc::EPERM | libc::EACCES) => Probed::Unknown("not permitted: run as root".into()),
        Err(e @ (libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => {
            Probed::Unknown(std::io::Error::from_raw_os_error(e).to_string())
        }
        Err(_) => Probed::No,
    }
}

fn read_sysfs_u32(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::from("unknown");
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

const MOV_R0_0: Insn = Insn {
    code: 0xb7,
    regs: 0,
    off: 0,
    imm: 0,
};

fn load_probe_prog(insns: &[Insn], expected_attach_type: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    let license = CString::new("GPL").expect("no NUL");
    bpf::prog_load(
        &bpf::ProgLoad {
            prog_type: bpf::BPF_PROG_TYPE_KPROBE,
            expected_attach_type,
            insns,
            license: &license,
            name: "sonde_probe",
        },
        0,
        &mut [],
    )
}

fn errno(e: &crate::sys::SyscallError) -> i32 {
    e.errno().unwrap_or(libc::EIO)
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn probe_uprobe_pmu() -> Probed {
    if read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type").is_some() {
        Probed::Yes
    } else {
        Probed::No
    }
}

/// A PMU uprobe on a path that does not exist: ENOENT means the kernel got past its
/// permission check (which comes first), EPERM/EACCES that it refused.
fn probe_pmu_permitted() -> Probed {
    let Some(pmu_type) = read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type") else {
        return Probed::No;
    };
    let path = CString::new("/nonexistent/sonde-feature-probe").expect("no NUL");
    match perf::open_uprobe(pmu_type, None, &path, 0, None, None) {
        Ok(_) => Probed::Yes,
        Err(e) if e.is_permission() => Probed::No,
        Err(e) => answer(Err(errno(&e)), Some(libc::ENOENT)),
    }
}

/// `BPF_LINK_CREATE(BPF_PERF_EVENT)` with a bad perf fd: EBADF means the kernel
/// knows the attach type and looked for the event; EINVAL that it does not.
fn probe_perf_link() -> Probed {
    let prog = match load_probe_prog(&[MOV_R0_0, Insn::exit()], 0) {
        Ok(p) => p,
        Err(e) => return answer(Err(io_errno(&e)), None),
    };
    let r = bpf::link_create_perf_event(prog.as_fd(), -1, 0)
        .map(drop)
        .map_err(|e| errno(&e));
    answer(r, Some(libc::EBADF))
}

/// A kprobe-type program calling `bpf_get_attach_cookie` loads only where the
/// helper exists (unknown helpers fail verification with EINVAL).
fn probe_bpf_cookie() -> Probed {
    let call = Insn {
        code: sonde_abi::insn::CALL,
        regs: 0,
        off: 0,
        imm: sonde_abi::helper::GET_ATTACH_COOKIE as i32,
    };
    answer(
        load_probe_prog(&[call, MOV_R0_0, Insn::exit()], 0)
            .map(drop)
            .map_err(|e| io_errno(&e)),
        None,
    )
}

/// A uprobe_multi-style link of `attach_type` to "/" (not a regular file) with
/// `pid`: the errno answers.
fn multi_link_errno(attach_type: u32, pid: u32) -> Result<(), i32> {
    let prog = load_probe_prog(&[MOV_R0_0, Insn::exit()], attach_type).map_err(|e| io_errno(&e))?;
    let root = CString::new("/").expect("no NUL");
    let request = bpf::UprobeMulti {
        attach_type,
        path: &root,
        offsets: &[0],
        ref_ctr_offsets: None,
        cookies: &[0],
        flags: 0,
        pid,
    };
    bpf::link_create_uprobe_multi(prog.as_fd(), &request)
        .map(drop)
        .map_err(|e| errno(&e))
}

/// A uprobe_multi link to "/" fails with EBADF where the link type exists,
/// EINVAL (unknown attach type) where not.
fn probe_uprobe_multi() -> Probed {
    answer(multi_link_errno(bpf::BPF_TRACE_UPROBE_MULTI, 0), Some(libc::EBADF))
}

/// With pid -1, a kernel with the pid-filter fix refuses with EINVAL before it
/// looks at the path (EBADF: no fix).
fn probe_uprobe_multi_pid_filter() -> Probed {
    if probe_uprobe_multi() != Probed::Yes {
        return Probed::No;
    }
    answer(
        multi_link_errno(bpf::BPF_TRACE_UPROBE_MULTI, u32::MAX),
        Some(libc::EINVAL),
    )
}

/// A session link to "/" fails with EBADF where the attach type exists.
fn probe_uprobe_session() -> Probed {
    answer(
        multi_link_errno(sonde_abi::program::BPF_TRACE_UPROBE_SESSION, 0),
        Some(libc::EBADF),
    )
}

fn probe_ring_buf() -> Probed {
    let r = bpf::map_create(sonde_abi::MapType::RingBuf as u32, 0, 0, 4096, 0, "sonde_probe");
    answer(r.map(drop).map_err(|e| errno(&e)), None)
}

/// A writable `uprobe_events` where tracefs is mounted, or tracefs known to the
/// kernel and this process allowed to mount it (root). Never mounts.
fn probe_tracefs() -> Probed {
    if let Some(root) = tracefs::mounted_root() {
        let Ok(path) = CString::new(root.join("uprobe_events").into_os_string().into_encoded_bytes()) else {
            return Probed::No;
        };
        // SAFETY: a valid C string.
        return if unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0 {
            Probed::Yes
        } else {
            Probed::Unknown("uprobe_events is not writable: run as root".into())
        };
    }
    let known = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| t.lines().any(|l| l.ends_with("\ttracefs")));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match (known, root) {
        (true, true) => Probed::Yes,
        (true, false) => Probed::Unknown("tracefs is not mounted and only root can mount it".into()),
        (false, _) => Probed::No,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("nope"), None);
    }

    #[test]
    fn every_feature_has_one_probe_row_in_order() {
        for (row, f) in PROBES.iter().zip(Feature::ALL) {
            assert_eq!(row.feature, f);
        }
    }

    #[test]
    fn without_turns_off() {
        let f = Features::fixed(&Feature::ALL);
        let g = f.without(&[Feature::BpfCookie]);
        assert!(!g.has(Feature::BpfCookie));
        assert!(g.has(Feature::PerfLink));
        assert_eq!(g.disabled(), &[Feature::BpfCookie]);
    }
}
