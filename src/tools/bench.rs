//! `udpkit bench`: load and latency, as sockperf, iperf3 and wrk2 measure them. N flows,
//! each its own socket and source port; each keeps W requests in flight (closed loop), or
//! requests go out at a fixed rate across the flows (open loop), where latency counts from
//! the time a request was *meant* to go, so a stalled server cannot hide its stall
//! (coordinated omission).
//!
//! It is the load engine with many flows, paced by a window or a rate.
//!
//! Promise: every request is accounted for (`sent = received + lost`); the run ends by
//! itself (duration, count, or a stop) after at most one timeout of draining; I/O is
//! batched (`sendmmsg`/`recvmmsg` on Linux) and nothing is allocated per request.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::load::engine::{Engine, Event, Offload, Pace, Phase, Requests};
use crate::load::flow::{Matching, Tally};
use crate::measure::hlog::{self, Recorder};
use crate::measure::latency::Latency;
use crate::measure::stamp::StampReport;
use crate::{Error, Stop, addr};

pub use crate::load::engine::{MAX_REMEMBERED, Progress};

/// How to load the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// The server to load.
    pub target: SocketAddr,
    /// Sockets, each with its own source port.
    pub flows: usize,
    /// Requests in flight per flow (closed loop).
    pub window: usize,
    /// Send for this long...
    pub duration: Option<Duration>,
    /// ...or this many requests in all.
    pub count: Option<u64>,
    /// Requests a second in all, paced across the flows (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Bytes in each request.
    pub size: usize,
    /// How long to wait for a reply before counting the request lost.
    pub timeout: Duration,
    /// The kernel's batching (GSO, GRO), where it has it.
    pub offload: Offload,
    /// Threads to spread the flows over (each thread at least one flow; more flows than
    /// asked if need be), each with its own engine; their figures are merged.
    pub threads: usize,
    /// The protocol and the marking of every request.
    pub requests: Requests,
    /// This agent's share of a run split over several (`(index, count)`, index from 1):
    /// `1/count` of the rate and of the count.
    pub segment: Option<(usize, usize)>,
    /// Start then (every agent given the same time starts together); a late start runs
    /// anyway and says by how much.
    pub start_at: Option<SystemTime>,
    /// Keep the latencies second by second, for an interval log (`Report::seconds`).
    pub intervals: bool,
}

impl Config {
    /// The settings of one agent's share, given its segment.
    fn share(&self) -> Config {
        let Some((index, count)) = self.segment else {
            return self.clone();
        };
        // In u128: a count of u64::MAX times any index never overflows.
        let (i, n) = (index as u128 - 1, count as u128);
        let part = |c: u64| (u128::from(c) * (i + 1) / n - u128::from(c) * i / n) as u64;
        Config {
            rate: self.rate.map(|r| r / count as f64),
            count: self.count.map(part),
            ..self.clone()
        }
    }

