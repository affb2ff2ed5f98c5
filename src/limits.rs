//! Every limit on a quantity that comes from outside the process, in one place: from a
//! datagram (a stream's plan, a STAMP session, a relay's new source), from a file (an
//! interval log for `merge`), from the environment (an orchestrator's index) or from a flag.
//! SECURITY.md lists them with the figures measured against them.
//!
//! Promise: nothing a peer, a file, a variable or a flag says sizes an allocation, a loop,
//! a wait or a rate before it has been checked against one of these; a value outside is
//! refused with a line naming it, never clamped in silence, never a panic. Every table a
//! stranger can fill gives one source prefix (an IPv4 /24, an IPv6 /56, as the rate limit
//! counts them) at most a share of it, so that one source never locks out another.

use std::time::Duration;

// ---- Datagrams ------------------------------------------------------------------------

/// The largest UDP payload udpkit sends or asks for: IPv4's (65,535 less the IP and UDP
/// headers), on IPv6 too.
pub const DATAGRAM_MAX: usize = 65_507;

// ---- Streams (`udpkit stream`, the server's side) --------------------------------------

/// Streams one server thread keeps at once.
pub const STREAMS_PER_THREAD: usize = 64;

/// Streams one source prefix may hold on a server thread: one prefix never fills the
/// table.
pub const STREAMS_PER_PREFIX: usize = 8;

/// Reverse streams (the server sending) one server thread runs at once.
pub const REVERSE_PER_THREAD: usize = 4;

/// Reverse streams one source prefix may run on a server thread.
pub const REVERSE_PER_PREFIX: usize = 1;

/// The fastest a stream is asked to go, in datagrams a second (a client sending to a server
/// may go as fast as its host can: 100 million is 51 Gbit/s of 64-byte datagrams).
pub const STREAM_PPS_MAX: f64 = 100_000_000.0;

/// The fastest a server sends a reverse stream, in datagrams a second (about 11 Gbit/s of
/// 1,400-byte datagrams): a plan asking for more is refused.
pub const REVERSE_PPS_MAX: f64 = 1_000_000.0;

/// The slowest: one datagram in a thousand seconds.
pub const STREAM_PPS_MIN: f64 = 0.001;

/// The longest a stream runs, either way, whether asked by a duration or by a count at
/// a rate; a server forgets a stream at the latest this long (plus [`STREAM_IDLE`]) after
/// it started.
pub const STREAM_DURATION_MAX: Duration = Duration::from_secs(3600);

/// A stream not heard from this long is forgotten by the server.
pub const STREAM_IDLE: Duration = Duration::from_secs(10);

/// A reverse stream whose client has not queried this long stops sending.
pub const STREAM_KEEPALIVE: Duration = Duration::from_secs(3);

/// The most bytes a stream's sender holds to send at once (its datagrams back to back): a
/// batch of 64 datagrams up to 4 KiB each, fewer of larger ones.
pub const STREAM_SEND_BYTES: usize = 256 << 10;

/// How long a stream client goes on past the end of its sending (both ways) for the last
/// datagrams and the final report, before it ends with what it knows.
pub const STREAM_GRACE: Duration = Duration::from_secs(5);

// ---- Pacing ----------------------------------------------------------------------------

/// After a stall, a pacer sends at once at most this many of the datagrams it fell behind
/// on (or [`PACER_BURST_TIME`]'s worth at its rate, if more); the slots of the rest are
/// skipped and counted, never sent in a rush (a run by duration sends fewer, a run by count
/// takes longer).
pub const PACER_BURST: u64 = 64;

/// See [`PACER_BURST`].
pub const PACER_BURST_TIME: Duration = Duration::from_millis(2);

/// A burst is also at most this many bytes of datagrams (but never under [`PACER_BURST`]
/// datagrams).
pub const PACER_BURST_BYTES: usize = 4 << 20;

/// The shortest interval between a stream's reports (iperf3's too): a run keeps one
/// interval's figures per report, at most an hour's worth.
pub const STREAM_INTERVAL_MIN: Duration = Duration::from_millis(100);

