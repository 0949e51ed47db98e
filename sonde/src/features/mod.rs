//! What the running kernel can do, found by trying it (never by version number):
//! each probe is a tiny program load, link or perf call whose errno answers.
//!
//! Probed once per process. `SONDE_DISABLE_FEATURES=bpf_cookie,uprobe_multi,...`
//! turns features off for the whole library, and [`crate::AttachOptions::disable`]
//! for one attach, so every fallback can be exercised on a new kernel.

use std::ffi::CString;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::OnceLock;

use crate::obj::Insn;
use crate::sys::{bpf, perf, tracefs};

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
    /// `BPF_MAP_TYPE_RINGBUF` (5.8).
    RingBuf,
    /// tracefs mounted (or mountable) with a writable `uprobe_events`.
    Tracefs,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 8] = [
        Feature::UprobePmu,
        Feature::PmuPermitted,
        Feature::PerfLink,
        Feature::BpfCookie,
        Feature::UprobeMulti,
        Feature::UprobeMultiPidFilter,
        Feature::RingBuf,
        Feature::Tracefs,
    ];

    /// The name used in reports and in `SONDE_DISABLE_FEATURES`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::UprobePmu => "uprobe_pmu",
            Feature::PmuPermitted => "pmu_permitted",
            Feature::PerfLink => "perf_link",
            Feature::BpfCookie => "bpf_cookie",
            Feature::UprobeMulti => "uprobe_multi",
            Feature::UprobeMultiPidFilter => "uprobe_multi_pid_filter",
            Feature::RingBuf => "ring_buf",
            Feature::Tracefs => "tracefs",
        }
    }

    /// The first mainline kernel that has it, as (major, minor); `None` where it is
    /// not a matter of version.
    pub fn since(self) -> Option<(u32, u32)> {
        match self {
            Feature::UprobePmu => Some((4, 17)),
            Feature::PerfLink | Feature::BpfCookie => Some((5, 15)),
            Feature::UprobeMulti => Some((6, 6)),
            Feature::UprobeMultiPidFilter => Some((6, 10)),
            Feature::RingBuf => Some((5, 8)),
            Feature::PmuPermitted | Feature::Tracefs => None,
        }
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

/// The kernel's capabilities as probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    /// The uprobe PMU's perf type, if the PMU exists.
    pub uprobe_pmu_type: Option<u32>,
    /// The bit of `config` that makes a PMU uprobe a uretprobe.
    pub retprobe_bit: Option<u32>,
    /// Features present (after any disabling).
    present: Vec<Feature>,
    /// Features turned off by `SONDE_DISABLE_FEATURES` or options.
    disabled: Vec<Feature>,
}

