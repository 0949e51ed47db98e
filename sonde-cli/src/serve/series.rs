//! A scope's jobs and what their maps hold, read as series: the counts and
//! durations of one function (kept as [`Carried`] when it is detached, so its
//! counters never go back), a `container_labels` scope's rows by container,
//! and the agent's own timings. Below the agent and the metrics, which both
//! read through it.

use std::collections::{BTreeMap, BTreeSet};

use super::shared::Shared;
use crate::probes::{Counts, Durations, Map, Timing};
use crate::record::ByKey;

/// The jobs of one scope.
pub struct Jobs {
    /// `cgroup = ...`: the programs' cgroup sets, kept up to date (one per job).
    pub(super) cgroups: Vec<crate::scope::CgroupWatch>,
    /// `container_labels`: the counting program keys calls by (cookie,
    /// caller's cgroup).
    pub containers: bool,
    /// `containers`: counting cookies of functions detached; when one counts
    /// another function, rows a last call left under it are cleared.
    pub(super) retired: BTreeSet<u32>,
    /// `count` on every function.
    pub count: Shared,
    /// `latency` (a session program) on the functions of `latency = true`
    /// probes; built on first use.
    pub latency: Option<Shared>,
}

/// A histogram as exported: sum (s), count, non-cumulative (upper bound s,
/// count) buckets ending with `+Inf`.
#[derive(Clone, Default)]
pub(super) struct Histogram {
    pub(super) sum: f64,
    pub(super) count: u64,
    pub(super) buckets: Vec<(f64, u64)>,
    /// Calls the timing program entered whose return was not seen.
    pub(super) untimed: u64,
}

