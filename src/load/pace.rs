//! The one pacer: a schedule of evenly spaced slots (slot `k` at `start + k / rate`) that
//! says which are due, for every sender that keeps a rate: `bench --rate`, `ping -i`,
//! `stream` and the server's reverse streams.
//!
//! Promise: a sender that takes only what [`Schedule::due`] gives never sends faster than
//! its rate, beyond a burst of [`crate::limits::pacer_burst`] slots after a stall: slots it
//! fell further behind on are skipped and counted ([`Schedule::skipped`]), never sent in a
//! rush; once the schedule's end time has passed, at most [`limits::PACER_BURST`] more (a
//! sender that could not keep up stops there, never catching up past the end). No slot
//! lies at or past the schedule's end. Nothing overflows or panics, whatever the rate and
//! the times (the rate is checked when the schedule is made).

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::limits;

/// See the module's promise.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    per_second: f64,
    /// The next slot not yet taken.
    next: u64,
    /// Slots skipped after stalls.
    skipped: u64,
    /// Slots due at once after a stall, at most.
    burst: u64,
    /// The first slot at or past the end, if the schedule ends, and when that is.
    end: Option<u64>,
    end_at: Option<Instant>,
}

impl Schedule {
    /// Slots at `per_second` from `start` (slot 0 is due at `start`), after a stall at most
    /// [`limits::pacer_burst`] at once. `None` for a rate that is not a finite number above
    /// zero.
    pub fn new(start: Instant, per_second: f64) -> Option<Schedule> {
        (per_second.is_finite() && per_second > 0.0).then(|| Schedule {
            start,
            per_second,
            next: 0,
            skipped: 0,
            burst: limits::pacer_burst(per_second),
            end: None,
            end_at: None,
        })
    }

    /// The same schedule with at most `burst` slots due at once (1: after a stall, one slot,
    /// the rest skipped: ping's way).
    pub fn with_burst(mut self, burst: u64) -> Schedule {
        self.burst = burst.max(1);
        self
    }

    /// The same schedule with bursts of datagrams of `size` bytes: also at most
    /// [`limits::PACER_BURST_BYTES`] of them.
    pub fn of_datagrams(mut self, size: usize) -> Schedule {
        self.burst = limits::pacer_burst_of(self.per_second, size).min(self.burst.max(1));
        self
    }

    /// The same schedule with no slot at or past `start + length`.
    pub fn ending_after(mut self, length: Duration) -> Schedule {
        self.end_at = self.start.checked_add(length);
        let slots = (length.as_secs_f64() * self.per_second).ceil();
        self.end = Some(if slots >= u64::MAX as f64 {
            u64::MAX
        } else {
            slots as u64
        });
        self
    }

