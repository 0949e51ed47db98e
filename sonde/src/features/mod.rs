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
//! the whole library, and [`crate::attach::AttachOptions::disable`] for one attach, so
//! every fallback can be exercised on a new kernel.

use std::fmt;
use std::sync::OnceLock;

mod probes;

use probes::*;

/// One kernel capability sonde cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
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
    /// A uprobe on a 5-byte nop becomes a call into a trampoline and a syscall,
    /// no trap (x86-64, 6.18): a USDT site written `nop; nop5` is probed on its nop5.
    UprobeNop5,
}

/// A probe's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
pub const PROBES: [FeatureProbe; 10] = [
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
    FeatureProbe {
        feature: Feature::UprobeNop5,
        since: Some((6, 18)),
        probe: probe_uprobe_nop5,
    },
];

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 10] = [
        Feature::UprobePmu,
        Feature::PmuPermitted,
        Feature::PerfLink,
        Feature::BpfCookie,
        Feature::UprobeMulti,
        Feature::UprobeMultiPidFilter,
        Feature::UprobeSession,
        Feature::RingBuf,
        Feature::Tracefs,
        Feature::UprobeNop5,
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
            Feature::UprobeNop5 => "uprobe_nop5",
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
fn memo() -> &'static [OnceLock<Probed>; 10] {
    static MEMO: [OnceLock<Probed>; 10] = [const { OnceLock::new() }; 10];
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

    /// The features of a mainline kernel `major.minor` as the table dates
    /// them (those not a matter of version present), fixed: for tests of the
    /// choices sonde makes on kernels other than the running one.
    ///
    /// ```
    /// use sonde::{Feature, Features};
    /// let bullseye = Features::mainline(5, 10);
    /// assert!(bullseye.has(Feature::UprobePmu) && !bullseye.has(Feature::BpfCookie));
    /// assert!(Features::mainline(6, 6).has(Feature::UprobeMulti));
    /// ```
    pub fn mainline(major: u32, minor: u32) -> Features {
        let present: Vec<Feature> = PROBES
            .iter()
            .filter(|row| row.since.is_none_or(|since| since <= (major, minor)))
            .map(|row| row.feature)
            .collect();
        Features {
            kernel_release: format!("{major}.{minor} (mainline features)"),
            ..Features::fixed(&present)
        }
    }

    /// Whether the session kfuncs a native `#[uprobe_session]` program calls
    /// are in the kernel's BTF (fixed features: whenever the session link is).
    pub fn session_kfuncs(&self) -> bool {
        match &self.fixed {
            Some(fixed) => fixed.contains(&Feature::UprobeSession),
            None => crate::programs::session_kfuncs().is_ok(),
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

/// Whether the running kernel's release is `major.minor` or later (for facts
/// no probe can ask, such as which counters a kernel keeps); `false` when
/// `uname -r` does not start with a version.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    kernel_version().is_some_and(|v| v >= (major, minor))
}

/// `(major, minor)` of the running kernel; `None` when `uname -r` does not
/// start with a version.
pub fn kernel_version() -> Option<(u32, u32)> {
    release_version(&kernel_release())
}

/// `(major, minor)` of a release such as `6.1.0-27-amd64`.
fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions() {
        assert_eq!(release_version("6.1.0-27-amd64"), Some((6, 1)));
        assert_eq!(release_version("5.10.0-33-cloud-amd64"), Some((5, 10)));
        assert_eq!(release_version("6.18.0"), Some((6, 18)));
        assert_eq!(release_version("unknown"), None);
        assert_eq!(release_version("6"), None);
    }

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
