//! `udpkit ping`: ping's habits over UDP: one request at a time (or one every interval),
//! each reply matched by its request ID, round-trip times, duplicates, late replies, loss.
//!
//! It is the load engine with one flow, paced one request at a time (`-i 0`) or by the
//! interval.
//!
//! Promise: every request is accounted for (`sent = received + lost`), every reply is
//! credited only to the request it answers (see `load::flow`), the loop ends by itself
//! (COUNT, or a stop), and an ICMP error of any kind (spoofed or not) is reported and
//! counted, never fatal.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use crate::load::engine::{Engine, Offload, Pace, Phase, Requests};
use crate::load::flow::{Matching, Tally};
use crate::measure::latency::Latency;
use crate::measure::stamp::StampReport;
use crate::{Error, Stop};

pub use crate::load::engine::{Event, NotSent};

/// How to ping.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server to ping.
    pub target: SocketAddr,
    /// Stop after this many requests (and their replies or timeouts); `None`: until stopped.
    pub count: Option<u64>,
    /// Between requests; zero sends the next as soon as the reply (or timeout) comes.
    pub interval: Duration,
    /// Bytes in each request.
    pub size: usize,
    /// How long to wait for each reply before counting it lost.
    pub timeout: Duration,
    /// The protocol and the marking of every request.
    pub requests: Requests,
}

impl Config {
    /// The engine's pace for this interval.
    pub fn pace(&self) -> Pace {
        if self.interval.is_zero() {
            Pace::Window(1)
        } else {
            Pace::Interval(self.interval)
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The server pinged.
    pub target: SocketAddr,
    /// The requests' size in bytes (UDP payload).
    pub size: usize,
    /// Every request and reply accounted for.
    pub tally: Tally,
    /// `Ids` when every reply counted carried its request's ID; `Length` when some were
    /// matched by length alone.
    pub matching: Matching,
    /// From the first request to the end of the run.
    pub elapsed: Duration,
    /// Round-trip times of the verified replies.
    pub latency: Latency,
    /// STAMP: what the reflector's replies said beyond the round trip.
    pub stamp: Option<StampReport>,
}

/// Pings until `config.count` requests are settled or `stop` is set; `on_event` hears of
/// each reply and anomaly as it comes (its error ends the run as `Error::Callback`).
pub fn ping(
    config: &Config,
    stop: &Stop,
    mut on_event: impl FnMut(&Event) -> io::Result<()>,
) -> Result<Report, Error> {
    let pace = config.pace();
    // Single requests go as they are: no GSO, no GRO.
    let offload = Offload::default();
    let mut engine = Engine::new(
        config.target,
        1,
        config.size,
        pace,
        config.timeout,
        stop,
        offload,
    )?;
    engine.prepare(&config.requests)?;
    let phase = Phase {
        pace,
        count: config.count,
        duration: None,
        timeout: config.timeout,
    };
    engine.run(&phase, |event| {
        on_event(event)?;
        Ok(ControlFlow::Continue(()))
    })?;
    let run = engine.report();
    Ok(Report {
        target: config.target,
        size: config.size,
        tally: run.tally,
        matching: run.matching,
        elapsed: run.elapsed,
        latency: run.latency,
        stamp: run.stamp,
    })
}
