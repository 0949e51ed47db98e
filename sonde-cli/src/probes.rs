//! The typed interface to the command's eBPF object (`ebpf/src/main.rs`, built
//! by build.rs): its programs and maps named once, which command uses each
//! map and how it is sized, and the readers of the per-function counters and
//! latency histograms that `count`, `latency` and `serve` share. Nothing else
//! names a program or a map; `names_match_the_object` checks every name here
//! against the built object.
//!
//! | map | programs | used by | sized |
//! | --- | --- | --- | --- |
//! | `COUNTS` | count, latency | count, latency, serve | one per function |
//! | `HIST`, `STATS` | latency | latency, serve | `record::LATENCY_BUCKETS` / one per function |
//! | `EVENTS`, `LOST` | trace | trace | 4 MiB ring / per CPU |
//! | `TRACE_CONFIG` | trace | trace | one per function |
//! | `SAVED` | trace, trace_ret | `b:ret`, `s@ret` | 16k calls in flight |
//! | `VALUES` | hist | hist | `record::BUCKETS` per function |
//! | `FILTERS`, `FILTERS_RET` | every uprobe | `--filter` | one per function |
//! | `BY_KEY`, `BY_LOST` | count, latency | `--by` | 16k keys |
//! | `BY_STATS` | latency | `latency --by` | 16k keys |
//! | `STACKS` | trace, count | `--stack`, `--by stack` | 4096 stacks |
//! | `TRACED` | every uprobe, follow_* | `--follow` and `-- COMMAND` | 64k processes |
//! | `USDT_SPECS` | every uprobe | `usdt:` patterns | one per function |
//! | `SESSION_SLOTS` | latency | emulated sessions | 64k calls in flight |

use sonde::maps::{MapError, PerCpuArray};

use crate::record::{latency_bucket, latency_bucket_range, Stats, LATENCY_BUCKETS};

/// The object's bytes.
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cli-probes.bpf.o"));

/// A program of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `sonde count`, and `serve`'s call counters.
    Count,
    /// `sonde count --filter`.
    CountFiltered,
    /// `sonde latency` (a session program), and `serve`'s histograms.
    Latency,
    /// `sonde latency --filter`.
    LatencyFiltered,
    /// `sonde trace`, at entry.
    Trace,
    /// `sonde trace --ret`, at return.
    TraceReturn,
    /// `sonde hist --of argN`.
    HistArg,
    /// `sonde hist --of ret`.
    HistReturn,
    /// The fork tracepoint that keeps `TRACED` up to date.
    FollowFork,
    /// The exit tracepoint that keeps `TRACED` up to date.
    FollowExit,
}

impl Program {
    /// Every program.
    #[cfg(test)]
    pub const ALL: [Program; 10] = [
        Program::Count,
        Program::CountFiltered,
        Program::Latency,
        Program::LatencyFiltered,
        Program::Trace,
        Program::TraceReturn,
        Program::HistArg,
        Program::HistReturn,
        Program::FollowFork,
        Program::FollowExit,
    ];

    /// Its name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Program::Count => "count",
            Program::CountFiltered => "count_ex",
            Program::Latency => "latency",
            Program::LatencyFiltered => "latency_ex",
            Program::Trace => "trace",
            Program::TraceReturn => "trace_ret",
            Program::HistArg => "hist_arg",
            Program::HistReturn => "hist_ret",
            Program::FollowFork => "follow_fork",
            Program::FollowExit => "follow_exit",
        }
    }

    /// Whether it is a session program (its emulation needs `SESSION_SLOTS`).
    pub fn is_session(self) -> bool {
        matches!(self, Program::Latency | Program::LatencyFiltered)
    }
}

