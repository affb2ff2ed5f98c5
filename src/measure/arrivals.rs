//! What arrives of a one-way stream (`udpkit stream`), counted where it arrives: distinct
//! datagrams, duplicates, reordering (and by how far), RFC 3550 interarrival jitter, and
//! the distribution of packet delay variation (RFC 5481 PDV: each datagram's one-way delay
//! above the least one of the run).
//!
//! Promise: memory is fixed at creation, and small where many are kept: a server's stream
//! ([`Arrivals::compact`]) holds about 5 KiB, PDV to within 1/16 (6%); a client's one
//! stream ([`Arrivals::precise`]), three significant digits. A sequence number is counted
//! once as received, once more each time as a duplicate, or, when it is further behind the
//! newest than the window remembers, as `too_late` (neither received nor duplicate: it
//! cannot be told). Nothing a sender puts in a datagram (any sequence number, any time)
//! overflows a count or panics. Jitter and PDV use only differences of one-way delays, so
//! the two clocks' offset cancels; a drift between them over the run shows as PDV.

use hdrhistogram::{Counter, Histogram};

use crate::wire::stream::Counters;

/// One-way delays are recorded relative to the first, up to a minute either way (beyond,
/// clamped).
const RANGE_NS: u64 = 60_000_000_000;

/// A server's streams: sequence numbers remembered behind the newest (1 KiB), PDV with one
/// significant digit (1/16) in two histograms of 512 counts.
pub const COMPACT_WINDOW: u64 = 1 << 13;

/// A client's stream: a window of 65,536 and three significant digits.
pub const PRECISE_WINDOW: u64 = 1 << 16;

/// See the module's promise.
#[derive(Debug)]
pub struct Arrivals {
    /// Bit `seq % window`: seq received, for seqs in `next - window .. next`.
    seen: Box<[u64]>,
    window: u64,
    counters: Counters,
    jitter: f64,
    last_transit: Option<i64>,
    first_transit: Option<i64>,
    /// Transit relative to the first, in nanoseconds: at or above it (plus one, as the
    /// histogram starts at 1) and, magnitude, below it.
    above: Pdv,
    below: Pdv,
}

/// A PDV histogram: 32-bit counts where many are kept, 64-bit for a client's one.
#[derive(Debug)]
enum Pdv {
    Compact(Histogram<u32>),
    Precise(Histogram<u64>),
}

impl Pdv {
    fn new(precise: bool) -> Pdv {
        if precise {
            Pdv::Precise(Histogram::new_with_bounds(1, RANGE_NS, 3).expect("valid bounds"))
        } else {
            Pdv::Compact(Histogram::new_with_bounds(1, RANGE_NS, 1).expect("valid bounds"))
        }
    }

    fn record(&mut self, value: u64) {
        match self {
            Pdv::Compact(h) => h.saturating_record(value),
            Pdv::Precise(h) => h.saturating_record(value),
        }
    }