    /// The time of slot `k` (saturating far in the future).
    pub fn at(&self, k: u64) -> Instant {
        let secs = k as f64 / self.per_second;
        Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| self.start.checked_add(d))
            .unwrap_or_else(|| self.start + Duration::from_secs(86_400 * 365))
    }

    /// How many slots have come by `now` (slot 0 at the start), up to the end.
    fn come(&self, now: Instant) -> u64 {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return 0;
        };
        let come = (elapsed.as_secs_f64() * self.per_second).floor() + 1.0;
        let come = if come >= u64::MAX as f64 {
            u64::MAX
        } else {
            come as u64
        };
        self.end.map_or(come, |end| come.min(end))
    }

    /// The slots due at `now`, at most `max` of them: first those more than a burst behind
    /// are skipped. Take them with [`Schedule::take`] as they go.
    pub fn due(&mut self, now: Instant, max: u64) -> Range<u64> {
        let come = self.come(now);
        let behind = come.saturating_sub(self.next);
        // Past the end, no more than a small burst: the rest will never be on time.
        let burst = if self.end_at.is_some_and(|t| now >= t) {
            self.burst.min(limits::PACER_BURST)
        } else {
            self.burst
        };
        if behind > burst {
            let skip = behind - burst;
            self.next += skip;
            self.skipped = self.skipped.saturating_add(skip);
        }
        let upto = come.min(self.next.saturating_add(max));
        self.next..upto.max(self.next)
    }

    /// Marks the next `n` slots as taken (sent, or given up).
    pub fn take(&mut self, n: u64) {
        self.next = self.next.saturating_add(n);
        if let Some(end) = self.end {
            self.next = self.next.min(end);
        }
    }

    /// When the next slot is due; `None` once the schedule has ended.
    pub fn next_at(&self) -> Option<Instant> {
        if self.is_over() {
            return None;
        }
        Some(self.at(self.next))
    }

    /// Every slot of an ending schedule is taken or skipped.
    pub fn is_over(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }

    /// Slots skipped after stalls (the sender could not keep its schedule).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_at_the_rate() {
        let t = Instant::now();
        let mut s = Schedule::new(t, 1000.0).unwrap();
        assert_eq!(s.due(t, u64::MAX), 0..1, "slot 0 at the start");
        s.take(1);
        assert_eq!(s.due(t + Duration::from_micros(500), u64::MAX), 1..1);
        assert_eq!(s.due(t + Duration::from_millis(10), u64::MAX), 1..11);
        assert_eq!(s.due(t + Duration::from_millis(10), 4), 1..5);
        assert_eq!(s.skipped(), 0);
    }

    #[test]
    fn a_stall_gives_a_burst_at_most_and_the_rest_is_skipped() {
        // The case: 5,000 a second, a 1.8 s stall.
        let t = Instant::now();
        let mut s = Schedule::new(t, 5000.0).unwrap();
        let first = s.due(t, u64::MAX).end;
        s.take(first);
        let after = t + Duration::from_millis(1800);
        let due = s.due(after, u64::MAX);
        assert_eq!(due.end - due.start, limits::PACER_BURST);
        assert_eq!(s.skipped(), 9000 - 64);
        s.take(due.end - due.start);
        // Then the rate again: 10 ms later, 50 more.
        let later = s.due(after + Duration::from_millis(10), u64::MAX);
        assert_eq!(later.end - later.start, 50);
        assert_eq!(s.skipped(), 9000 - 64, "nothing more skipped");
    }

    #[test]
    fn an_ending_schedule_has_no_slot_past_its_end() {
        let t = Instant::now();
        let mut s = Schedule::new(t, 100.0)
            .unwrap()
            .ending_after(Duration::from_secs(1));
        let due = s.due(t + Duration::from_secs(5), u64::MAX);
        assert_eq!(due.end, 100);
        s.take(1000);
        assert!(s.is_over());
        assert_eq!(s.next_at(), None);
    }

    #[test]
    fn extreme_rates_and_times_neither_panic_nor_overflow() {
        let t = Instant::now();
        assert!(Schedule::new(t, 0.0).is_none());
        assert!(Schedule::new(t, f64::NAN).is_none());
        assert!(Schedule::new(t, -1.0).is_none());
        for rate in [1e-300, 1e-3, 1e300, f64::MAX] {
            let mut s = Schedule::new(t, rate)
                .unwrap()
                .ending_after(Duration::from_secs(u64::MAX));
            let _ = s.due(t + Duration::from_secs(3600), u64::MAX);
            let _ = s.at(u64::MAX);
            let _ = s.next_at();
            s.take(u64::MAX);
        }
        let mut s = Schedule::new(t, 1.0).unwrap();
        assert_eq!(
            s.due(t - Duration::from_secs(1), 10),
            0..0,
            "before the start"
        );
    }

    #[test]
    fn past_its_end_a_sender_behind_stops_within_a_small_burst() {
        let t = Instant::now();
        let mut s = Schedule::new(t, 1e6)
            .unwrap()
            .ending_after(Duration::from_millis(500));
        // Far behind at the end: a small burst at most, then over.
        let due = s.due(t + Duration::from_millis(600), u64::MAX);
        assert_eq!(due.end - due.start, limits::PACER_BURST);
        s.take(due.end - due.start);
        assert!(s.is_over());
    }

    #[test]
    fn a_burst_is_bounded_in_bytes_too() {
        let t = Instant::now();
        let mut s = Schedule::new(t, 1e8).unwrap().of_datagrams(65_507);
        let due = s.due(t + Duration::from_secs(1), u64::MAX);
        assert_eq!(due.end - due.start, limits::PACER_BURST);
    }

    #[test]
    fn a_burst_of_one_is_pings_way() {
        let t = Instant::now();
        let mut s = Schedule::new(t, 1.0).unwrap().with_burst(1);
        let first = s.due(t, 1).end;
        s.take(first);
        let due = s.due(t + Duration::from_millis(5500), u64::MAX);
        assert_eq!(due, 5..6, "one request after a stall, on the grid");
        assert_eq!(s.skipped(), 4);
    }
}
