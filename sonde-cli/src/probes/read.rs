//! The readers of the per-function counters and latency figures that
//! `count`, `latency` and `serve` share.

use sonde::maps::{MapError, PerCpuArray};

use super::Map;
use crate::record::{latency_bucket, latency_bucket_range, Stats, LATENCY_BUCKETS};

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
    /// Adds `other`'s calls (another cgroup of one container, say): buckets
    /// summed, the extremes kept, exactly.
    pub fn merge(&mut self, other: &Durations) {
        let timed = (self.timed(), other.timed());
        let mut buckets: std::collections::BTreeMap<u32, u64> = self.buckets.iter().copied().collect();
        for &(b, n) in &other.buckets {
            *buckets.entry(b).or_insert(0) += n;
        }
        self.buckets = buckets.into_iter().collect();
        self.min_ns = match timed {
            (0, _) => other.min_ns,
            (_, 0) => self.min_ns,
            _ => self.min_ns.min(other.min_ns),
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.entered = self.entered.saturating_add(other.entered);
    }

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