impl Features {
    /// The running kernel's features, probed once per process, with
    /// `SONDE_DISABLE_FEATURES` applied.
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
            Features::probe().without(&disabled)
        })
    }

    /// Probes the kernel now (no caching, nothing disabled).
    pub fn probe() -> Features {
        crate::sys::lift_memlock();
        let pmu_type = read_sysfs_u32("/sys/bus/event_source/devices/uprobe/type");
        let retprobe_bit = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/retprobe")
            .ok()
            .and_then(|s| s.trim().strip_prefix("config:").and_then(|b| b.parse().ok()));
        let mut present = Vec::new();
        let mut add = |f: Feature, yes: bool| {
            if yes {
                present.push(f);
            }
        };
        add(Feature::UprobePmu, pmu_type.is_some());
        add(Feature::PmuPermitted, pmu_type.is_some_and(probe_pmu_permitted));
        add(Feature::PerfLink, probe_perf_link());
        add(Feature::BpfCookie, probe_bpf_cookie());
        let (multi, pid_filter) = probe_uprobe_multi();
        add(Feature::UprobeMulti, multi);
        add(Feature::UprobeMultiPidFilter, pid_filter);
        add(Feature::RingBuf, probe_ring_buf());
        add(Feature::Tracefs, probe_tracefs());
        Features {
            kernel_release: kernel_release(),
            uprobe_pmu_type: pmu_type,
            retprobe_bit,
            present,
            disabled: Vec::new(),
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
        out.present.retain(|f| !features.contains(f));
        out
    }

    /// Whether the kernel has `f` (and it is not disabled).
    pub fn has(&self, f: Feature) -> bool {
        self.present.contains(&f)
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
            let state = if self.has(feat) {
                "yes"
            } else if self.disabled.contains(&feat) {
                "disabled"
            } else {
                "no"
            };
            let since = feat
                .since()
                .map_or(String::new(), |(a, b)| format!(" (Linux {a}.{b}+)"));
            writeln!(f, "  {:<24} {state}{since}", feat.name())?;
        }
        Ok(())
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

/// A PMU uprobe on a path that does not exist: ENOENT means the kernel got past its
/// permission check (which comes first), EPERM/EACCES that it refused.
fn probe_pmu_permitted(pmu_type: u32) -> bool {
    let path = CString::new("/nonexistent/sonde-feature-probe").expect("no NUL");
    match perf::open_uprobe(pmu_type, None, &path, 0, None) {
        Ok(_) => true,
        Err(e) => !e.is_permission(),
    }
}

/// `BPF_LINK_CREATE(BPF_PERF_EVENT)` with a bad perf fd: EBADF means the kernel
/// knows the attach type and looked for the event; EINVAL that it does not.
fn probe_perf_link() -> bool {
    let Ok(prog) = load_probe_prog(&[MOV_R0_0, Insn::exit()], 0) else {
        return false;
    };
    matches!(bpf::link_create_perf_event(prog.as_fd(), -1, 0), Err(e) if e.errno() == Some(libc::EBADF))
}

/// A kprobe-type program calling helper 174 loads only where the helper exists
/// (unknown helpers fail verification with EINVAL).
fn probe_bpf_cookie() -> bool {
    let call = Insn {
        code: 0x85,
        regs: 0,
        off: 0,
        imm: 174,
    };
    load_probe_prog(&[call, MOV_R0_0, Insn::exit()], 0).is_ok()
}

/// A uprobe_multi link to "/" (not a regular file) fails with EBADF where the
/// link type exists, EINVAL (unknown attach type) where not. With pid -1, a kernel
/// with the pid-filter fix refuses with EINVAL before looking at the path.
fn probe_uprobe_multi() -> (bool, bool) {
    let Ok(prog) = load_probe_prog(&[MOV_R0_0, Insn::exit()], bpf::BPF_TRACE_UPROBE_MULTI) else {
        return (false, false);
    };
    let root = CString::new("/").expect("no NUL");
    let exists = matches!(
        bpf::link_create_uprobe_multi(prog.as_fd(), &root, &[0], &[0], 0, 0),
        Err(e) if e.errno() == Some(libc::EBADF)
    );
    let pid_fix = exists
        && matches!(
            bpf::link_create_uprobe_multi(prog.as_fd(), &root, &[0], &[0], 0, u32::MAX),
            Err(e) if e.errno() == Some(libc::EINVAL)
        );
    (exists, pid_fix)
}

fn probe_ring_buf() -> bool {
    bpf::map_create(27, 0, 0, 4096, 0, "sonde_probe").is_ok()
}

fn probe_tracefs() -> bool {
    let Some(root) = tracefs::root() else {
        return false;
    };
    let Ok(path) = CString::new(root.join("uprobe_events").as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
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
    fn without_turns_off() {
        let f = Features {
            kernel_release: "x".into(),
            uprobe_pmu_type: Some(8),
            retprobe_bit: Some(0),
            present: Feature::ALL.to_vec(),
            disabled: vec![],
        };
        let g = f.without(&[Feature::BpfCookie]);
        assert!(!g.has(Feature::BpfCookie));
        assert!(g.has(Feature::PerfLink));
        assert_eq!(g.disabled(), &[Feature::BpfCookie]);
    }
}
