//! Response rate limiting, as DNS servers do it (BIND, Knot, NSD): token buckets of replies
//! per source prefix (IPv4 /24, IPv6 /56), so that forged sources cannot turn the server
//! into an amplifier aimed at a victim.
//!
//! Promise: whatever else arrives, no prefix is ever answered more than `burst + rate × t`
//! times in `t` seconds (slipped replies aside, see below), by the whole server: one
//! limiter serves every thread. Memory is fixed at creation ([`SLOTS`] buckets); each
//! decision is O(1) and allocates nothing.
//!
//! How: a prefix owns no bucket of its own. It is hashed, with two keys chosen at random
//! at start, to two buckets, and a reply needs a token from both. Each of its buckets is
//! drained by every reply to it, so its replies never pass the bucket's bound; a flood of
//! other prefixes can only share (and drain) its buckets, never hand it a fresh one, as
//! evicting a table entry would. The price: an attacker spraying millions of prefixes a
//! second drains buckets that real clients share, and they are limited too.
//!
//! Slip (BIND's `slip 2`): every second request refused is answered anyway when its reply
//! is no longer than the request, so that a real client whose prefix is flooded by a
//! spoofer still gets through, while the reply gives a spoofer nothing it did not spend.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// Whether replies are rate-limited per source prefix (see `serve/ratelimit.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateLimit {
    /// On at the default rate when bound beyond loopback, off on loopback.
    Auto,
    /// Every reply goes, however many a prefix asks for.
    Off,
    /// This many replies a second per prefix, with a burst of one second's worth (at least
    /// one), for the whole server whatever its threads.
    PerSecond(f64),
}

/// Buckets in the table: 65,536 of 16 bytes, 1 MiB.
pub const SLOTS: usize = 65_536;

/// The default rate when the server listens beyond loopback: 100 replies a second per
/// prefix, with a burst of 100 (one second's worth).
pub const DEFAULT_PER_SECOND: f64 = 100.0;

/// One refused request in this many is answered anyway, if its reply is no longer.
pub const SLIP: u64 = 2;

/// The source network a reply counts against: the /24 of an IPv4 address, the /56 of an
/// IPv6 one (an IPv4-mapped IPv6 address counts as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// The first three bytes of an IPv4 address (its /24).
    V4([u8; 3]),
    /// The first seven bytes of an IPv6 address (its /56).
    V6([u8; 7]),
}

impl Prefix {
    /// The prefix `ip` counts against.
    pub fn of(ip: IpAddr) -> Prefix {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Prefix::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Prefix::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6]])
            }
        }
    }
}

impl fmt::Display for Prefix {
    /// `192.0.2.0/24`, `2001:db8:0:ff00::/56`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Prefix::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Prefix::V6(p) => {
                let mut o = [0u8; 16];
                o[..7].copy_from_slice(&p);
                write!(f, "{}/56", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    /// Nanoseconds since the limiter's epoch at the last refill; `u64::MAX`: never used.
    last: u64,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Answer,
    /// Over the limit, but answered anyway (see the module's note on slip).
    Slip,
    Refuse,
}

/// Token buckets of replies per source prefix (bounded; see the module's promise).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Box<[Bucket]>,
    keys: [RandomState; 2],
    epoch: Instant,
    refused: u64,
}

