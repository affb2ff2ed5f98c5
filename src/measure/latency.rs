//! Latency statistics in one place: exact min/avg/max/mdev, percentiles from an HDR
//! histogram (3 significant digits), and the histogram's percentile-distribution text
//! (its picture is `measure::plot`'s).
//!
//! Promise: recording is O(1) and allocation-free; memory is fixed at creation (latencies
//! from 1 ns to 1 hour; longer ones are recorded as 1 hour).

use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency recorded (an hour); longer ones are recorded as that.
pub const HIGHEST_NS: u64 = 3_600_000_000_000;

/// An empty histogram as every latency of udpkit is recorded in: 1 ns to an hour, three
/// significant digits (so histograms from many runs add up exactly).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid bounds")
}

/// Recorded latencies.
#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
    count: u64,
    sum: f64,
    sum_squares: f64,
    min: u64,
    max: u64,
}

/// A summary of recorded latencies, in one unit (milliseconds for ping, microseconds for
/// bench), all zero when nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The shortest latency recorded.
    pub min: f64,
    /// The mean.
    pub avg: f64,
    /// The longest latency recorded (an hour at most).
    pub max: f64,
    /// The standard deviation, as ping's `mdev` is.
    pub mdev: f64,
    /// The median, from the histogram (three significant digits).
    pub p50: f64,
    /// The 90th percentile, from the histogram.
    pub p90: f64,
    /// The 99th percentile, from the histogram.
    pub p99: f64,
    /// The 99.9th percentile, from the histogram.
    pub p999: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// None recorded yet.
    pub fn new() -> Self {
        Latency {
            histogram: new_histogram(),
            count: 0,
            sum: 0.0,
            sum_squares: 0.0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Latencies known only by their histogram (merged from interval logs): the least,
    /// greatest and mean are the histogram's, to its precision.
    pub fn from_histogram(histogram: Histogram<u64>) -> Latency {
        let n = histogram.len();
        let mean = histogram.mean();
        let sd = histogram.stdev();
        Latency {
            count: n,
            sum: mean * n as f64,
            sum_squares: (sd * sd + mean * mean) * n as f64,
            min: if n == 0 { u64::MAX } else { histogram.min() },
            max: histogram.max(),
            histogram,
        }
    }

    /// The histogram itself (for interval logs and merging).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Records one latency, counted as 1 ns if shorter and as an hour if longer.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_NS);
        self.histogram.saturating_record(ns);
        self.count += 1;
        let x = ns as f64;
        self.sum += x;
        self.sum_squares += x * x;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds another set of latencies (another flow's) to these.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.histogram.add(&other.histogram);
        self.count += other.count;
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The summary in units of `unit_ns` nanoseconds (1e6 for ms, 1e3 for µs).
    pub fn summary(&self, unit_ns: f64) -> Summary {
        if self.count == 0 {
            return Summary::default();
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let variance = (self.sum_squares / n - mean * mean).max(0.0);
        // Whole nanoseconds in the unit: `0.332153`, never `0.33215300000000003`.
        let unit = |ns: f64| ns.round() / unit_ns;
        // The histogram gives the highest value equivalent to the percentile's bucket, which
        // can pass the exact maximum (or fall under the minimum): clamp to what was seen.
        let q = |quantile| {
            let v = self
                .histogram
                .value_at_quantile(quantile)
                .clamp(self.min, self.max);
            unit(v as f64)
        };
        Summary {
            min: unit(self.min as f64),
            avg: unit(mean),
            max: unit(self.max as f64),
            mdev: unit(variance.sqrt()),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
        }
    }

    /// The percentile distribution (value in units of `unit_ns`, percentile, total count,
    /// 1/(1-percentile)), in HdrHistogram's text format, which its plotters read.
    pub fn write_distribution(&self, out: &mut impl Write, unit_ns: f64) -> io::Result<()> {
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total = 0u64;
        for step in self.histogram.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / unit_ns;
            let q = step.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
        let s = self.summary(unit_ns);
        writeln!(
            out,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            s.avg, s.mdev
        )?;
        writeln!(
            out,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            s.max, self.count
        )?;
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            self.histogram.buckets(),
            self.histogram.distinct_values()
        )
    }
}

/// Where round trips go: a [`Latency`] (exact figures beside an HDR histogram) for a run,
/// fixed [`Buckets`](crate::measure::buckets::Buckets) for a target watched for ever.
pub trait Record {
    /// Records one duration.
    fn record(&mut self, d: Duration);
}

impl Record for Latency {
    fn record(&mut self, d: Duration) {
        Latency::record(self, d);
    }
}

/// Buckets made on the first duration recorded (a histogram most targets never need).
impl Record for Option<Box<crate::measure::buckets::Buckets>> {
    fn record(&mut self, d: Duration) {
        self.get_or_insert_with(Box::default).record(d);
    }
}

impl Record for crate::measure::buckets::Buckets {
    fn record(&mut self, d: Duration) {
        crate::measure::buckets::Buckets::record(self, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentiles_never_pass_the_maximum_and_figures_are_whole_nanoseconds() {
        let mut l = Latency::new();
        for ns in [332_153u64, 332_153, 1_000_001, 1_000_001, 1_000_001] {
            l.record(Duration::from_nanos(ns));
        }
        let s = l.summary(1e6);
        assert!(s.p999 <= s.max && s.p99 <= s.max, "{s:?}");
        assert!(s.p50 >= s.min, "{s:?}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"min\":0.332153,"), "{json}");
        assert!(json.contains("\"max\":1.000001,"), "{json}");
    }

    #[test]
    fn summary_is_exact_where_it_can_be_and_close_for_percentiles() {
        let mut l = Latency::new();
        for n in 1..=1000 {
            l.record(us(n));
        }
        let s = l.summary(1e3);
        assert_eq!((s.min, s.max), (1.0, 1000.0));
        assert!((s.avg - 500.5).abs() < 1e-9);
        assert!((s.mdev - 288.675).abs() < 0.01, "{}", s.mdev);
        assert!((s.p50 - 500.0).abs() <= 1.0, "{}", s.p50);
        assert!((s.p99 - 990.0).abs() <= 1.0, "{}", s.p99);
    }

    #[test]
    fn nothing_recorded_is_all_zero() {
        assert_eq!(Latency::new().summary(1e6), Summary::default());
    }

    #[test]
    fn merged_flows_count_together() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record(us(10));
        b.record(us(30));
        a.merge(&b);
        let s = a.summary(1e3);
        assert_eq!((a.count(), s.min, s.max, s.avg), (2, 10.0, 30.0, 20.0));
    }

    #[test]
    fn the_distribution_ends_at_the_maximum_with_the_total_count() {
        let mut l = Latency::new();
        for n in [5, 10, 20, 40] {
            l.record(us(n));
        }
        let mut out = Vec::new();
        l.write_distribution(&mut out, 1e3).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("       Value     Percentile TotalCount"),
            "{text}"
        );
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap();
        let cols: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(cols[0].parse::<f64>().unwrap().round(), 40.0, "{last_row}");
        assert_eq!(cols[1], "1.000000000000");
        assert_eq!(cols[2], "4");
        assert!(text.contains("Total count    =            4]"), "{text}");
    }
}