// ---- Load generation --------------------------------------------------------------------

/// Requests a load remembers across all its flows, at most (32 bytes each: 32 MiB).
pub const REQUESTS_REMEMBERED: usize = 1 << 20;

/// Batches of replies a flow's socket is read in one turn of a loop: a flood of datagrams
/// to a client's port cannot keep it from its clock, its schedule and its end.
pub const RECEIVE_BATCHES_PER_TURN: usize = 16;

/// Requests a closed loop sends in one turn of its loop, across all its flows: a window of
/// any size fills over turns that each look at the clock, the replies and the stop.
pub const SENDS_PER_TURN: usize = 1024;

// ---- STAMP sessions (a stateful reflector) ----------------------------------------------

/// Sessions one server thread remembers.
pub const STAMP_SESSIONS_PER_THREAD: usize = 4096;

/// Sessions one source prefix may hold on a server thread.
pub const STAMP_SESSIONS_PER_PREFIX: usize = 512;

// ---- Relay ------------------------------------------------------------------------------

/// Sessions a relay keeps at once (fewer where its open files are fewer).
pub const RELAY_SESSIONS: usize = 4096;

/// The share of a relay's sessions one source prefix may hold: one in this many.
pub const RELAY_SESSIONS_PREFIX_SHARE: usize = 8;

// ---- The server's console ---------------------------------------------------------------

/// Bytes of lines waiting for the terminal or pipe; past this, lines are dropped (and
/// counted) rather than make the server wait.
pub const CONSOLE_QUEUE_BYTES: usize = 1 << 20;

// ---- Files (`merge`, interval logs) ------------------------------------------------------

/// The largest interval log `merge` reads (a day of one agent is about 9 MB).
pub const HLOG_FILE_BYTES: u64 = 256 << 20;

/// The longest line of an interval log.
pub const HLOG_LINE_BYTES: usize = 1 << 20;

/// The most bytes one histogram of an interval log may take once decompressed (udpkit's
/// histograms hold at most 32,768 counts of up to 9 bytes each).
pub const HISTOGRAM_BYTES: usize = 512 << 10;

/// The most files one `merge` reads.
pub const MERGE_FILES: usize = 1000;

/// The most agents a run is split over (`--segment I/N`, `--segments N`, and a file's
/// header).
pub const SEGMENTS: usize = 100_000;

/// The largest count a file may state (2^53, which JSON and floating point carry exactly);
/// sums past it are refused, never wrapped.
pub const COUNT_MAX: u64 = 1 << 53;

/// The latest second of a run an interval log may hold (two days: a day's run and a day's
/// wait for its last replies).
pub const RUN_SECONDS_MAX: u64 = 2 * 86_400;

// ---- Flags and the environment ------------------------------------------------------------

/// The longest duration, wait, interval or timeout a flag may give: a day.
pub const SECONDS_MAX: f64 = 86_400.0;

/// The shortest, where zero means nothing: a millisecond.
pub const SECONDS_MIN: f64 = 0.001;

/// The fastest request rate `bench --rate` (and the relay's `--pps`) may ask for, and the
/// slowest.
pub const RATE_MAX: f64 = 1e9;
/// The slowest request rate `bench --rate` and the relay's `--pps` may ask for: one every
/// 1000 s.
pub const RATE_MIN: f64 = 0.001;

/// The fastest stream in bits a second (`stream -b`): a terabit.
pub const BITS_MAX: f64 = 1e12;

/// How far ahead `--start-at` may be: a day.
pub const START_AHEAD_MAX: Duration = Duration::from_secs(86_400);

/// The longest delay or jitter the relay adds, in milliseconds: an hour.
pub const DELAY_MS_MAX: f64 = 3_600_000.0;

/// Threads a server or a bench may run.
pub const THREADS_MAX: u16 = 256;

/// Flows (sockets) one bench opens.
pub const FLOWS_MAX: u16 = 1024;