    /// The engine's pace: a rate if one is set, otherwise the window.
    pub fn pace(&self) -> Pace {
        match self.rate {
            Some(rate) => Pace::Rate(rate),
            None => Pace::Window(self.window),
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The configuration the run had.
    pub config: Config,
    /// Every request and reply accounted for, all threads together.
    pub tally: Tally,
    /// How replies were matched to requests (by ID once the server proved it repeats them).
    pub matching: Matching,
    /// From the first request to the last reply (or the end of sending, if later).
    pub elapsed: Duration,
    /// Round-trip times of the verified replies.
    pub latency: Latency,
    /// The kernel's batching that was in effect at the end (asked for, and granted).
    pub offload: Offload,
    /// Open loop: how late requests left against their intended times.
    pub send_lag: Option<Latency>,
    /// Open loop: requests a second the generator actually sent, over the time it sent.
    pub sent_per_second: Option<f64>,
    /// STAMP: what the reflector's replies said beyond the round trip.
    pub stamp: Option<StampReport>,
    /// When the run started (after `start_at`, if given).
    pub started: SystemTime,
    /// How late it started against `start_at`.
    pub late_start: Option<Duration>,
    /// With `Config::intervals`: the latencies of each second since the start, every
    /// thread's, compressed (merged second by second as they are written).
    pub seconds: Option<hlog::Recorded>,
}

impl Report {
    /// Requests sent a second over the run.
    pub fn requests_per_second(&self) -> f64 {
        self.tally.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Open loop: whether the generator, not the server, set the pace: it sent under 99%
    /// of the rate asked, or its requests left more than 100 µs late (p99 of the send
    /// lag) and later than a median round trip, so that the latencies measure its own
    /// delay as much as the server's.
    pub fn generator_fell_behind(&self) -> bool {
        let (Some(rate), Some(sent), Some(lag)) =
            (self.config.rate, self.sent_per_second, &self.send_lag)
        else {
            return false;
        };
        let lag_p99 = lag.summary(1.0).p99;
        let rtt_p50 = self.latency.summary(1.0).p50;
        let late = lag.count() > 0 && lag_p99 > 100e3 && lag_p99 > rtt_p50;
        sent < 0.99 * rate || late || self.tally.skipped > 0
    }

    /// Writes the run as an HdrHistogram interval log, the file of `udpkit bench --hlog`
    /// that [`crate::merge::merge_files`] reads: its settings, the latencies of each second
    /// (with [`Config::intervals`]; none without) and its counters. `run` names the run
    /// every agent's file shares (`--start-at`'s time; empty for a run of one agent).
    pub fn write_interval_log(&self, out: &mut impl Write, run: &str) -> io::Result<()> {
        let c = &self.config;
        let secs = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let header = hlog::Header {
            version: 1,
            run: run.to_string(),
            segment: c.segment.unwrap_or((1, 1)),
            target: addr::shown(c.target).to_string(),
            flows: c.flows,
            window: c.window,
            rate: c.rate,
            size: c.size,
            started: secs(self.started),
            late: self.late_start.map_or(0.0, |d| d.as_secs_f64()),
        };
        let t = &self.tally;
        let totals = hlog::Totals {
            sent: t.sent,
            received: t.received,
            lost: t.lost(),
            duplicates: t.duplicates,
            late: t.late,
            forged: t.forged,
            bad: t.bad,
            unverified: t.unverified,
            seconds: self.elapsed.as_secs_f64(),
        };
        let empty = hlog::Recorded::default();
        let seconds = self.seconds.as_ref().unwrap_or(&empty).seconds();
        hlog::write(out, &header, seconds, &totals)?;
        out.flush()
    }
}

/// Runs the load until the duration or count is reached, or `stop` is set, then drains;
/// `progress` hears ten times a second. With `config.threads` above 1, the flows, the rate
/// and the count are shared out over that many threads (this one among them), each with
/// its own engine and histograms, merged at the end.
pub fn bench(
    config: &Config,
    stop: &Stop,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, Error> {
    let config = &config.share();
    // Everyone starts together: wait for the time given (a stop ends the wait).
    let mut late_start = None;
    if let Some(at) = config.start_at {
        match at.duration_since(SystemTime::now()) {
            Ok(wait) => {
                let until = Instant::now() + wait;
                while let Some(left) = until.checked_duration_since(Instant::now()) {
                    if stop.wait(left) {
                        break;
                    }
                }
            }
            Err(late) => late_start = Some(late.duration()),
        }
    }
    let started = SystemTime::now();
    let start = Instant::now();
    let threads = config.threads.max(1);
    let flows = config.flows.max(threads);
    // Thread t's share of the flows, and of the rate and count in proportion.
    let share = |t: usize| flows / threads + usize::from(t < flows % threads);
    let part = |t: usize| -> Config {
        let f = share(t);
        let of = |total: f64| total * f as f64 / flows as f64;
        let count = config.count.map(|c| {
            let before: usize = (0..t).map(share).sum();
            let upto = |n: usize| u128::from(c) * n as u128 / flows as u128;
            (upto(before + f) - upto(before)) as u64
        });
        Config {
            flows: f,
            rate: config.rate.map(of),
            count,
            threads: 1,
            ..config.clone()
        }
    };
    // Every thread's figures so far, for the progress display.
    let sent: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let received: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let note = |t: usize, p: &Progress| {
        sent[t].store(p.sent, Ordering::Relaxed);
        received[t].store(p.received, Ordering::Relaxed);
    };
    let runs = std::thread::scope(|scope| {
        let others: Vec<_> = (1..threads)
            .map(|t| {
                let config = part(t);
                let note = &note;
                scope.spawn(move || run_one(&config, stop, start, threads, |p| note(t, p)))
            })
            .collect();
        let first = run_one(&part(0), stop, start, threads, |p| {
            note(0, p);
            let sum = |v: &[AtomicU64]| v.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            progress(&Progress {
                sent: sum(&sent),
                received: sum(&received),
                ..*p
            });
        });
        if first.is_err() {
            stop.stop(); // the others end too
        }
        let mut runs = vec![first];
        runs.extend(others.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::Invalid("a load thread panicked".into())))
        }));
        runs
    });
    let runs = runs.into_iter().collect::<Result<Vec<_>, Error>>()?;
    let (runs, recorded): (Vec<Report>, Vec<_>) = runs.into_iter().unzip();
    let mut report = Report {
        config: Config {
            flows,
            threads,
            ..config.clone()
        },
        tally: Tally::default(),
        matching: Matching::settled(
            runs.iter().map(|r| r.matching),
            runs.iter().map(|r| r.tally.unverified).sum(),
        ),
        elapsed: runs.iter().map(|r| r.elapsed).max().unwrap_or_default(),
        latency: Latency::new(),
        offload: Offload {
            gso: runs.iter().all(|r| r.offload.gso),
            gro: runs.iter().all(|r| r.offload.gro),
        },
        send_lag: config.rate.map(|_| Latency::new()),
        sent_per_second: config.rate.map(|_| 0.0),
        stamp: None,
        started,
        late_start,
        seconds: config
            .intervals
            .then(|| hlog::Recorded::new(recorded.into_iter().flatten().collect())),
    };
    for r in &runs {
        report.tally.merge(&r.tally);
        report.latency.merge(&r.latency);
        if let (Some(all), Some(lag)) = (report.send_lag.as_mut(), r.send_lag.as_ref()) {
            all.merge(lag);
        }
        if let (Some(all), Some(rate)) = (report.sent_per_second.as_mut(), r.sent_per_second) {
            *all += rate;
        }
        match (report.stamp.as_mut(), r.stamp.as_ref()) {
            (Some(all), Some(s)) => all.merge(s),
            (None, Some(s)) => report.stamp = Some(s.clone()),
            _ => {}
        }
    }
    Ok(report)
}

