//! `udpkit ping`: ping's habits over UDP: one request at a time (or one every interval),
//! each reply matched by its request ID, round-trip times, duplicates, late replies, loss.
//!
//! Promise: every request is accounted for (`sent = received + lost`), every reply is
//! classified by [`Flow`] and credited only to the request it answers, the loop ends by
//! itself (COUNT, or a stop), and an ICMP error of any kind (spoofed or not) is reported and
//! counted, never fatal.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::wait::Receiver;
use crate::load::flow::{Flow, Matching, Outcome, Tally};
use crate::load::latency::Latency;
use crate::wire::RECV_BUFFER;
use crate::{Error, Stop};

/// How to ping.
#[derive(Clone, Debug)]
pub struct Config {
    pub target: SocketAddr,
    /// Stop after this many requests (and their replies or timeouts); `None`: until stopped.
    pub count: Option<u64>,
    /// Between requests; zero sends the next as soon as the reply (or timeout) comes.
    pub interval: Duration,
    /// Bytes in each request.
    pub size: usize,
    /// How long to wait for each reply before counting it lost.
    pub timeout: Duration,
}

/// What happened, as it happens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    Reply {
        seq: u64,
        bytes: usize,
        rtt: Duration,
        late: bool,
        duplicate: bool,
        /// False for a reply matched by its length alone (no request ID).
        verified: bool,
    },
    /// An ICMP error came back (or was forged): port unreachable means nothing listens.
    Unreachable { seq: u64, kind: IcmpError },
    /// A reply ignored because it lacked the right request ID.
    Forged,
    /// A datagram that answers no request (or could answer more than one).
    Bad,
    /// The first reply without a request ID: it and those after it are matched by the
    /// length they name and cannot be authenticated.
    Unverified,
    /// The server proved it repeats request IDs: `count` replies taken on their length
    /// alone were forged and are no longer counted.
    Revoked { count: u64 },
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub target: SocketAddr,
    pub size: usize,
    pub tally: Tally,
    /// `Ids` when every reply counted carried its request's ID; `Length` when some were
    /// matched by length alone.
    pub matching: Matching,
    pub elapsed: Duration,
    pub latency: Latency,
}