/// A map of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    /// Calls per function (entered, for `latency`), per CPU.
    Counts,
    /// Latency log-linear buckets: function `i`'s bucket `b` at
    /// `i * LATENCY_BUCKETS + b`.
    Hist,
    /// Exact latency statistics per function (`record::Stats`), per CPU.
    Stats,
    /// Exact latency statistics per `latency --by` key, per CPU.
    ByStats,
    /// `trace`'s call records (a ring buffer).
    Events,
    /// Records `Events` had no room for, per CPU.
    Lost,
    /// `trace`'s per-function settings.
    TraceConfig,
    /// Pointers kept from entry for memory `trace` reads at return.
    Saved,
    /// `hist`'s buckets per function.
    Values,
    /// `--filter` at entry, per function.
    Filters,
    /// `--filter` at return, per function.
    FiltersReturn,
    /// `--by` rows: [`crate::record::ByKey`] to calls.
    ByKey,
    /// `--by` rows `ByKey` had no room for.
    ByLost,
    /// User stacks (`--stack`, `--by stack`).
    Stacks,
    /// The processes of a followed tree.
    Traced,
    /// USDT argument specs by cookie.
    UsdtSpecs,
    /// Emulated session slots (calls in flight).
    SessionSlots,
    /// The job's settings (`record::Settings`), a global-data map.
    Settings,
}

impl Map {
    /// Every map.
    pub const ALL: [Map; 18] = [
        Map::Counts,
        Map::Hist,
        Map::Stats,
        Map::ByStats,
        Map::Events,
        Map::Lost,
        Map::TraceConfig,
        Map::Saved,
        Map::Values,
        Map::Filters,
        Map::FiltersReturn,
        Map::ByKey,
        Map::ByLost,
        Map::Stacks,
        Map::Traced,
        Map::UsdtSpecs,
        Map::SessionSlots,
        Map::Settings,
    ];

    /// Its name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            Map::Counts => "COUNTS",
            Map::Hist => "HIST",
            Map::Stats => "STATS",
            Map::ByStats => "BY_STATS",
            Map::Events => "EVENTS",
            Map::Lost => "LOST",
            Map::TraceConfig => "TRACE_CONFIG",
            Map::Saved => "SAVED",
            Map::Values => "VALUES",
            Map::Filters => "FILTERS",
            Map::FiltersReturn => "FILTERS_RET",
            Map::ByKey => "BY_KEY",
            Map::ByLost => "BY_LOST",
            Map::Stacks => "STACKS",
            Map::Traced => "TRACED",
            Map::UsdtSpecs => "USDT_SPECS",
            Map::SessionSlots => "SESSION_SLOTS",
            Map::Settings => crate::record::SETTINGS_SECTION,
        }
    }

    /// For a map only some runs use, the size that costs the kernel least
    /// (a ring buffer's smallest is a page), given to it by runs that do not
    /// (the declared sizes — 64k-entry hashes, 64k LRU entries, the 4 MiB
    /// ring, the stack map — cost a few ms a load); `None` for the others.
    pub const fn least(self) -> Option<u32> {
        match self {
            Map::Traced | Map::ByKey | Map::ByStats | Map::Stacks | Map::UsdtSpecs | Map::SessionSlots | Map::Saved => {
                Some(1)
            }
            Map::Events => Some(4096),
            _ => None,
        }
    }

    /// The map in `object`.
    pub fn of(self, object: &sonde::Object) -> Result<sonde::maps::Map, MapError> {
        object.map(self.name())
    }

    /// The map in `object` as a per-CPU array of counters.
    pub fn counters(self, object: &sonde::Object) -> Result<PerCpuArray<u64>, MapError> {
        PerCpuArray::new(self.of(object)?)
    }
}

/// The optional maps (those with [`Map::least`]) not in `used`, at their least.
pub fn unused_at_least(used: &[Map]) -> impl Iterator<Item = (Map, u32)> + '_ {
    Map::ALL
        .into_iter()
        .filter(|m| !used.contains(m))
        .filter_map(|m| Some((m, m.least()?)))
}

/// Makes the optional maps not in `used` as small as the kernel allows.
pub fn shrink_unused<'a>(mut builder: sonde::JobBuilder<'a>, used: &[Map]) -> sonde::JobBuilder<'a> {
    for (map, least) in unused_at_least(used) {
        builder = builder.map_size(map.name(), least);
    }
    builder
}

