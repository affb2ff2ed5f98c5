//! Impairments applied on purpose, as one stage around the data path rather than `if`s
//! spread through it (smoltcp's `FaultInjector` is the model): an [`Impairer`] decides each
//! datagram's fate (the server's `--drop-rate`, the book's "pretending to drop", uses it
//! with loss alone), and a [`Stage`] carries the fates out for the relay: the datagrams it
//! delays (in a queue bounded in bytes), the one it holds back to reorder, and its counts.
//!
//! Promise: with a seed, the same sequence of decisions every run; a stage holds at most
//! its byte limit, and every datagram pushed into it is counted once as sent (each copy),
//! dropped, refused for a full queue, or still held.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What is done to one direction of traffic: the relay's impairments, a server's drops.
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

/// What a [`Stage`] did, beside what it passed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCounts {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Copies that did not fit in the delay queue.
    pub queue_full: u64,
    /// The most bytes the queue held at once.
    pub peak_bytes: u64,
}

/// A datagram in a stage: anything with a length in bytes.
pub trait Payload {
    fn bytes(&self) -> usize;
}

impl<P> Payload for (P, Vec<u8>) {
    fn bytes(&self) -> usize {
        self.1.len()
    }
}

/// A copy waiting for its time.
struct Delayed<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for Delayed<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<T> Eq for Delayed<T> {}
impl<T> PartialOrd for Delayed<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Delayed<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// How long a datagram held back for reordering waits for another to overtake it.
pub const HOLD_AT_MOST: Duration = Duration::from_millis(100);

/// One direction's impairments carried out: datagrams go in with [`Stage::push`] and come
/// out, impaired, through the `send` callbacks of `push` and [`Stage::release`].
pub struct Stage<T> {
    impairer: Option<Impairer>,
    queue: BinaryHeap<Reverse<Delayed<T>>>,
    queued_bytes: usize,
    limit_bytes: usize,
    held: Option<(T, Instant)>,
    order: u64,
    counts: StageCounts,
}

impl<T: Payload + Clone> Stage<T> {
    /// A stage applying `settings` (none: a clean pass-through), whose delay queue holds
    /// at most `limit_bytes`.
    pub fn new(settings: Option<Settings>, seed: Option<u64>, limit_bytes: usize) -> Self {
        Stage {
            impairer: settings
                .filter(|s| !s.is_clean())
                .map(|s| Impairer::new(s, seed)),
            queue: BinaryHeap::new(),
            queued_bytes: 0,
            limit_bytes,
            held: None,
            order: 0,
            counts: StageCounts::default(),
        }
    }

    /// True when the stage changes nothing: datagrams may bypass it.
    pub fn is_clean(&self) -> bool {
        self.impairer.is_none()
    }

    pub fn counts(&self) -> StageCounts {
        self.counts
    }

    /// Datagrams still in the stage (queued or held).
    pub fn pending(&self) -> usize {
        self.queue.len() + usize::from(self.held.is_some())
    }

    /// When the stage next has something to release, if it holds anything.
    pub fn next_due(&self) -> Option<Instant> {
        let queued = self.queue.peek().map(|Reverse(d)| d.at);
        let held = self.held.as_ref().map(|(_, since)| *since + HOLD_AT_MOST);
        queued.into_iter().chain(held).min()
    }

    /// Takes a datagram that arrived at `now`; what goes at once is given to `send`.
    pub fn push(&mut self, now: Instant, item: T, send: &mut impl FnMut(T)) {
        let Some(impairer) = &mut self.impairer else {
            send(item);
            return;
        };
        let fate = impairer.decide(now);
        if fate.copies == 0 {
            self.counts.dropped += 1;
            return;
        }
        if fate.copies == 2 {
            self.counts.duplicated += 1;
        }
        // Only a single copy is held back; a duplicated datagram goes out as it is.
        if fate.hold && fate.copies == 1 && self.held.is_none() {
            self.held = Some((item, now));
            self.counts.reordered += 1;
            return;
        }
        for &at in &fate.at[..fate.copies] {
            if at <= now {
                send(item.clone());
            } else if self.queued_bytes + item.bytes() <= self.limit_bytes {
                self.order += 1;
                self.queued_bytes += item.bytes();
                self.counts.peak_bytes = self.counts.peak_bytes.max(self.queued_bytes as u64);
                self.queue.push(Reverse(Delayed {
                    at,
                    order: self.order,
                    item: item.clone(),
                }));
            } else {
                self.counts.queue_full += 1;
            }
        }
        // The datagram held back goes once another has overtaken it.
        if let Some((held, _)) = self.held.take() {
            send(held);
        }
    }

    /// Gives `send` every datagram due by `now`, and a held one nobody overtook in time.
    pub fn release(&mut self, now: Instant, send: &mut impl FnMut(T)) {
        while self.queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(d) = self.queue.pop().expect("peeked");
            self.queued_bytes -= d.item.bytes();
            send(d.item);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|(_, since)| now >= *since + HOLD_AT_MOST)
        {
            let (held, _) = self.held.take().expect("checked");
            send(held);
        }
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    type Item = (u32, Vec<u8>);

    fn run(stage: &mut Stage<Item>, n: u32, t: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        for i in 0..n {
            stage.push(t, (i, vec![0; 10]), &mut |(i, _)| out.push(i));
        }
        stage.release(t + Duration::from_secs(10), &mut |(i, _)| out.push(i));
        out
    }

    #[test]
    fn a_clean_stage_passes_everything_in_order() {
        let mut stage = Stage::new(None, None, 1000);
        assert_eq!(run(&mut stage, 5, Instant::now()), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_datagram_is_accounted_for() {
        let s = Settings {
            drop: 0.2,
            duplicate: 0.1,
            reorder: 0.1,
            delay: Duration::from_millis(5),
            ..Settings::default()
        };
        let mut stage = Stage::new(Some(s), Some(9), 1 << 20);
        let out = run(&mut stage, 1000, Instant::now());
        let c = stage.counts();
        assert_eq!(stage.pending(), 0);
        assert_eq!(out.len() as u64, 1000 - c.dropped + c.duplicated);
        assert!(c.reordered > 0 && c.duplicated > 0 && c.dropped > 0);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let s = Settings {
            delay: Duration::from_secs(1),
            ..Settings::default()
        };
        let mut stage = Stage::new(Some(s), Some(1), 35);
        let mut sent = 0;
        for i in 0..10 {
            stage.push(Instant::now(), (i, vec![0; 10]), &mut |_| sent += 1);
        }
        assert_eq!((stage.pending(), stage.counts().queue_full), (3, 7));
        assert!(stage.counts().peak_bytes <= 35);
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
