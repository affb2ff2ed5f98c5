//! Response rate limiting, as DNS servers do it (BIND, Knot, NSD): a token bucket of replies
//! per source prefix (IPv4 /24, IPv6 /56), so that forged sources cannot turn the server
//! into an amplifier aimed at a victim.
//!
//! Promise: memory is fixed at creation ([`SLOTS`] buckets, whatever the number of sources);
//! each decision is O(1) and allocates nothing. Prefixes share a bucket slot by a keyed hash
//! that an attacker cannot predict; a newcomer in a slot takes it over with a full bucket.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

/// Buckets in the table: 16384 slots of 40 bytes, 640 KiB.
pub const SLOTS: usize = 16_384;

/// The default rate when the server listens beyond loopback: 100 replies a second per
/// prefix, with a burst of 100 (one second's worth).
pub const DEFAULT_PER_SECOND: f64 = 100.0;

/// The source network a reply counts against: the /24 of an IPv4 address, the /56 of an
/// IPv6 one (an IPv4-mapped IPv6 address counts as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prefix {
    V4([u8; 3]),
    V6([u8; 7]),
}

impl Prefix {
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

#[derive(Clone, Copy, Debug)]
struct Slot {
    prefix: Option<Prefix>,
    tokens: f64,
    last: Option<Instant>,
}

/// Token buckets of replies, one per source prefix (bounded; see the module's promise).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    slots: Box<[Slot]>,
    hasher: RandomState,
}

impl RateLimiter {
    /// `per_second` replies a second per prefix, after a first burst of `burst`.
    pub fn new(per_second: f64, burst: f64) -> Self {
        let empty = Slot {
            prefix: None,
            tokens: 0.0,
            last: None,
        };
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            slots: vec![empty; SLOTS].into_boxed_slice(),
            hasher: RandomState::new(),
        }
    }

    /// True if a reply to `ip` fits its prefix's budget at `now` (and spends a token).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let prefix = Prefix::of(ip);
        let index = (self.hasher.hash_one(prefix) as usize) % SLOTS;
        let slot = &mut self.slots[index];
        if slot.prefix != Some(prefix) {
            *slot = Slot {
                prefix: Some(prefix),
                tokens: self.burst,
                last: Some(now),
            };
        } else if let Some(last) = slot.last {
            let earned = now.saturating_duration_since(last).as_secs_f64() * self.per_second;
            slot.tokens = (slot.tokens + earned).min(self.burst);
            slot.last = Some(now);
        }
        if slot.tokens >= 1.0 {
            slot.tokens -= 1.0;
            true
        } else {
            false
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
        // One second later, ten more.
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
    fn a_prefix_shares_one_bucket_and_others_have_their_own() {
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
    }

    #[test]
    fn the_table_never_grows() {
        let mut rl = RateLimiter::new(1.0, 1.0);
        let t = Instant::now();
        for n in 0..200_000u32 {
            rl.allow(IpAddr::from((n << 8).to_be_bytes()), t);
        }
        assert_eq!(rl.slots.len(), SLOTS);
    }
}