/// Sizes as `Object::load_with` takes them: `sizes`, and with `shrink` the
/// optional maps not among them at their least (the benchmarks load the
/// object without a job).
#[cfg_attr(not(test), allow(dead_code))]
pub fn load_sizes(sizes: &[(Map, u32)], shrink: bool) -> Vec<(&'static str, u32)> {
    let used: Vec<Map> = sizes.iter().map(|(m, _)| *m).collect();
    let rest: Vec<(Map, u32)> = if shrink {
        unused_at_least(&used).collect()
    } else {
        Vec::new()
    };
    sizes.iter().chain(&rest).map(|(m, n)| (m.name(), *n)).collect()
}

/// Calls per function: `COUNTS`, summed over CPUs.
pub struct Counts(PerCpuArray<u64>);

impl Counts {
    /// The counters of `object`.
    pub fn open(object: &sonde::Object) -> Result<Counts, MapError> {
        Map::Counts.counters(object).map(Counts)
    }

    /// The calls of the function with `cookie`.
    pub fn get(&self, cookie: u32) -> Result<u64, MapError> {
        Ok(self.0.get(cookie)?.iter().sum())
    }
}

/// One function's (or key's) call durations: log-linear buckets, the exact
/// minimum, maximum and sum of the calls timed, and the calls entered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durations {
    /// `(b, calls)` for each non-empty bucket (`record::latency_bucket`), `b` ascending.
    pub buckets: Vec<(u32, u64)>,
    /// The smallest duration, ns (0 when none was timed).
    pub min_ns: u64,
    /// The largest duration, ns.
    pub max_ns: u64,
    /// The sum of the durations, ns.
    pub sum_ns: u64,
    /// Calls entered, whether their return was seen or not.
    pub entered: u64,
}

