//! Impairments applied on purpose, as a wrapper around the data path rather than `if`s
//! spread through it: for now the server's `--drop-rate`, the book's "pretending to drop".
//!
//! Promise: with a seed, the same sequence of decisions every run.

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
