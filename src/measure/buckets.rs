//! Durations counted in fixed buckets, as a Prometheus histogram holds them: the monitor's
//! round trips and one-way delays, a few hundred bytes per target however long it runs.
//!
//! Promise: the bounds suit networks, from 25 µs (loopback, a rack) to 10 s (a satellite
//! path under load), in 1-2.5-5 steps; a duration is counted in the first bucket whose
//! bound it does not exceed (Prometheus's `le`), compared in whole nanoseconds, so the
//! count at a bound is exact; the sum is kept in nanoseconds (no rounding drift).

use std::time::Duration;

/// The buckets' upper bounds, in nanoseconds (the last bucket, `+Inf`, is implicit).
pub const BOUNDS_NANOS: [u64; 19] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Counts of durations in [`BOUNDS_NANOS`]'s buckets (not cumulative), with their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buckets {
    counts: [u64; BOUNDS_NANOS.len() + 1],
    sum_nanos: u128,
}

impl Buckets {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let nanos = d.as_nanos();
        let i = BOUNDS_NANOS.partition_point(|&b| u128::from(b) < nanos);
        self.counts[i] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound in seconds, count in that bucket alone)`, the last bound infinite:
    /// what a Prometheus encoder takes.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BOUNDS_NANOS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_on_a_bound_is_counted_at_that_bound() {
        let mut b = Buckets::default();
        b.record(Duration::from_micros(25));
        b.record(Duration::from_nanos(25_001));
        b.record(Duration::from_secs(3600));
        b.record(Duration::ZERO);
        let got: Vec<(f64, u64)> = b.buckets().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, vec![(25e-6, 2), (50e-6, 1), (f64::INFINITY, 1)]);
        assert_eq!(b.count(), 4);
        assert!((b.sum_seconds() - (3600.0 + 50.001e-6)).abs() < 1e-9);
    }

    #[test]
    fn the_bounds_rise() {
        assert!(BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }
}