impl Histogram {
    /// Adds `other`'s sum, count and buckets (the same bucket set for every
    /// series), not its untimed calls (a gauge of now).
    pub(super) fn add(&mut self, other: &Histogram) {
        self.sum += other.sum;
        self.count += other.count;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.iter().map(|&(le, _)| (le, 0)).collect();
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

/// What a function had counted when it was detached (see `Agent::carried`):
/// added to its figures when it is attached again.
#[derive(Clone, Default)]
pub struct Carried {
    pub(super) calls: u64,
    pub(super) duration: Option<Histogram>,
    /// `container_labels`: calls by (container_id, pod_uid).
    pub(super) containers: BTreeMap<Labels, u64>,
}

/// A container's labels: (`container_id`, `pod_uid`), empty outside any.
pub(super) type Labels = (String, String);

impl Carried {
    /// Adds `other`.
    pub fn add(&mut self, other: &Carried) {
        self.calls += other.calls;
        for (k, n) in &other.containers {
            *self.containers.entry(k.clone()).or_insert(0) += n;
        }
        if let Some(h) = &other.duration {
            self.duration.get_or_insert_with(Histogram::default).add(h);
        }
    }
}

/// The counts a scope's maps hold now for a counting cookie and a timing
/// cookie (either may be absent). In a `container_labels` scope the counting
/// cookie's rows are taken out of the program's map (its cookie may later
/// count another function).
pub fn read_series(jobs: &Jobs, count: Option<u32>, timing: Option<u32>, names: &mut sonde::cgroup::Names) -> Carried {
    let calls = count
        .and_then(|c| Counts::open(jobs.count.job.object()).ok()?.get(c).ok())
        .unwrap_or(0);
    let duration = timing.and_then(|c| {
        let l = jobs.latency.as_ref()?;
        Timing::open(l.job.object()).ok()?.get(c).ok().map(|d| histogram(&d))
    });
    let mut containers = BTreeMap::new();
    if let (Some(c), true) = (count, jobs.containers) {
        let rows = container_rows(jobs, names, |cookie| cookie == c, true);
        containers = rows.into_values().next().unwrap_or_default();
    }
    Carried {
        calls: calls + containers.values().sum::<u64>(),
        duration,
        containers,
    }
}

/// A `container_labels` scope's calls by cookie and container, read from the
/// program's (cookie, caller's cgroup) rows for the cookies `wanted` admits;
/// `take` deletes the rows read.
pub(super) fn container_rows(
    jobs: &Jobs,
    names: &mut sonde::cgroup::Names,
    wanted: impl Fn(u32) -> bool,
    take: bool,
) -> BTreeMap<u32, BTreeMap<Labels, u64>> {
    let mut out: BTreeMap<u32, BTreeMap<Labels, u64>> = BTreeMap::new();
    let Ok(map) = Map::ByKey
        .of(jobs.count.job.object())
        .and_then(sonde::maps::HashMap::<ByKey, u64>::new)
    else {
        return out;
    };
    let Ok(entries) = map.iter() else { return out };
    let mut read = Vec::new();
    for (key, n) in entries.flatten() {
        if !wanted(key.cookie) {
            continue;
        }
        let labels = names
            .path(key.value)
            .and_then(|p| sonde::cgroup::container_of(&p))
            .map(|c| (c.id, c.pod_uid.unwrap_or_default()))
            .unwrap_or_default();
        *out.entry(key.cookie).or_default().entry(labels).or_insert(0) += n;
        read.push(key);
    }
    if take {
        for key in read {
            let _ = map.remove(&key);
        }
    }
    out
}

/// Removes a `container_labels` scope's rows of `cookies` (new functions'
/// cookies, which earlier functions may have used).
pub fn clear_container_rows(jobs: &Jobs, cookies: &BTreeSet<u32>) {
    let mut names = sonde::cgroup::Names::default();
    let _ = container_rows(jobs, &mut names, |c| cookies.contains(&c), true);
}

/// The exported buckets: four per power of two, `le` = 2^o × (1 + q/4) ns for
/// o in `LOW..=HIGH` and q in 1..=4 (640 ns to 68.7 s, 108 buckets and
/// `+Inf`), the same set for every series and scrape; faster calls count in
/// the first, slower ones only in `+Inf`. Each is two of the program's
/// log-linear buckets (eight per power of two), so a bucket holds values
/// within 25 % of each other and `histogram_quantile` stays within about
/// 12 % (power-of-two buckets were up to 50 % off: a 20 ms tail read as 32 ms).
const LOW: u32 = 9;
const HIGH: u32 = 35;
/// Exported buckets per power of two.
const PER_OCTAVE: u32 = 4;

/// A function's durations as exported: the log-linear buckets folded into the
/// exported ones, the sum in seconds, the calls entered but never timed.
pub(super) fn histogram(d: &Durations) -> Histogram {
    use crate::record::{latency_bucket_range, log2, SUBS};
    // Non-cumulative counts per exported bucket, +Inf last.
    let mut counts = vec![0u64; ((HIGH - LOW + 1) * PER_OCTAVE + 1) as usize];
    let inf = counts.len() - 1;
    for &(b, n) in &d.buckets {
        // A log-linear bucket lies inside one power of two, in one of its
        // eight sub-buckets: two make an exported quarter.
        let (low, _) = latency_bucket_range(b);
        let octave = log2(low);
        let i = if octave > HIGH {
            inf
        } else if octave < LOW {
            0
        } else {
            let sub = ((low >> (octave - crate::record::SUB_BITS)) as u32) & (SUBS - 1);
            ((octave - LOW) * PER_OCTAVE + sub / (SUBS / PER_OCTAVE)) as usize
        };
        counts[i] += n;
    }
    let buckets = (LOW..=HIGH)
        .flat_map(|o| {
            (1..=PER_OCTAVE).map(move |q| 2f64.powi(o as i32) * (1.0 + f64::from(q) / f64::from(PER_OCTAVE)) / 1e9)
        })
        .chain([f64::MAX])
        .zip(counts)
        .collect();
    Histogram {
        sum: d.sum_ns as f64 / 1e9,
        count: d.timed(),
        buckets,
        untimed: d.untimed(),
    }
}

/// Bounds (s) of the agent's own duration histograms.
const SELF_BOUNDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of the agent's own durations (attaches, detaches).
#[derive(Default)]
pub struct SelfHistogram {
    pub(super) sum: f64,
    /// Non-cumulative counts per bound of [`SELF_BOUNDS`], then `+Inf`.
    pub(super) counts: [u64; SELF_BOUNDS.len() + 1],
}

impl SelfHistogram {
    /// Records one duration.
    pub fn observe(&mut self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        self.sum += s;
        let i = SELF_BOUNDS.iter().position(|b| s <= *b).unwrap_or(SELF_BOUNDS.len());
        self.counts[i] += 1;
    }

    pub(super) fn buckets(&self) -> Vec<(f64, u64)> {
        SELF_BOUNDS.iter().copied().chain([f64::MAX]).zip(self.counts).collect()
    }
}

/// The agent's own timings, exported as its self-metrics.
#[derive(Default)]
pub struct SelfTimings {
    /// Each batch of probes attached together.
    pub attach: SelfHistogram,
    /// Each group's detach (the background threads' time).
    pub detach: SelfHistogram,
    /// The previous scrape's collection.
    pub last_scrape: Option<std::time::Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_buckets_hold_values_within_a_quarter_octave() {
        use crate::record::latency_bucket;
        for ns in [700u64, 10_000_000, 20_000_000, 50_000_000, 60_000_000_000] {
            let d = Durations {
                buckets: vec![(latency_bucket(ns), 3)],
                min_ns: ns,
                max_ns: ns,
                sum_ns: 3 * ns,
                entered: 3,
            };
            let h = histogram(&d);
            assert_eq!(h.buckets.len(), 27 * 4 + 1);
            let i = h.buckets.iter().position(|(_, n)| *n == 3).expect("a bucket");
            let le = h.buckets[i].0 * 1e9;
            let below = if i == 0 { 0.0 } else { h.buckets[i - 1].0 * 1e9 };
            // The value lies in (below, le], a quarter octave wide.
            assert!(below < ns as f64 && ns as f64 <= le, "{ns}: ({below}, {le}]");
            assert!(i == 0 || le / below <= 1.25 + 1e-9, "{ns}: ({below}, {le}]");
        }
    }
}
