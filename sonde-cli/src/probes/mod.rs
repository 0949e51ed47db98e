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
//! | `SCRATCH`, `FILTER_SCRATCH` | trace, `--filter` | a record, a filter string being built | one per CPU |
//! | `VALUES` | hist | hist | `record::BUCKETS` per function |
//! | `FILTERS`, `FILTERS_RET` | every uprobe | `--filter` | one per function |
//! | `BY_KEY`, `BY_LOST` | count, count_ret, latency | `--by` | 16k keys |
//! | `BY_STATS` | latency | `latency --by` | 16k keys |
//! | `STACKS` | trace, count | `--stack`, `--by stack` | 4096 stacks |
//! | `STACK_IPS` | trace, count | `--stack`, `--by stack` | 4096 stacks (those `STACKS` refused, as addresses: `crate::stacks`) |
//! | `TRACED` | every uprobe, follow_* | `--follow` and `-- COMMAND` | 64k processes |
//! | `CGROUPS` | every uprobe | `--cgroup` | `record::CGROUP_IDS` cgroups |
//! | `USDT_SPECS` | every uprobe | `usdt:` patterns | one per function |
//! | `SESSION_SLOTS` | latency | emulated sessions | 64k calls in flight |
//! | `GO_STACKS` | latency, trace | Go functions | 8k goroutines |

mod read;

use sonde::maps::{MapError, PerCpuArray};

pub use read::{Counts, Durations, Timing};

/// The object's bytes.
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cli-probes.bpf.o"));

/// A program of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `sonde count`, and `serve`'s call counters, in a followed process
    /// tree or a cgroup.
    Count,
    /// `sonde count` and `serve`'s call counters in every process: the
    /// counter alone ([`Program::for_scope`] picks it).
    CountAll,
    /// `sonde count --filter` and `--by`.
    CountFiltered,
    /// `sonde count --by ret`, at return.
    CountReturn,
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
    pub const ALL: [Program; 12] = [
        Program::Count,
        Program::CountAll,
        Program::CountFiltered,
        Program::CountReturn,
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
            Program::CountAll => "count_all",
            Program::CountFiltered => "count_ex",
            Program::CountReturn => "count_ret",
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

    /// `program` as this run loads it: the lean [`Program::Count`] becomes
    /// [`Program::CountAll`] when no process tree is followed and no cgroup
    /// scopes the count (`TRACED`, `CGROUPS` and the settings then unread).
    pub fn for_scope(self, follow: bool, cgroup: bool) -> Program {
        match self {
            Program::Count if !follow && !cgroup => Program::CountAll,
            p => p,
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
    /// User stacks `Stacks` refused, as addresses (`crate::stacks`).
    StackIps,
    /// The processes of a followed tree.
    Traced,
    /// The cgroups whose processes count (`--cgroup`).
    Cgroups,
    /// USDT argument specs by cookie.
    UsdtSpecs,
    /// Emulated session slots (calls in flight).
    SessionSlots,
    /// Go goroutines' stack bounds, for pairing Go calls when the program's
    /// memory cannot be read for a moment (`sonde_ebpf`'s `GO_STACKS`).
    GoStacks,
    /// The job's settings (`record::Settings`), a global-data map.
    Settings,
}

impl Map {
    /// Every map.
    pub const ALL: [Map; 21] = [
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
        Map::StackIps,
        Map::Traced,
        Map::Cgroups,
        Map::UsdtSpecs,
        Map::SessionSlots,
        Map::GoStacks,
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
            Map::StackIps => "STACK_IPS",
            Map::Traced => "TRACED",
            Map::Cgroups => "CGROUPS",
            Map::UsdtSpecs => "USDT_SPECS",
            Map::SessionSlots => "SESSION_SLOTS",
            Map::GoStacks => "GO_STACKS",
            Map::Settings => crate::record::SETTINGS_SECTION,
        }
    }

    /// For a map only some runs use, the size that costs the kernel least
    /// (a ring buffer's smallest is a page), given to it by runs that do not
    /// (the declared sizes — 64k-entry hashes, 64k LRU entries, the 4 MiB
    /// ring, the stack map — cost a few ms a load); `None` for the others.
    pub const fn least(self) -> Option<u32> {
        match self {
            Map::Traced
            | Map::Cgroups
            | Map::ByKey
            | Map::ByStats
            | Map::Stacks
            | Map::StackIps
            | Map::UsdtSpecs
            | Map::SessionSlots
            | Map::GoStacks
            | Map::Saved => Some(1),
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
            // Per-CPU scratch buffers: the programs' own.
            let named =
                Map::ALL.iter().any(|m| m.name() == *name) || name.ends_with("USDT_SPECS") || name.ends_with("SCRATCH");
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
}