    fn len(&self) -> u64 {
        match self {
            Pdv::Compact(h) => h.len(),
            Pdv::Precise(h) => h.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn min(&self) -> u64 {
        match self {
            Pdv::Compact(h) => h.min(),
            Pdv::Precise(h) => h.min(),
        }
    }

    fn max(&self) -> u64 {
        match self {
            Pdv::Compact(h) => h.max(),
            Pdv::Precise(h) => h.max(),
        }
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        match self {
            Pdv::Compact(h) => h.value_at_quantile(q),
            Pdv::Precise(h) => h.value_at_quantile(q),
        }
    }

    /// Bytes its counts take.
    fn bytes(&self) -> usize {
        fn of<T: Counter>(h: &Histogram<T>) -> usize {
            h.distinct_values() * std::mem::size_of::<T>()
        }
        match self {
            Pdv::Compact(h) => of(h),
            Pdv::Precise(h) => of(h),
        }
    }
}

impl Arrivals {
    /// For one of a server's many streams (see the module's promise).
    pub fn compact() -> Arrivals {
        Self::with(COMPACT_WINDOW, false)
    }

    /// For a client's one stream.
    pub fn precise() -> Arrivals {
        Self::with(PRECISE_WINDOW, true)
    }

    fn with(window: u64, precise: bool) -> Arrivals {
        Arrivals {
            seen: vec![0u64; (window / 64) as usize].into_boxed_slice(),
            window,
            counters: Counters::default(),
            jitter: 0.0,
            last_transit: None,
            first_transit: None,
            above: Pdv::new(precise),
            below: Pdv::new(precise),
        }
    }

    /// Bytes held, the histograms' counts and the window's bits.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.seen.len() * 8 + self.above.bytes() + self.below.bytes()
    }

    fn bit(&mut self, seq: u64) -> (&mut u64, u64) {
        let i = seq % self.window;
        (&mut self.seen[(i / 64) as usize], 1u64 << (i % 64))
    }

    /// Datagram `seq` of `bytes` payload bytes, sent at `sent_ns` on the sender's clock,
    /// arrived at `arrived_ns` on this one.
    pub fn arrive(&mut self, seq: u64, bytes: usize, sent_ns: u64, arrived_ns: u64) {
        let window = self.window;
        let c = &mut self.counters;
        let next = c.next_expected;
        if seq == u64::MAX {
            // No datagram of a real stream is numbered so: a number past the count.
            c.malformed = c.malformed.saturating_add(1);
            return;
        }
        if seq >= next {
            // Forget what falls out of the window on the way to `seq`.
            let from = next.max(seq.saturating_sub(window - 1));
            if seq - from >= window {
                self.seen.fill(0);
            } else {
                for s in from..seq {
                    let (word, mask) = self.bit(s);
                    *word &= !mask;
                }
            }
            let (word, mask) = self.bit(seq);
            *word |= mask;
            self.counters.next_expected = seq + 1;
        } else if next - seq > window {
            c.too_late += 1;
            return;
        } else {
            let (word, mask) = self.bit(seq);
            if *word & mask != 0 {
                self.counters.duplicates += 1;
                return;
            }
            *word |= mask;
            let c = &mut self.counters;
            c.reordered += 1;
            c.reorder_max = c.reorder_max.max(next - 1 - seq);
        }
        let c = &mut self.counters;
        c.received += 1;
        c.bytes = c.bytes.saturating_add(bytes as u64);
        // Any two clock readings: their difference, in i128, never overflows (and is held
        // in i64, ±292 years); differences of those saturate.
        let transit = (i128::from(arrived_ns) - i128::from(sent_ns))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        if let Some(last) = self.last_transit {
            let d = transit.saturating_sub(last).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        let first = *self.first_transit.get_or_insert(transit);
        let d = transit.saturating_sub(first);
        if d >= 0 {
            self.above
                .record((d as u64).saturating_add(1).min(RANGE_NS));
        } else {
            self.below.record(d.unsigned_abs().min(RANGE_NS));
        }
    }

    /// The `q` quantile of transit relative to the first, in nanoseconds (signed).
    fn relative_quantile(&self, q: f64) -> i64 {
        let (nb, na) = (self.below.len(), self.above.len());
        let rank = (q * (nb + na) as f64).ceil().max(1.0) as u64;
        if rank <= nb {
            // The below histogram holds magnitudes: its rank counts from the largest.
            let from_top = (nb - rank) as f64 / nb as f64;
            -(self.below.value_at_quantile(from_top) as i64)
        } else {
            let k = (rank - nb) as f64 / na as f64;
            self.above.value_at_quantile(k) as i64 - 1
        }
    }

    /// A datagram of this stream that could not be read.
    pub fn malformed(&mut self) {
        self.counters.malformed = self.counters.malformed.saturating_add(1);
    }

    /// A data datagram with this stream's ID from somewhere else than its sender.
    pub fn forged(&mut self) {
        self.counters.forged = self.counters.forged.saturating_add(1);
    }

    /// The counters so far, with jitter and PDV percentiles filled in.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.jitter_ns = self.jitter.round() as u64;
        if self.above.len() + self.below.len() > 0 {
            // PDV: above the least one-way delay of the run (RFC 5481).
            let least = if !self.below.is_empty() {
                -(self.below.max() as i64)
            } else {
                self.above.min() as i64 - 1
            };
            let q = |q: f64| (self.relative_quantile(q) - least).max(0) as u64;
            c.pdv_p50_ns = q(0.5);
            c.pdv_p90_ns = q(0.9);
            c.pdv_p99_ns = q(0.99);
            c.pdv_p999_ns = q(0.999);
            let most = if !self.above.is_empty() {
                self.above.max() as i64 - 1
            } else {
                -(self.below.min() as i64)
            };
            c.pdv_max_ns = (most - least).max(0) as u64;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(order: &[u64]) -> Counters {
        let mut a = Arrivals::precise();
        for (i, &seq) in order.iter().enumerate() {
            a.arrive(seq, 100, seq * 1000, seq * 1000 + 50_000 + i as u64);
        }
        a.counters()
    }

    #[test]
    fn loss_duplicates_and_reordering_are_told_apart() {
        // 0..10 with 3 lost, 5 duplicated, 7 arriving after 8 (one place late).
        let c = feed(&[0, 1, 2, 4, 5, 5, 6, 8, 7, 9]);
        assert_eq!(c.received, 9);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.reordered, 1);
        assert_eq!(c.reorder_max, 1);
        assert_eq!(c.next_expected, 10);
        assert_eq!(c.bytes, 900);
        assert_eq!(c.too_late, 0);
    }

    #[test]
    fn a_late_copy_of_a_datagram_far_behind_is_neither_received_nor_a_duplicate() {
        let mut a = Arrivals::precise();
        a.arrive(0, 1, 0, 0);
        a.arrive(PRECISE_WINDOW + 10, 1, 0, 0);
        a.arrive(0, 1, 0, 0);
        a.arrive(11, 1, 0, 0); // inside the window: a first arrival, reordered
        a.arrive(11, 1, 0, 0);
        let c = a.counters();
        assert_eq!(
            (c.received, c.too_late, c.duplicates, c.reordered),
            (3, 1, 1, 1)
        );
        assert_eq!(c.reorder_max, PRECISE_WINDOW - 1);
    }

    #[test]
    fn jitter_and_pdv_ignore_the_clock_offset() {
        // Transit alternates 1 ms and 3 ms, on a receiver clock an hour ahead.
        let mut a = Arrivals::precise();
        let offset = 3_600_000_000_000u64;
        for seq in 0..1000u64 {
            let transit = if seq % 2 == 0 { 1_000_000 } else { 3_000_000 };
            a.arrive(seq, 10, seq * 1_000_000, seq * 1_000_000 + transit + offset);
        }
        let c = a.counters();
        // RFC 3550: J converges to |D| = 2 ms.
        assert!((c.jitter_ns as f64 - 2e6).abs() < 1e4, "{}", c.jitter_ns);
        assert!(c.pdv_p50_ns < 10_000, "{}", c.pdv_p50_ns);
        assert!((c.pdv_max_ns as f64 - 2e6).abs() < 2e3, "{}", c.pdv_max_ns);
        assert!((c.pdv_p90_ns as f64 - 2e6).abs() < 2e3, "{}", c.pdv_p90_ns);
    }

    #[test]
    fn pdv_is_measured_from_the_least_delay_even_when_the_first_was_slow() {
        // The first datagram took 5 ms, the rest 1 ms to 2 ms (evenly).
        let mut a = Arrivals::precise();
        a.arrive(0, 1, 0, 5_000_000);
        for seq in 1..=1000u64 {
            let transit = 1_000_000 + (seq - 1) * 1000;
            a.arrive(seq, 1, seq * 10_000_000, seq * 10_000_000 + transit);
        }
        let c = a.counters();
        assert!(
            (c.pdv_p50_ns as f64 - 0.5e6).abs() < 5e3,
            "{}",
            c.pdv_p50_ns
        );
        assert!(
            (c.pdv_p99_ns as f64 - 0.99e6).abs() < 5e3,
            "{}",
            c.pdv_p99_ns
        );
        assert!((c.pdv_max_ns as f64 - 4e6).abs() < 5e3, "{}", c.pdv_max_ns);
    }

    #[test]
    fn a_servers_stream_holds_a_few_kib() {
        let a = Arrivals::compact();
        assert!(a.bytes() <= 6 << 10, "{} bytes", a.bytes());
        assert!(Arrivals::precise().bytes() > 100 << 10);
    }

    #[test]
    fn compact_pdv_is_within_a_sixteenth() {
        // Transit 1 ms to 2 ms, evenly: PDV p50 0.5 ms, p99 0.99 ms.
        let mut a = Arrivals::compact();
        for seq in 0..=1000u64 {
            a.arrive(
                seq,
                1,
                seq * 10_000_000,
                seq * 10_000_000 + 1_000_000 + seq * 1000,
            );
        }
        let c = a.counters();
        for (got, want) in [
            (c.pdv_p50_ns, 0.5e6),
            (c.pdv_p99_ns, 0.99e6),
            (c.pdv_max_ns, 1e6),
        ] {
            assert!((got as f64 - want).abs() <= want / 16.0, "{got} for {want}");
        }
    }

    #[test]
    fn no_number_a_sender_puts_in_a_datagram_panics_or_wraps() {
        for mut a in [Arrivals::compact(), Arrivals::precise()] {
            for (seq, sent, arrived) in [
                (u64::MAX, 0, u64::MAX),
                (u64::MAX - 1, u64::MAX, 0),
                (0, 0, u64::MAX),
                (u64::MAX - 1, 0, 0),
                (1 << 63, u64::MAX, u64::MAX),
            ] {
                a.arrive(seq, usize::MAX, sent, arrived);
            }
            let c = a.counters();
            assert_eq!(
                c.next_expected,
                u64::MAX,
                "the highest number that can be taken"
            );
            assert_eq!(c.malformed, 1, "u64::MAX is no sequence number");
        }
    }
}
