//! Impairments applied on purpose, as a wrapper around the data path rather than `if`s
//! spread through it: the server's `--drop-rate` (the book's "pretending to drop"), and the
//! relay's loss, duplication, reordering, delay, jitter and rate.
//!
//! Promise: with a seed, the same sequence of decisions every run.

use std::time::{Duration, Instant};

/// Drops a share of datagrams at random.
#[derive(Debug)]
pub struct Loss {
    rate: f64,
    rng: fastrand::Rng,
}

impl Loss {
    /// Drops each datagram with probability `rate` (0 to 1); `seed` makes it reproducible.
    pub fn new(rate: f64, seed: Option<u64>) -> Self {
        Loss {
            rate,
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        }
    }

    /// Whether to drop the next datagram.
    pub fn drops(&mut self) -> bool {
        self.rate > 0.0 && self.rng.f64() < self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::Loss;

    #[test]
    fn the_share_dropped_is_near_the_rate_and_seeded_runs_repeat() {
        let run = |seed| {
            let mut loss = Loss::new(0.3, Some(seed));
            (0..10_000).map(|_| loss.drops()).collect::<Vec<_>>()
        };
        let dropped = run(7).iter().filter(|d| **d).count();
        assert!((2_700..3_300).contains(&dropped), "{dropped}");
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(!Loss::new(0.0, None).drops());
    }
}

/// What an [`Impairer`] applies, to one direction of traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Settings {
    /// Share of datagrams dropped, 0 to 1.
    pub drop: f64,
    /// Share of datagrams sent twice.
    pub duplicate: f64,
    /// Share of datagrams held back until the next one has gone (so the two swap places).
    pub reorder: f64,
    /// Added to every datagram's trip.
    pub delay: Duration,
    /// Each datagram's delay varies by up to this much either way (never below zero).
    pub jitter: Duration,
    /// At most this many datagrams a second; faster ones queue (shaping, as netem's rate).
    pub rate: Option<f64>,
}

impl Settings {
    /// True when these settings change nothing.
    pub fn is_clean(&self) -> bool {
        *self == Settings::default()
    }
}

/// The fate of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fate {
    /// How many copies go out: 0 (dropped), 1, or 2 (duplicated).
    pub copies: usize,
    /// When each copy goes out.
    pub at: [Instant; 2],
    /// Hold this one back until the next datagram in this direction has gone.
    pub hold: bool,
}

/// Decides, datagram by datagram, what happens to each: drop, duplicate, reorder, delay,
/// jitter and rate, from one random stream, so that the same seed and the same traffic
/// give the same decisions.
#[derive(Debug)]
pub struct Impairer {
    settings: Settings,
    rng: fastrand::Rng,
    /// Shaping: the earliest time the next datagram may leave.
    next_free: Option<Instant>,
}

impl Impairer {
    pub fn new(settings: Settings, seed: Option<u64>) -> Self {
        Impairer {
            settings,
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            next_free: None,
        }
    }

    /// Decides the fate of a datagram that arrives at `now`.
    pub fn decide(&mut self, now: Instant) -> Fate {
        let s = self.settings;
        // Every draw is made for every datagram, so decisions never shift with settings.
        let (drop, dup, reorder) = (self.rng.f64(), self.rng.f64(), self.rng.f64());
        let jitters = [self.rng.f64(), self.rng.f64()];
        let mut fate = Fate {
            copies: if drop < s.drop {
                0
            } else if dup < s.duplicate {
                2
            } else {
                1
            },
            at: [now; 2],
            hold: reorder < s.reorder,
        };
        let copies = fate.copies;
        for (at, j) in fate.at.iter_mut().zip(jitters).take(copies) {
            let jitter = s.jitter.as_secs_f64() * (2.0 * j - 1.0);
            let delay = (s.delay.as_secs_f64() + jitter).max(0.0);
            *at = now + Duration::from_secs_f64(delay);
            if let Some(rate) = s.rate {
                let free = self.next_free.map_or(*at, |f| f.max(*at));
                *at = free;
                self.next_free = Some(free + Duration::from_secs_f64(1.0 / rate));
            }
        }
        fate
    }
}

#[cfg(test)]
mod impairer_tests {
    use super::*;

    /// Each datagram's copies, hold, and delays from its arrival.
    fn fates(settings: Settings, seed: u64, n: usize) -> Vec<(usize, bool, [Duration; 2])> {
        let mut imp = Impairer::new(settings, Some(seed));
        let t = Instant::now();
        (0..n)
            .map(|_| {
                let f = imp.decide(t);
                (f.copies, f.hold, [f.at[0] - t, f.at[1] - t])
            })
            .collect()
    }

    #[test]
    fn shares_are_near_the_settings_and_seeds_repeat() {
        let s = Settings {
            drop: 0.3,
            duplicate: 0.2,
            reorder: 0.1,
            ..Settings::default()
        };
        let f = fates(s, 1, 10_000);
        let dropped = f.iter().filter(|f| f.0 == 0).count();
        let duplicated = f.iter().filter(|f| f.0 == 2).count();
        let held = f.iter().filter(|f| f.1).count();
        assert!((2_700..3_300).contains(&dropped), "{dropped}");
        // Duplicates are drawn among the datagrams not dropped: 0.7 * 0.2.
        assert!((1_200..1_600).contains(&duplicated), "{duplicated}");
        assert!((800..1_200).contains(&held), "{held}");
        assert_eq!(f, fates(s, 1, 10_000));
        assert_ne!(f, fates(s, 2, 10_000));
    }

    #[test]
    fn delay_and_jitter_stay_in_their_band() {
        let s = Settings {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            ..Settings::default()
        };
        let mut imp = Impairer::new(s, Some(3));
        let t = Instant::now();
        for _ in 0..1000 {
            let d = imp.decide(t).at[0] - t;
            assert!(
                d >= Duration::from_millis(15) && d <= Duration::from_millis(25),
                "{d:?}"
            );
        }
    }

    #[test]
    fn rate_spaces_datagrams_out() {
        let s = Settings {
            rate: Some(100.0),
            ..Settings::default()
        };
        let mut imp = Impairer::new(s, Some(4));
        let t = Instant::now();
        let times: Vec<Instant> = (0..5).map(|_| imp.decide(t).at[0]).collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!((gap.as_secs_f64() - 0.01).abs() < 1e-6, "{gap:?}");
        }
    }

    #[test]
    fn clean_settings_change_nothing() {
        let f = fates(Settings::default(), 5, 100);
        assert!(f.iter().all(|f| f.0 == 1 && !f.1 && f.2[0].is_zero()));
        assert!(Settings::default().is_clean());
    }
}