/// A thread's seconds of latencies, compressed (`Config::intervals`).
type Recorded = Option<Vec<(u64, Vec<u8>)>>;

/// One thread's engine and run; `start` is the run's (the seconds of its intervals count
/// from it).
fn run_one(
    config: &Config,
    stop: &Stop,
    start: Instant,
    engines: usize,
    mut progress: impl FnMut(&Progress),
) -> Result<(Report, Recorded), Error> {
    let mut recorder = config.intervals.then(|| Recorder::new(start));
    let pace = config.pace();
    let mut engine = Engine::sharing(
        config.target,
        config.flows,
        config.size,
        pace,
        config.timeout,
        stop,
        config.offload,
        engines,
    )?;
    engine.prepare(&config.requests)?;
    let phase = Phase {
        pace,
        count: config.count,
        duration: config.duration,
        timeout: config.timeout,
    };
    engine.run(&phase, |event| {
        match event {
            Event::Progress(p) => progress(p),
            Event::Reply {
                rtt,
                duplicate: false,
                ..
            } => {
                if let Some(r) = &mut recorder {
                    r.record(Instant::now(), *rtt);
                }
            }
            _ => {}
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let run = engine.report();
    let sent_per_second = config
        .rate
        .map(|_| run.tally.sent as f64 / run.sending.as_secs_f64().max(1e-9));
    let report = Report {
        send_lag: config.rate.map(|_| run.send_lag.clone()),
        sent_per_second,
        offload: engine.offload(),
        config: config.clone(),
        tally: run.tally,
        matching: run.matching,
        elapsed: run.elapsed,
        latency: run.latency,
        stamp: run.stamp,
        started: SystemTime::now(),
        late_start: None,
        seconds: None,
    };
    Ok((report, recorder.map(Recorder::finish)))
}
