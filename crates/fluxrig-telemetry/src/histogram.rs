//! Fixed-bucket histograms updated with relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Upper bounds (inclusive, nanoseconds) of the latency buckets: 1-2-5 steps
/// from 1 µs to 10 s, so sub-millisecond latencies land in nine buckets.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds (inclusive) of the group-commit batch size buckets (records).
pub const BATCH_BOUNDS: &[u64] = &[
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];

/// A histogram with fixed bucket bounds: recording is a binary search over
/// the bounds and three relaxed atomic adds; it never allocates or blocks.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One per bound, plus the overflow bucket (`+Inf`).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these (ascending) upper bounds.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// An empty latency histogram ([`LATENCY_BOUNDS_NS`], nanoseconds).
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_NS)
    }

    /// Records one value.
    #[inline]
    pub fn record(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now. Taken bucket by bucket while writers go on, so the
    /// total may be a few records ahead of or behind `count`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::latency()
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Upper bounds (inclusive) of the buckets.
    pub bounds: Vec<u64>,
    /// Count per bucket (not cumulative); one more than `bounds` (overflow).
    pub counts: Vec<u64>,
    /// Sum of the recorded values.
    pub sum: u64,
    /// Number of recorded values.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The counts recorded between `earlier` and `self` (same bounds).
    #[must_use]
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum: self.sum.saturating_sub(earlier.sum),
            count: self.count.saturating_sub(earlier.count),
        }
    }

    /// Estimates the `q` quantile (0..=1) by linear interpolation inside
    /// its bucket; `None` when empty. Values in the overflow bucket are
    /// reported as the largest bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            #[allow(clippy::cast_precision_loss)]
            let upto = (seen + c) as f64;
            if upto >= rank {
                let Some(&hi) = self.bounds.get(i) else {
                    #[allow(clippy::cast_precision_loss)]
                    return self.bounds.last().map(|b| *b as f64);
                };
                let lo = if i == 0 { 0 } else { self.bounds[i - 1] };
                #[allow(clippy::cast_precision_loss)]
                let frac = (rank - seen as f64) / *c as f64;
                #[allow(clippy::cast_precision_loss)]
                return Some(lo as f64 + (hi - lo) as f64 * frac);
            }
            seen += c;
        }
        #[allow(clippy::cast_precision_loss)]
        self.bounds.last().map(|b| *b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_their_inclusive_bucket() {
        let h = Histogram::latency();
        h.record(0);
        h.record(1_000);
        h.record(1_001);
        h.record(20_000_000_000);
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[LATENCY_BOUNDS_NS.len()], 1);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum, 20_000_002_001);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = Histogram::latency();
        for _ in 0..99 {
            h.record(150_000); // (100 µs, 200 µs]
        }
        h.record(3_000_000); // (2 ms, 5 ms]
        let s = h.snapshot();
        let p50 = s.quantile(0.5).unwrap();
        assert!(p50 > 100_000.0 && p50 <= 200_000.0, "{p50}");
        let p100 = s.quantile(1.0).unwrap();
        assert!(p100 > 2_000_000.0 && p100 <= 5_000_000.0, "{p100}");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn since_subtracts() {
        let h = Histogram::new(BATCH_BOUNDS);
        h.record(3);
        let a = h.snapshot();
        h.record(3);
        h.record(700);
        let d = h.snapshot().since(&a);
        assert_eq!(d.count, 2);
        assert_eq!(d.counts[2], 1);
        assert_eq!(d.counts[9], 1);
    }
}