impl Durations {
    /// Calls whose return was seen and timed.
    pub fn timed(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// Calls entered with no return seen (deeper than the kernel's nested
    /// return probes, or still running).
    pub fn untimed(&self) -> u64 {
        self.entered.saturating_sub(self.timed())
    }

    /// The mean duration, ns (exact: the sum over the calls timed).
    pub fn mean_ns(&self) -> u64 {
        self.sum_ns.checked_div(self.timed()).unwrap_or(0)
    }

    /// The upper bound of bucket `b`, ns (exclusive).
    pub fn upper_ns(b: u32) -> u64 {
        let (low, width) = latency_bucket_range(b);
        low.saturating_add(width)
    }

    /// Quantile `q` (0..=1): the middle of the bucket holding the rank,
    /// within the exact minimum and maximum (at most half a bucket off: 6.25 %).
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.timed();
        if count == 0 {
            return 0;
        }
        let rank = ((count as f64) * q).ceil().max(1.0) as u64;
        if rank >= count {
            return self.max_ns;
        }
        let mut seen = 0;
        for &(b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let (low, width) = latency_bucket_range(b);
                return (low + width / 2).clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    /// Adds one CPU's (or one key's) statistics.
    pub fn add_stats(&mut self, s: &Stats) {
        self.sum_ns += s.sum_ns;
        self.max_ns = self.max_ns.max(s.max_ns);
        if s.min_inv != 0 && (self.min_ns == 0 || !s.min_inv < self.min_ns) {
            self.min_ns = !s.min_inv;
        }
    }
}

/// The latency program's maps: `HIST`, `STATS`, `COUNTS`.
pub struct Timing {
    hist: PerCpuArray<u64>,
    stats: PerCpuArray<Stats>,
    entered: PerCpuArray<u64>,
}

impl Timing {
    /// The timing maps of `object`.
    pub fn open(object: &sonde::Object) -> Result<Timing, MapError> {
        Ok(Timing {
            hist: Map::Hist.counters(object)?,
            stats: PerCpuArray::new(Map::Stats.of(object)?)?,
            entered: Map::Counts.counters(object)?,
        })
    }

    /// The durations of the function with `cookie`: buckets read up to the
    /// bucket of its largest only.
    pub fn get(&self, cookie: u32) -> Result<Durations, MapError> {
        let mut d = Durations {
            entered: self.entered.get(cookie)?.iter().sum(),
            ..Durations::default()
        };
        for s in self.stats.get(cookie)? {
            d.add_stats(&s);
        }
        if d.max_ns > 0 {
            let top = latency_bucket(d.max_ns);
            let base = cookie.saturating_mul(LATENCY_BUCKETS);
            for b in latency_bucket(d.min_ns)..=top {
                let n: u64 = self.hist.get(base.saturating_add(b))?.iter().sum();
                if n > 0 {
                    d.buckets.push((b, n));
                }
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde::object_file::{ObjectSpec, ProgramKind};

    #[test]
    fn names_match_the_object() {
        let spec = ObjectSpec::parse(OBJECT).expect("the built object parses");
        let maps: Vec<&str> = spec.maps.iter().map(|m| m.name.as_str()).collect();
        for m in Map::ALL {
            assert!(maps.contains(&m.name()), "{m:?}: no map {} in the object", m.name());
        }
        let programs: Vec<&str> = spec.programs.iter().map(|p| p.name.as_str()).collect();
        for p in Program::ALL {
            assert!(
                programs.contains(&p.name()),
                "{p:?}: no program {} in the object",
                p.name()
            );
        }
        // Every map the object declares is named here (global data aside).
        for name in maps.iter().filter(|n| !n.starts_with('.')) {
            let named =
                Map::ALL.iter().any(|m| m.name() == *name) || name.ends_with("USDT_SPECS") || *name == "FILTER_SCRATCH";
            assert!(named, "map {name} of the object has no name in probes.rs");
        }
        let sessions: Vec<&str> = spec
            .programs
            .iter()
            .filter(|p| p.kind == ProgramKind::Probe(sonde::object_file::ProbeKind::Session))
            .map(|p| p.name.as_str())
            .collect();
        for p in Program::ALL {
            assert_eq!(p.is_session(), sessions.contains(&p.name()), "{p:?}");
        }
    }

    #[test]
    fn load_sizes_shrink_only_the_optional_maps_not_given() {
        let sizes = load_sizes(&[(Map::Counts, 7), (Map::Stacks, 9)], true);
        assert_eq!(sizes[..2], [("COUNTS", 7), ("STACKS", 9)]);
        assert!(sizes.contains(&("EVENTS", 4096)));
        assert!(!sizes.iter().any(|(m, _)| *m == "HIST"), "not optional");
        assert_eq!(load_sizes(&[(Map::Hist, 64)], false), [("HIST", 64)]);
    }

    #[test]
    fn durations_count_timed_and_untimed_calls() {
        let mut d = Durations {
            buckets: vec![(3, 2), (latency_bucket(1500), 1)],
            entered: 5,
            ..Durations::default()
        };
        for s in [
            Stats {
                sum_ns: 6,
                min_inv: !3,
                max_ns: 3,
            },
            Stats::default(),
            Stats {
                sum_ns: 1500,
                min_inv: !1500,
                max_ns: 1500,
            },
        ] {
            d.add_stats(&s);
        }
        assert_eq!((d.timed(), d.untimed()), (3, 2));
        assert_eq!((d.min_ns, d.max_ns, d.mean_ns()), (3, 1500, 502));
        assert_eq!(d.quantile(0.5), 3);
        assert_eq!(d.quantile(1.0), 1500, "clamped to the exact maximum");
    }

    #[test]
    fn latency_buckets_are_log_linear_and_within_an_eighth() {
        let mut last = 0;
        for v in (0..4096u64).chain([10_000_000, 50_000_000, 1 << 40, u64::MAX / 2]) {
            let b = latency_bucket(v);
            assert!(b >= last || v > 4096, "monotonic");
            last = b;
            let (low, width) = latency_bucket_range(b);
            if b < LATENCY_BUCKETS - 1 {
                assert!((low..low + width).contains(&v), "{v} in bucket {b} [{low}, +{width})");
                assert!(width * 8 <= low.max(8), "width {width} at {low}");
            }
        }
        // 10 ms and 50 ms read back within 6.25 %.
        for ms in [10u64, 17, 50] {
            let v = ms * 1_000_000;
            let (low, width) = latency_bucket_range(latency_bucket(v));
            let mid = low + width / 2;
            assert!(mid.abs_diff(v) * 16 <= v, "{v} -> {mid}");
        }
    }
}