impl RateLimiter {
    /// `per_second` replies a second per prefix, after a first burst of `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        let fresh = Bucket {
            tokens: 0.0,
            last: u64::MAX,
        };
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            buckets: vec![fresh; SLOTS].into_boxed_slice(),
            keys: [RandomState::new(), RandomState::new()],
            epoch: Instant::now(),
            refused: 0,
        }
    }

    /// True if a reply to `ip` fits its prefix's budget at `now` (and spends a token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let prefix = Prefix::of(ip);
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        let slots = self
            .keys
            .each_ref()
            .map(|k| k.hash_one(prefix) as usize % SLOTS);
        let mut enough = true;
        for &i in &slots {
            let b = &mut self.buckets[i];
            if b.last == u64::MAX {
                *b = Bucket {
                    tokens: self.burst,
                    last: at,
                };
            } else if at > b.last {
                let earned = (at - b.last) as f64 * 1e-9 * self.per_second;
                b.tokens = (b.tokens + earned).min(self.burst);
                b.last = at;
            }
            enough &= b.tokens >= 1.0;
        }
        if enough {
            for &i in &slots {
                self.buckets[i].tokens -= 1.0;
            }
        }
        enough
    }

    /// The decision for a request of `request_len` bytes from `ip` whose reply would be
    /// `reply_len` bytes: within the budget, slipped, or refused.
    pub fn decide(
        &mut self,
        ip: IpAddr,
        now: Instant,
        request_len: usize,
        reply_len: usize,
    ) -> Decision {
        if self.allow(ip, now) {
            return Decision::Answer;
        }
        self.refused += 1;
        if reply_len <= request_len && self.refused.is_multiple_of(SLIP) {
            Decision::Slip
        } else {
            Decision::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut rl = RateLimiter::new(10.0, 5.0);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| rl.allow(ip("192.0.2.1"), t0)).count();
        assert_eq!(allowed, 5);
        // One second later, ten more earned, but the bucket holds at most the burst.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| rl.allow(ip("192.0.2.1"), t1)).count();
        assert_eq!(allowed, 5, "the bucket holds at most the burst");
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!(
            (0..100).filter(|_| rl.allow(ip("192.0.2.1"), t2)).count(),
            3
        );
    }

    #[test]
    fn a_prefix_shares_one_budget_and_others_have_their_own() {
        let mut rl = RateLimiter::new(1.0, 2.0);
        let t = Instant::now();
        assert!(rl.allow(ip("192.0.2.1"), t));
        assert!(rl.allow(ip("192.0.2.200"), t));
        assert!(!rl.allow(ip("192.0.2.7"), t), "same /24");
        assert!(rl.allow(ip("192.0.3.1"), t), "another /24");
        assert!(rl.allow(ip("2001:db8:0:ff::1"), t));
        assert!(rl.allow(ip("2001:db8:0:ff::2"), t));
        assert!(!rl.allow(ip("2001:db8:0:ab::3"), t), "same /56");
        assert!(rl.allow(ip("2001:db8:0:100::1"), t), "another /56");
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(
            Prefix::of(ip("::ffff:192.0.2.9")),
            Prefix::of(ip("192.0.2.1"))
        );
        assert_eq!(Prefix::of(ip("192.0.2.9")).to_string(), "192.0.2.0/24");
        assert_eq!(
            Prefix::of(ip("2001:db8:0:ffab::1")).to_string(),
            "2001:db8:0:ff00::/56"
        );
    }

    #[test]
    fn spraying_other_prefixes_never_hands_a_victim_a_fresh_burst() {
        // The attack on a table that evicts: interleave the victim's requests with
        // requests from thousands of random prefixes, so that the victim's entry is
        // evicted and comes back with a full burst. Here, over 10 simulated seconds, the
        // victim is answered at most burst + rate x 10 times.
        let (rate, burst) = (10.0, 10.0);
        let mut rl = RateLimiter::new(rate, burst);
        let t0 = Instant::now();
        let mut answered = 0;
        let mut rng = fastrand::Rng::with_seed(1);
        for step in 0..100_000u64 {
            let now = t0 + Duration::from_micros(step * 100);
            if rl.allow(ip("192.0.2.1"), now) {
                answered += 1;
            }
            for _ in 0..4 {
                let other = IpAddr::from(rng.u32(..).to_be_bytes());
                rl.allow(other, now);
            }
        }
        assert!(
            answered as f64 <= burst + rate * 10.0,
            "the victim was answered {answered} times"
        );
        assert!(answered >= 100, "the victim keeps its own rate: {answered}");
    }

    #[test]
    fn every_second_refusal_slips_through_when_the_reply_is_no_larger() {
        let mut rl = RateLimiter::new(1.0, 1.0);
        let t = Instant::now();
        assert_eq!(rl.decide(ip("192.0.2.1"), t, 38, 27), Decision::Answer);
        let slipped = (0..10)
            .filter(|_| rl.decide(ip("192.0.2.1"), t, 38, 27) == Decision::Slip)
            .count();
        assert_eq!(slipped, 5);
        // A reply larger than its request is never slipped: that would amplify.
        assert!((0..10).all(|_| rl.decide(ip("192.0.2.1"), t, 1, 26) == Decision::Refuse));
    }

    #[test]
    fn the_table_never_grows() {
        let mut rl = RateLimiter::new(1.0, 1.0);
        let t = Instant::now();
        for n in 0..200_000u32 {
            rl.allow(IpAddr::from((n << 8).to_be_bytes()), t);
        }
        assert_eq!(rl.buckets.len(), SLOTS);
    }
}