/// The longest a single wait lasts when nothing else bounds it (a stop wakes it anyway).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Pings until `config.count` requests are settled or `stop` is set; `on_event` hears of
/// each reply and anomaly as it comes (its error ends the run as `Error::Callback`).
pub fn ping(
    config: &Config,
    stop: &Stop,
    mut on_event: impl FnMut(&Event) -> io::Result<()>,
) -> Result<Report, Error> {
    let socket = net::connect(config.target)?;
    let witness = net::foreign_witness(&socket);
    let in_flight = if config.interval.is_zero() {
        1
    } else {
        (config.timeout.as_secs_f64() / config.interval.as_secs_f64()).ceil() as usize + 2
    };
    // Twice what can be in flight, and at least 64 requests: a reply to a request
    // forgotten this long ago is unmatched rather than credited to a newer one.
    let mut flow = Flow::new(config.size, (in_flight * 2).clamp(64, 1 << 16));
    let mut report = Report {
        target: config.target,
        size: config.size,
        tally: Tally::default(),
        matching: flow.matching(),
        elapsed: Duration::ZERO,
        latency: Latency::new(),
    };
    let mut unverified = Latency::new();
    let mut emit = |event: Event| on_event(&event).map_err(|source| Error::Callback { source });
    let mut request = Vec::with_capacity(config.size);
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut wait =
        Receiver::new(&socket, stop).map_err(|e| Error::io("cannot wait for replies", e))?;
    let started = Instant::now();
    let mut next_send = started;
    let mut last_seq = 0;
    let mut said_unverified = false;
    loop {
        let now = Instant::now();
        flow.expire(now, config.timeout);
        let done_sending = config.count.is_some_and(|c| flow.sent() >= c);
        if stop.is_stopped() || (done_sending && flow.waiting() == 0) {
            break;
        }
        let ready = if config.interval.is_zero() {
            flow.waiting() == 0
        } else {
            now >= next_send
        };
        if !done_sending && ready {
            let sent_at = Instant::now();
            last_seq = flow.next_request(&mut request, sent_at);
            match send(&socket, &request) {
                Ok(None) => {}
                Ok(Some(kind)) => {
                    report.tally.note_icmp(kind);
                    emit(Event::Unreachable {
                        seq: last_seq,
                        kind,
                    })?;
                }
                Err(e) => return Err(Error::io(format!("cannot send to {}", config.target), e)),
            }
            // On schedule, but never in a burst to catch up after a stall.
            next_send += config.interval;
            if next_send < sent_at {
                next_send = sent_at + config.interval;
            }
            continue;
        }
        // Wait for a reply until the next request is due or the oldest one times out.
        let mut until = now + MAX_WAIT;
        if !done_sending && !config.interval.is_zero() {
            until = until.min(next_send);
        }
        if let Some(since) = flow.oldest_waiting_since() {
            until = until.min(since + config.timeout);
        }
        match wait.recv(&mut buf, until.saturating_duration_since(now)) {
            Ok(Some(len)) => {
                let at = Instant::now();
                let outcome = flow.on_reply(&buf[..len], at);
                let revoked = flow.take_revoked();
                if revoked.answers > 0 {
                    report.tally.revoke(revoked, &mut unverified);
                    emit(Event::Revoked {
                        count: revoked.answers,
                    })?;
                }
                report
                    .tally
                    .count(outcome, &mut report.latency, &mut unverified);
                let event = match outcome {
                    Outcome::Answer {
                        seq,
                        rtt,
                        late,
                        verified,
                    } => {
                        if !verified && !said_unverified {
                            said_unverified = true;
                            emit(Event::Unverified)?;
                        }
                        Event::Reply {
                            seq,
                            bytes: flow.request_len(seq).unwrap_or(config.size),
                            rtt,
                            late,
                            duplicate: false,
                            verified,
                        }
                    }
                    Outcome::Duplicate { seq, rtt } => Event::Reply {
                        seq,
                        bytes: flow.request_len(seq).unwrap_or(config.size),
                        rtt,
                        late: false,
                        duplicate: true,
                        verified: flow.matching() == Matching::Ids,
                    },
                    Outcome::Forged => Event::Forged,
                    Outcome::Bad | Outcome::Unmatched => Event::Bad,
                };
                emit(event)?;
            }
            Ok(None) => {}
            Err(e) => match IcmpError::of(&e) {
                Some(kind) => {
                    report.tally.note_icmp(kind);
                    emit(Event::Unreachable {
                        seq: last_seq,
                        kind,
                    })?;
                }
                None => {
                    return Err(Error::io(
                        format!("cannot receive from {}", config.target),
                        e,
                    ));
                }
            },
        }
        report.tally.foreign += net::drain_foreign(witness.as_ref(), &mut buf);
    }
    report.tally.foreign += net::drain_foreign(witness.as_ref(), &mut buf);
    report.tally.sent = flow.sent();
    report.matching = Matching::settled([flow.matching()], report.tally.unverified);
    report.latency.merge(&unverified);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Sends one datagram. A pending ICMP error from an earlier one is handed back by the
/// kernel instead of sending: it is returned (to be counted) and the send tried once more.
fn send(socket: &UdpSocket, data: &[u8]) -> io::Result<Option<IcmpError>> {
    match socket.send(data) {
        Ok(_) => Ok(None),
        // A full send buffer: this request does not go, and counts as lost.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => match IcmpError::of(&e) {
            Some(kind) => {
                let _ = socket.send(data);
                Ok(Some(kind))
            }
            None => Err(e),
        },
    }
}
