//! `udpkit bench`: load and latency, as sockperf, iperf3 and wrk2 measure them. N flows,
//! each its own socket and source port; each keeps W requests in flight (closed loop), or
//! requests go out at a fixed rate across the flows (open loop), where latency counts from
//! the time a request was *meant* to go, so a stalled server cannot hide its stall
//! (coordinated omission).
//!
//! Promise: every request is accounted for (`sent = received + lost`); the run ends by
//! itself (duration, count, or a stop) after at most one timeout of draining; I/O is
//! batched (`sendmmsg`/`recvmmsg` on Linux) and nothing is allocated per request.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::io::datagram::{BATCH, RecvBatch, Sender, Transmit};
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::wait::Poller;
use crate::load::flow::{Flow, Matching, Tally};
use crate::load::latency::Latency;
use crate::{Error, Stop};

/// How to load the server.
#[derive(Clone, Debug)]
pub struct Config {
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
}

/// Figures so far, for a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    /// How long the run is meant to send, if known.
    pub planned: Option<Duration>,
    pub sent: u64,
    pub received: u64,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub config: Config,
    pub tally: Tally,
    pub matching: Matching,
    /// From the first request to the last reply (or the end of sending, if later).
    pub elapsed: Duration,
    pub latency: Latency,
}

impl Report {
    pub fn requests_per_second(&self) -> f64 {
        self.tally.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct FlowState {
    socket: UdpSocket,
    /// Receives what reaches this flow's port from anyone but the server.
    witness: Option<UdpSocket>,
    flow: Flow,
    latency: Latency,
    /// Round trips of answers matched by length alone, until the flow proves IDs.
    unverified: Latency,
}

/// Requests remembered across all flows, at most (32 bytes each: 32 MiB). More in flight
/// than this is refused up front (closed loop) or counted as unmatched (open loop).
pub const MAX_REMEMBERED: usize = 1 << 20;

/// How long a stopped run waits for replies still on their way.
const STOP_DRAIN: Duration = Duration::from_millis(500);

/// How often the progress callback hears, at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Runs the load until the duration or count is reached, or `stop` is set, then drains.
pub fn bench(
    config: &Config,
    stop: &Stop,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, Error> {
    let flows_n = config.flows.max(1);
    if config.rate.is_none() && flows_n * config.window * 4 > MAX_REMEMBERED {
        return Err(Error::Invalid(format!(
            "{flows_n} flows of {} requests in flight are too many: keep flows x window at most {}",
            config.window,
            MAX_REMEMBERED / 4
        )));
    }
    let capacity = match config.rate {
        Some(rate) => (((rate / flows_n as f64) * config.timeout.as_secs_f64() * 2.0) as usize)
            .saturating_add(64),
        // Four times the window: requests of two window's worth of lengths, and room to
        // tell an old request of the same length from a new one.
        None => config.window.max(1) * 4,
    };
    let mut flows = (0..flows_n)
        .map(|_| {
            let socket = net::connect(config.target)?;
            net::grow_receive_buffer(&socket, 4 << 20);
            Ok(FlowState {
                witness: net::foreign_witness(&socket),
                socket,
                flow: Flow::new(config.size, capacity.min(MAX_REMEMBERED / flows_n)),
                latency: Latency::new(),
                unverified: Latency::new(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let mut report = Report {
        config: config.clone(),
        tally: Tally::default(),
        matching: Matching::Unknown,
        elapsed: Duration::ZERO,
        latency: Latency::new(),
    };
    let mut out = Outbox::new();
    let mut sender = Sender::new();
    // Replies are under 100 bytes; anything longer is cut short here and then fails to
    // parse, as it should.
    let mut replies = RecvBatch::new(REPLY_ROOM);
    let mut foreign_buf = vec![0u8; 2048];
    let mut poller = Poller::new(stop).map_err(|e| Error::io("cannot wait for replies", e))?;
    for (i, f) in flows.iter().enumerate() {
        poller
            .add(&f.socket, i as u64)
            .map_err(|e| Error::io("cannot wait for replies", e))?;
    }
    let mut ready = Vec::with_capacity(flows_n);
    let started = Instant::now();
    let send_until = config.duration.map(|d| started + d);
    let interval = config.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut scheduled: u64 = 0; // open loop: requests whose intended time has been handed out
    let mut sending = true;
    let mut send_end = started;
    let mut last_reply = started;
    let mut drain_until = None;
    let mut next_progress = started + PROGRESS_EVERY;
    loop {
        let now = Instant::now();
        if sending {
            let total_sent: u64 = flows.iter().map(|f| f.flow.sent()).sum();
            let over = stop.is_stopped()
                || send_until.is_some_and(|t| now >= t)
                || config.count.is_some_and(|c| total_sent >= c);
            if over {
                sending = false;
                send_end = now;
                drain_until = Some(now + config.timeout);
            }
        }
        if !sending {
            // Told to stop: replies still on their way get half a second, not a timeout
            // that may be a day long.
            if stop.is_stopped() {
                drain_until = drain_until.map(|t| t.min(now + STOP_DRAIN));
            }
            let waiting: usize = flows.iter().map(|f| f.flow.waiting()).sum();
            if waiting == 0 || drain_until.is_some_and(|t| now >= t) {
                break;
            }
        }

        // Send what is due.
        if sending {
            let total_sent: u64 = flows.iter().map(|f| f.flow.sent()).sum();
            let mut budget = config.count.map_or(u64::MAX, |c| c - total_sent.min(c));
            match interval {
                None => {
                    for f in &mut flows {
                        let want = config.window.saturating_sub(f.flow.waiting()) as u64;
                        let n = want.min(budget);
                        budget -= n;
                        for _ in 0..n {
                            f.flow.next_request(out.next(), now);
                            if out.is_full() {
                                out.send(&mut sender, &f.socket, &mut report.tally);
                            }
                        }
                        if out.queued > 0 {
                            out.send(&mut sender, &f.socket, &mut report.tally);
                        }
                    }
                }
                Some(step) => {
                    // Every request whose intended time has come goes now, stamped with
                    // that intended time.
                    // At most a few batches at a time, so that replies are read and the
                    // end is noticed even when the rate is more than can be sent.
                    for _ in 0..BATCH * flows_n {
                        let intended = started + step.mul_f64(scheduled as f64);
                        if intended > now
                            || budget == 0
                            || send_until.is_some_and(|t| intended >= t)
                        {
                            break;
                        }
                        let f = &mut flows[(scheduled % flows_n as u64) as usize];
                        f.flow.next_request(out.next(), intended);
                        out.send(&mut sender, &f.socket, &mut report.tally);
                        scheduled += 1;
                        budget -= 1;
                    }
                }
            }
        }

        // Wait until a reply is there (at once if one is), then take all that are: waiting
        // first gathers bigger batches, and fewer system calls per reply, than grabbing
        // replies as they trickle in.
        // (One clock reading before sending and one after receiving: reading the clock is
        // a fair share of this loop's own work.)
        let mut until = now + Duration::from_millis(10);
        if let (true, Some(step)) = (sending, interval) {
            until = until.min(started + step.mul_f64(scheduled as f64));
        }
        poller
            .wait(Some(until.saturating_duration_since(now)), &mut ready)
            .map_err(|e| Error::io("cannot wait for replies", e))?;
        let mut at = now;
        // Only the flows whose sockets are ready are read.
        for &token in &ready {
            let f = &mut flows[token as usize];
            loop {
                match replies.recv(&f.socket) {
                    Ok(0) => break,
                    Ok(n) => {
                        at = Instant::now();
                        last_reply = at;
                        for i in 0..n {
                            let outcome = f.flow.on_reply(replies.get(i).1, at);
                            let revoked = f.flow.take_revoked();
                            if revoked.answers > 0 {
                                report.tally.revoke(revoked, &mut f.unverified);
                            }
                            report
                                .tally
                                .count(outcome, &mut f.latency, &mut f.unverified);
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if IcmpError::of(&e).is_some() => {
                        report.tally.note_icmp(IcmpError::of(&e).expect("checked"));
                    }
                    Err(e) => {
                        return Err(Error::io(
                            format!("cannot receive from {}", config.target),
                            e,
                        ));
                    }
                }
            }
        }
        for f in &mut flows {
            f.flow.expire(at, config.timeout);
        }
        if at >= next_progress {
            next_progress += PROGRESS_EVERY;
            // Off the hot path: foreign datagrams are counted ten times a second.
            for f in &flows {
                report.tally.foreign += net::drain_foreign(f.witness.as_ref(), &mut foreign_buf);
            }
            progress(&Progress {
                elapsed: started.elapsed(),
                planned: config.duration,
                sent: flows.iter().map(|f| f.flow.sent()).sum(),
                received: report.tally.received,
            });
        }
    }
    for f in &flows {
        report.tally.foreign += net::drain_foreign(f.witness.as_ref(), &mut foreign_buf);
    }
    report.tally.sent = flows.iter().map(|f| f.flow.sent()).sum();
    report.elapsed = last_reply.max(send_end).duration_since(started);
    report.matching = Matching::settled(
        flows.iter().map(|f| f.flow.matching()),
        report.tally.unverified,
    );
    for f in &flows {
        report.latency.merge(&f.latency);
        report.latency.merge(&f.unverified);
    }
    Ok(report)
}

/// The room for one reply.
const REPLY_ROOM: usize = 2048;

/// Requests waiting to go, in buffers reused from batch to batch (a buffer that held a
/// request of the same size keeps its padding, so only the ID is rewritten).
struct Outbox {
    bufs: Vec<Vec<u8>>,
    queued: usize,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            bufs: (0..BATCH).map(|_| Vec::new()).collect(),
            queued: 0,
        }
    }

    /// The buffer for the next request.
    fn next(&mut self) -> &mut Vec<u8> {
        self.queued += 1;
        &mut self.bufs[self.queued - 1]
    }

    fn is_full(&self) -> bool {
        self.queued == BATCH
    }

    /// Sends what is queued on a connected socket; a refused request is lost (and an ICMP
    /// error behind the refusal counted).
    fn send(&mut self, sender: &mut Sender, socket: &UdpSocket, tally: &mut Tally) {
        let mut transmits = [Transmit {
            destination: None,
            source: None,
            contents: &[],
        }; BATCH];
        for (t, buf) in transmits.iter_mut().zip(&self.bufs[..self.queued]) {
            t.contents = buf;
        }
        sender.send(socket, &transmits[..self.queued], |_, e| {
            note_send_error(e, tally)
        });
        self.queued = 0;
    }
}

fn note_send_error(e: &io::Error, tally: &mut Tally) {
    // A send that fails with an ICMP error is the kernel passing on an error for an earlier
    // request (or a forged one); the request itself did not go and will count as lost.
    // Other errors (buffers full) lose the request the same way.
    if let Some(kind) = IcmpError::of(e) {
        tally.note_icmp(kind);
    }
}
