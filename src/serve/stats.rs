//! The server's counters: what it received, answered, dropped and failed, summed over its
//! threads, for the periodic `--stats` line and the summary on exit.
//!
//! Promise: workers publish once per batch, never per datagram; a snapshot may be read from
//! any thread at any time and every figure in it only grows.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// One worker's running totals. Only that worker writes them.
#[derive(Debug, Default)]
pub struct Counters {
    received: AtomicU64,
    replied: AtomicU64,
    dropped_simulated: AtomicU64,
    dropped_rate_limited: AtomicU64,
    slipped: AtomicU64,
    send_failed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    kernel_drops: AtomicU64,
    malformed: AtomicU64,
    sessions_refused: AtomicU64,
    /// Not counts but levels (set, not added): what the worker holds now.
    sessions_open: AtomicU64,
    streams_open: AtomicU64,
}

/// What a server holds now, summed over its threads: these go down as well as up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InUse {
    /// A stateful STAMP reflector's sessions kept.
    pub sessions: u64,
    /// `udpkit stream`'s streams kept (those being received and reverse ones).
    pub streams: u64,
}

/// A snapshot of the counters, or the increments of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Datagrams received.
    pub received: u64,
    /// Replies sent.
    pub replied: u64,
    /// Datagrams ignored on purpose by `--drop-rate`.
    pub dropped_simulated: u64,
    /// Replies withheld by the rate limiter.
    pub dropped_rate_limited: u64,
    /// Requests over the rate limit answered anyway (one in two whose reply is no longer).
    pub slipped: u64,
    /// Replies the kernel refused to send.
    pub send_failed: u64,
    /// Bytes received, UDP payload only.
    pub bytes_in: u64,
    /// Bytes sent, UDP payload only.
    pub bytes_out: u64,
    /// Datagrams the kernel dropped because a receive buffer was full (`SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Datagrams not answered because they were not requests of the server's protocol (a
    /// STAMP packet shorter than 44 bytes).
    pub malformed: u64,
    /// A stateful reflector's packets answered statelessly because its session table was
    /// full (their sequence numbers are the sender's own).
    pub sessions_refused: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // A single writer: a plain load and store, no locked read-modify-write.
    if by != 0 {
        counter.store(counter.load(Ordering::Relaxed) + by, Ordering::Relaxed);
    }
}

impl Counters {
    /// Adds one batch's increments; `kernel_drops` is the kernel's running total, if known.
    pub fn add(&self, batch: &Stats, kernel_drops: Option<u32>) {
        bump(&self.received, batch.received);
        bump(&self.replied, batch.replied);
        bump(&self.dropped_simulated, batch.dropped_simulated);
        bump(&self.dropped_rate_limited, batch.dropped_rate_limited);
        bump(&self.slipped, batch.slipped);
        bump(&self.send_failed, batch.send_failed);
        bump(&self.bytes_in, batch.bytes_in);
        bump(&self.bytes_out, batch.bytes_out);
        bump(&self.malformed, batch.malformed);
        bump(&self.sessions_refused, batch.sessions_refused);
        if let Some(total) = kernel_drops {
            self.kernel_drops
                .fetch_max(u64::from(total), Ordering::Relaxed);
        }
    }

    /// Sets what the worker holds now (after a batch).
    pub fn set_in_use(&self, sessions: usize, streams: usize) {
        self.sessions_open.store(sessions as u64, Ordering::Relaxed);
        self.streams_open.store(streams as u64, Ordering::Relaxed);
    }

    /// What the worker held after its last batch.
    pub fn in_use(&self) -> InUse {
        InUse {
            sessions: self.sessions_open.load(Ordering::Relaxed),
            streams: self.streams_open.load(Ordering::Relaxed),
        }
    }

    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            received: get(&self.received),
            replied: get(&self.replied),
            dropped_simulated: get(&self.dropped_simulated),
            dropped_rate_limited: get(&self.dropped_rate_limited),
            slipped: get(&self.slipped),
            send_failed: get(&self.send_failed),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            kernel_drops: get(&self.kernel_drops),
            malformed: get(&self.malformed),
            sessions_refused: get(&self.sessions_refused),
        }
    }
}

impl Stats {
    /// Datagrams dropped on purpose, by simulation or by the rate limiter.
    pub fn dropped(&self) -> u64 {
        self.dropped_simulated + self.dropped_rate_limited
    }

    /// The sum of several workers' snapshots.
    pub fn sum(all: impl IntoIterator<Item = Stats>) -> Stats {
        all.into_iter().fold(Stats::default(), |a, b| Stats {
            received: a.received + b.received,
            replied: a.replied + b.replied,
            dropped_simulated: a.dropped_simulated + b.dropped_simulated,
            dropped_rate_limited: a.dropped_rate_limited + b.dropped_rate_limited,
            slipped: a.slipped + b.slipped,
            send_failed: a.send_failed + b.send_failed,
            bytes_in: a.bytes_in + b.bytes_in,
            bytes_out: a.bytes_out + b.bytes_out,
            kernel_drops: a.kernel_drops + b.kernel_drops,
            malformed: a.malformed + b.malformed,
            sessions_refused: a.sessions_refused + b.sessions_refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_add_up_and_kernel_drops_keep_the_running_total() {
        let c = Counters::default();
        let batch = Stats {
            received: 3,
            replied: 2,
            dropped_rate_limited: 1,
            bytes_in: 30,
            bytes_out: 52,
            ..Stats::default()
        };
        c.add(&batch, Some(7));
        c.add(&batch, Some(5));
        c.add(&batch, None);
        let s = c.snapshot();
        assert_eq!(
            (s.received, s.replied, s.dropped(), s.bytes_in),
            (9, 6, 3, 90)
        );
        assert_eq!(s.kernel_drops, 7);
        assert_eq!(Stats::sum([s, s]).received, 18);
    }
}
