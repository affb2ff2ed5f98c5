//! A stateful STAMP reflector's sessions (RFC 8972 §4): each sender (its address, port and
//! Session-Sender Identifier) gets its own sequence numbers, counting the packets the
//! reflector received from it, so that the sender can tell losses on the way there from
//! losses on the way back.
//!
//! Promise: memory is fixed at creation (at most `capacity` sessions), and one source
//! prefix holds at most `per_prefix` of them, so one source never fills the table. A
//! session in use (heard from within `idle`) is never evicted: a flood of new senders,
//! spoofed or not, cannot reset a running session's count. When the table (or the
//! prefix's share) is full of live sessions, a new sender is answered statelessly (its own
//! sequence numbers back), which a sender reads as "direction of loss unknown", never as
//! a wrong split; [`Sessions::refused`] counts them. A session counts a packet only when
//! the reflector answers it ([`Sessions::next_seq`] is asked once the rate limit has said
//! yes), as RFC 8762 4.3.1 says: its count is of packets transmitted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::limits;
use crate::shape::ratelimit::Prefix;

/// Sessions one worker remembers, at most, by default.
pub const DEFAULT_CAPACITY: usize = limits::STAMP_SESSIONS_PER_THREAD;

/// How long a silent session is kept by default (stamp-suite keeps 300 s).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Session {
    next: u32,
    heard: Instant,
}

/// See the module's promise.
#[derive(Debug)]
pub struct Sessions {
    table: HashMap<(SocketAddr, u16), Session>,
    /// Sessions each prefix holds.
    held: HashMap<Prefix, usize>,
    capacity: usize,
    per_prefix: usize,
    idle: Duration,
    /// When a full table was last swept for idle sessions: at most once a second.
    swept: Option<Instant>,
    refused: u64,
}

impl Sessions {
    /// At most `capacity` sessions, [`limits::STAMP_SESSIONS_PER_PREFIX`] a prefix (and
    /// at least one), each kept `idle` after it was last heard.
    pub fn new(capacity: usize, idle: Duration) -> Sessions {
        Self::with_share(capacity, limits::STAMP_SESSIONS_PER_PREFIX, idle)
    }

    /// At most `capacity` sessions, `per_prefix` of them from one prefix.
    pub fn with_share(capacity: usize, per_prefix: usize, idle: Duration) -> Sessions {
        Sessions {
            table: HashMap::with_capacity(capacity.max(1)),
            held: HashMap::new(),
            capacity: capacity.max(1),
            per_prefix: per_prefix.clamp(1, capacity.max(1)),
            idle,
            swept: None,
            refused: 0,
        }
    }

    /// The reflector's sequence number for the next packet of session (`peer`, `ssid`),
    /// heard at `now`; `None` when the table is full of live sessions (answer statelessly).
    pub fn next_seq(&mut self, peer: SocketAddr, ssid: u16, now: Instant) -> Option<u32> {
        if let Some(s) = self.table.get_mut(&(peer, ssid)) {
            let seq = s.next;
            s.next = s.next.wrapping_add(1);
            s.heard = now;
            return Some(seq);
        }
        let prefix = Prefix::of(peer.ip());
        let full = |s: &Self| {
            s.table.len() >= s.capacity || s.held.get(&prefix).copied().unwrap_or(0) >= s.per_prefix
        };
        if full(self) {
            let due = self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                self.swept = Some(now);
                let idle = self.idle;
                let held = &mut self.held;
                self.table.retain(|(addr, _), s| {
                    let live = now.saturating_duration_since(s.heard) < idle;
                    if !live {
                        let p = Prefix::of(addr.ip());
                        if let Some(n) = held.get_mut(&p) {
                            *n -= 1;
                            if *n == 0 {
                                held.remove(&p);
                            }
                        }
                    }
                    live
                });
            }
            if full(self) {
                self.refused += 1;
                return None;
            }
        }
        *self.held.entry(prefix).or_insert(0) += 1;
        self.table.insert(
            (peer, ssid),
            Session {
                next: 1,
                heard: now,
            },
        );
        Some(0)
    }

    /// Packets answered statelessly because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sessions kept now.
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn each_session_counts_its_own_packets() {
        let mut s = Sessions::new(8, DEFAULT_IDLE);
        let t = Instant::now();
        assert_eq!(s.next_seq(peer(1), 7, t), Some(0));
        assert_eq!(s.next_seq(peer(1), 7, t), Some(1));
        assert_eq!(
            s.next_seq(peer(1), 8, t),
            Some(0),
            "another SSID, another session"
        );
        assert_eq!(
            s.next_seq(peer(2), 7, t),
            Some(0),
            "another port, another session"
        );
        assert_eq!(s.next_seq(peer(1), 7, t), Some(2));
    }

    #[test]
    fn a_flood_of_new_senders_cannot_evict_a_live_session() {
        let idle = Duration::from_secs(10);
        let mut s = Sessions::new(4, idle);
        let t = Instant::now();
        assert_eq!(s.next_seq(peer(1), 1, t), Some(0));
        // The attacker's best move: fill the table, then keep coming, faster than idle.
        for (i, port) in (1000..3000).enumerate() {
            let at = t + Duration::from_millis(i as u64);
            let _ = s.next_seq(peer(port), 1, at);
            if i % 100 == 0 {
                // The real sender keeps talking: it stays live.
                let _ = s.next_seq(peer(1), 1, at);
            }
        }
        assert_eq!(s.len(), 4);
        assert!(s.refused() > 1900);
        let later = t + Duration::from_secs(3);
        assert_eq!(s.next_seq(peer(1), 1, later), Some(21), "its count goes on");
    }

    #[test]
    fn one_prefix_holds_its_share_and_others_still_get_sessions() {
        let mut s = Sessions::with_share(64, 8, Duration::from_secs(10));
        let t = Instant::now();
        // The attacker's best: one /24, every port and SSID it likes, all kept live.
        for port in 0..1000u16 {
            let _ = s.next_seq(peer(port), port, t);
        }
        assert_eq!(s.len(), 8);
        // Every other prefix still gets a session of its own.
        for i in 1..=50u8 {
            let other = SocketAddr::from(([127, 0, i, 1], 9000));
            assert_eq!(s.next_seq(other, 1, t), Some(0), "prefix {i}");
        }
    }

    #[test]
    fn idle_sessions_make_room() {
        let idle = Duration::from_secs(10);
        let mut s = Sessions::new(2, idle);
        let t = Instant::now();
        let _ = s.next_seq(peer(1), 1, t);
        let _ = s.next_seq(peer(2), 1, t);
        assert_eq!(s.next_seq(peer(3), 1, t), None);
        let later = t + Duration::from_secs(11);
        assert_eq!(s.next_seq(peer(3), 1, later), Some(0));
        assert_eq!(
            s.next_seq(peer(1), 1, later + Duration::from_secs(2)),
            Some(0),
            "it started over"
        );
    }
}