/// Requests in flight per flow.
pub const WINDOW_MAX: u32 = 65_536;

/// Tries of the seed's client, at most, and its least wait.
pub const CLIENT_TRIES: usize = 16;
/// The least wait of the seed's client before it sends again: a millisecond.
pub const CLIENT_WAIT_MIN: Duration = Duration::from_millis(1);

// ---- The monitor and the metrics endpoints ----------------------------------------------

/// Targets one monitor watches (each a connected socket: an open file each).
pub const MONITOR_TARGETS_MAX: usize = 10_000;
/// The shortest interval between one target's probes.
pub const MONITOR_INTERVAL_MIN: Duration = Duration::from_millis(10);
/// The longest interval between one target's probes (and its longest timeout).
pub const MONITOR_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// A target's requests in flight at once, at most (its timeout over its interval, plus
/// two): its memory of requests is four times that.
pub const MONITOR_IN_FLIGHT_MAX: usize = 64;
/// Bytes of a target's name (a metric label).
pub const MONITOR_NAME_BYTES: usize = 128;
/// Bytes of a monitor's configuration file.
pub const MONITOR_CONFIG_BYTES: u64 = 4 << 20;
/// Connections a metrics endpoint waits on for their request heads; one more closes the
/// oldest.
pub const METRICS_CONNECTIONS: usize = 64;
/// Bytes a second a metrics endpoint's reader must take its answer at, at least, once the
/// first [`METRICS_IO_TIMEOUT`] has passed (a page of 10,000 targets is 46 MB).
pub const METRICS_MIN_RATE: u64 = 1 << 20;
/// Metrics pages (a monitor's) written at once; more are answered 503.
pub const METRICS_PAGES_AT_ONCE: usize = 2;
/// Bytes of an HTTP request's head a metrics endpoint reads, at most.
pub const METRICS_REQUEST_BYTES: usize = 8 << 10;
/// How long a metrics endpoint waits for a request's head (from the connection), or for
/// each write of its answer to be taken.
pub const METRICS_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes `/probe` runs at once; more are answered 503.
pub const PROBES_AT_ONCE: usize = 4;
/// Requests in one `/probe`, at most.
pub const PROBE_COUNT_MAX: u64 = 100;
/// How long one `/probe` may take, at most (its requests and their timeout).
pub const PROBE_TIME_MAX: Duration = Duration::from_secs(30);

/// A value given as seconds (a flag or a file), checked: `None` unless finite and within
/// [`SECONDS_MIN`]..=[`SECONDS_MAX`].
pub fn seconds(value: f64) -> Option<Duration> {
    (value.is_finite() && (SECONDS_MIN..=SECONDS_MAX).contains(&value))
        .then(|| Duration::from_secs_f64(value))
}

/// How many datagrams a pacer at `per_second` may send at once after a stall.
pub fn pacer_burst(per_second: f64) -> u64 {
    let timed = per_second * PACER_BURST_TIME.as_secs_f64();
    PACER_BURST.max(timed as u64)
}

/// The same for datagrams of `size` bytes: also at most [`PACER_BURST_BYTES`] of them.
pub fn pacer_burst_of(per_second: f64, size: usize) -> u64 {
    let by_bytes = (PACER_BURST_BYTES / size.max(1)) as u64;
    pacer_burst(per_second).min(by_bytes).max(PACER_BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_refuses_what_a_duration_cannot_hold() {
        for bad in [0.0, -1.0, 1e-300, 1e300, f64::NAN, f64::INFINITY, 86_400.5] {
            assert_eq!(seconds(bad), None, "{bad}");
        }
        assert_eq!(seconds(0.5), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_pacer_burst_is_small_and_grows_with_the_rate() {
        assert_eq!(pacer_burst(5000.0), 64);
        assert_eq!(pacer_burst(1e6), 2000);
        assert_eq!(pacer_burst(0.001), 64);
        assert_eq!(pacer_burst_of(1e8, 65_507), 64);
        assert_eq!(pacer_burst_of(1e6, 1400), 2000);
    }
}
