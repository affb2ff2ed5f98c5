//! `udpkit stream`: how much of a one-way UDP stream gets through at a rate, and how badly
//! (loss, duplicates, reordering, jitter, delay variation), as iperf3 `-u` measures it,
//! over UDP alone: the start, the queries and the reports travel on the stream's own port,
//! with retransmission; `reverse` has the server send to the client's own address and
//! port, so it works from behind NAT.
//!
//! Promise: the run ends by itself whatever the server does or sends (a restart, a lost
//! report, silence, a flood, reports that never say it is done): at the latest
//! [`limits::STREAM_GRACE`] and the final query's tries (under 2 s) after its planned
//! length (the duration, or the count at the rate), with its figures if the last report
//! came, or with what it knows and why it is incomplete. The sender keeps its rate through
//! the one pacer: after a stall it never rushes, and what it could not send on time
//! is counted (`skipped`), never sent late nor counted lost. Counters are 64-bit;
//! `sent = received + lost` for the whole run (datagrams too late to tell counted apart,
//! `too_late`); nothing is allocated per datagram. Only datagrams naming this stream's
//! random ID can move its counts: anything else that reaches the port is `foreign`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::io::clock::wall_ns;
use crate::io::datagram::{BATCH, RecvBatch};
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::state::{ArrivalInfo, Options, Refusal, SocketState};
use crate::io::wait::{Poller, Receiver};
use crate::limits;
use crate::load::pace::Schedule;
use crate::load::send::DataSender;
use crate::measure::arrivals::Arrivals;
use crate::wire::stream::{self, Counters, Message, Plan};
use crate::{Error, Stop};

/// How to stream.
#[derive(Clone, Debug)]
pub struct Config {
    /// The `udpkit server` to stream to or from.
    pub target: SocketAddr,
    /// Datagrams a second.
    pub pps: f64,
    /// Bytes in each datagram (UDP payload), at least `wire::stream::DATA_MIN`.
    pub size: usize,
    /// Send for this long...
    pub duration: Option<Duration>,
    /// ...or this many datagrams.
    pub count: Option<u64>,
    /// The server sends, this client receives.
    pub reverse: bool,
    /// A report every this long.
    pub interval: Duration,
    /// The TOS byte of every datagram this client sends.
    pub tos: Option<u8>,
    /// Segmented sends and coalesced receives where the kernel has them.
    pub offload: bool,
}

/// The figures of one interval (or, in [`Report::total`], of the whole run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Seconds since the stream started.
    pub start: f64,
    /// Seconds since the stream started, at the interval's end.
    pub end: f64,
    /// Datagrams sent in the interval (as the sender counts them).
    pub sent: u64,
    /// Datagrams received in the interval, duplicates left out.
    pub received: u64,
    /// Sequence numbers the receiver has not seen, of those up to the newest it saw (for the
    /// whole run: sent but never received).
    pub lost: u64,
    /// `lost` as a share of those expected, in percent.
    pub lost_percent: f64,
    /// Datagrams received more than once.
    pub duplicates: u64,
    /// Datagrams that came after a later one.
    pub reordered: u64,
    /// UDP payload received, in bytes.
    pub bytes: u64,
    /// `bytes` over the interval, in bits a second.
    pub bits_per_second: f64,
    /// RFC 3550 jitter at the end of the interval, milliseconds.
    pub jitter_ms: f64,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The configuration the run had.
    pub config: Config,
    /// Each interval's figures, in order.
    pub intervals: Vec<Figures>,
    /// The whole run's figures.
    pub total: Figures,
    /// The receiver's final counters (PDV percentiles, reordering distance, ...).
    pub receiver: Counters,
    /// The receiver's last report came after the sending ended: the figures are final.
    pub complete: bool,
    /// Why they are not, when they are not.
    pub incomplete: Option<String>,
    /// Datagrams this host refused to send (a local firewall, too big for the route):
    /// counted as sent, and so as lost.
    pub refused_here: u64,
    /// Why, when some were: the first refusal, in a sentence (naming the path's MTU when
    /// the datagrams were too big for it).
    pub refused_why: Option<String>,
    /// Datagrams to this client's port that were not its stream's.
    pub foreign: u64,
    /// Datagrams the sender's pacer skipped after stalls (this host's, or the server's in
    /// reverse): it could not keep the rate, so they were never sent (nor counted lost).
    pub skipped: u64,
    /// Of `total.sent`: datagrams sent after the receiver's last report of an incomplete
    /// run, whose fate is unknown (counted neither received nor lost).
    pub unknown: u64,
    /// The run was stopped (a signal, the caller's stop) before its planned end; its
    /// figures are those of what was sent until then.
    pub stopped: bool,
}

/// Tries of the start and of the final query, and the first wait (doubling).
const TRIES: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The final query waits at most this long a try (all six: under two seconds).
const LAST_WAIT: Duration = Duration::from_millis(400);

/// A reverse stream with nothing from the server this long has ended.
const SILENCE: Duration = Duration::from_secs(3);

/// After the last datagram is sent (or the server says it has sent its last), this long
/// for those still on their way before the final figures.
const SETTLE: Duration = Duration::from_millis(200);

/// Streams to `config.target` until the count or duration, or `stop`; `on_interval`
/// hears each interval's figures as they come.
pub fn stream(
    config: &Config,
    stop: &Stop,
    mut on_interval: impl FnMut(&Figures),
) -> Result<Report, Error> {
    let length = planned_length(config)?;
    let socket = net::connect(config.target)?;
    SocketState::mark(&socket, config.target, config.tos, None)?;
    let mut state = SocketState::new(
        &socket,
        &Options {
            gso: config.offload,
            receive_buffer: Some(8 << 20),
            send_buffer: Some(4 << 20),
            arrivals: ArrivalInfo::Timed,
            ..Options::default()
        },
    );
    let id = fastrand::u64(..);
    let plan = Plan {
        reverse: config.reverse,
        milli_pps: (config.pps * 1000.0).round() as u64,
        size: config.size as u32,
        count: config.count.unwrap_or(0),
        duration_ms: config
            .duration
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let (cookie, early) = handshake(&socket, config.target, id, plan, stop)?;
    // Coalesced receives only now: the handshake reads one datagram at a time.
    let gro = config.offload && config.reverse && state.enable_gro(&socket);
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
    crate::io::process::precise_timers();
    let started = Instant::now();
    let waiting = |e| Error::io("cannot wait for the server", e);
    let mut poller = Poller::new(stop).map_err(waiting)?;
    poller.add(&socket, 0).map_err(waiting)?;
    let mut run = Run {
        socket: &socket,
        poller,
        state,
        id,
        cookie,
        started,
        planned_end: started + length,
        // The sending is over by then, whatever the server does; the final query follows.
        hard_end: started + length + limits::STREAM_GRACE,
        replies: RecvBatch::with_slots(
            BATCH,
            if gro {
                65_536
            } else {
                config.size.max(stream::REPORT_LEN) + 1
            },
        ),
        query: vec![0u8; stream::QUERY_LEN],
        last: None,
        intervals: Vec::new(),
        arrivals: Arrivals::precise(),
        foreign: 0,
        refused: 0,
        refusal: None,
        skipped: 0,
        last_data: None,
        serial: 0,
    };
    for (seq, len, sent_ns, arrived) in early {
        run.arrivals.arrive(seq, len, sent_ns, arrived);
    }
    if config.reverse {
        run.receive(config, stop, &mut on_interval)
    } else {
        run.send(config, stop, &mut on_interval)
    }
}

/// The run's planned length, once its numbers are within the limits (the server checks
/// the same: `serve::streams::plan_length`): the duration, or the count at the rate.
fn planned_length(config: &Config) -> Result<Duration, Error> {
    if !(stream::DATA_MIN..=limits::DATAGRAM_MAX).contains(&config.size) {
        return Err(Error::Invalid(format!(
            "a stream datagram is {} to {} bytes: give -s within that",
            stream::DATA_MIN,
            limits::DATAGRAM_MAX
        )));
    }
    if !(config.pps.is_finite()
        && (limits::STREAM_PPS_MIN..=limits::STREAM_PPS_MAX).contains(&config.pps))
    {
        return Err(Error::Invalid(format!(
            "a stream runs at {} to {} datagrams a second, not {}: give a rate within that",
            limits::STREAM_PPS_MIN,
            limits::STREAM_PPS_MAX,
            config.pps
        )));
    }
    if config.reverse && config.pps > limits::REVERSE_PPS_MAX {
        return Err(Error::Invalid(format!(
            "a server sends a reverse stream at most {} datagrams a second, not {}: give a \
             lower rate with -R",
            limits::REVERSE_PPS_MAX,
            config.pps
        )));
    }
    if config.interval < limits::STREAM_INTERVAL_MIN {
        return Err(Error::Invalid(format!(
            "reports come at most every {} s: give -i {} or more",
            limits::STREAM_INTERVAL_MIN.as_secs_f64(),
            limits::STREAM_INTERVAL_MIN.as_secs_f64()
        )));
    }
    let max = limits::STREAM_DURATION_MAX;
    let by_count = config.count.map(|c| c as f64 / config.pps);
    let secs = match (config.duration, by_count) {
        (Some(d), Some(c)) => d.as_secs_f64().min(c),
        (Some(d), None) => d.as_secs_f64(),
        (None, Some(c)) => c,
        (None, None) => {
            return Err(Error::Invalid(
                "a stream needs a duration or a count: give -d SECS or -n COUNT".into(),
            ));
        }
    };
    if !(secs > 0.0 && secs <= max.as_secs_f64()) {
        return Err(Error::Invalid(format!(
            "a stream runs for at most {} s, and this one would run {secs:.0} s: give a \
             shorter -d, or a smaller -n at this rate",
            max.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A data datagram that came during the handshake: sequence number, length, sent and
/// arrival times.
type Early = (u64, usize, u64, u64);

/// The start, and the start again with the server's cookie; the cookie once the stream
/// exists, and (reverse) the data that overtook the server's answer.
fn handshake(
    socket: &UdpSocket,
    server: SocketAddr,
    id: u64,
    plan: Plan,
    stop: &Stop,
) -> Result<(u64, Vec<Early>), Error> {
    let mut early = Vec::new();
    let mut others = 0u64;
    let mut rx =
        Receiver::new(socket, stop).map_err(|e| Error::io("cannot wait for the server", e))?;
    let mut buf = vec![0u8; crate::wire::RECV_BUFFER];
    let mut cookie = 0;
    let mut wait = FIRST_WAIT;
    let mut waited = Duration::ZERO;
    let mut tries = 0;
    while tries < TRIES && !stop.is_stopped() {
        tries += 1;
        let n = Message::Start { id, cookie, plan }.emit(&mut buf, stream::START_LEN);
        match socket.send(&buf[..n]) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(Error::Refused { server });
            }
            Err(e) => return Err(Error::io(format!("cannot send to {server}"), e)),
        }
        let deadline = Instant::now() + wait;
        waited += wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let got = match rx.recv(&mut buf, left) {
                Ok(Some(n)) => n,
                Ok(None) => break, // the wait is over (or stopped)
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Refused { server });
                }
                Err(_) => break,
            };
            match Message::parse(&buf[..got]) {
                // A reverse stream's data may overtake the answer that starts it.
                Some(Message::Data {
                    id: got_id,
                    seq,
                    sent_ns,
                }) if got_id == id && cookie != 0 => {
                    early.push((seq, got, sent_ns, wall_ns()));
                    if early.len() >= 64 {
                        return Ok((cookie, early));
                    }
                }
                Some(Message::Accept {
                    id: got_id,
                    cookie: c,
                    started,
                }) if got_id == id => {
                    if started {
                        return Ok((c, early));
                    }
                    if cookie == c {
                        // The server knows this cookie and did not start: it is full, or
                        // refuses the plan.
                        return Err(Error::Invalid(format!(
                            "{server} refused the stream: it runs too many already, or the \
                             rate or duration asked is beyond what it allows"
                        )));
                    }
                    cookie = c;
                    tries -= 1; // the cookie round trip is not a retransmission
                    wait = FIRST_WAIT;
                    break;
                }
                _ => others += 1, // anything else is not the answer
            }
        }
        if cookie == 0 {
            // Two tries answered only by something else: not a udpkit server; say so now.
            if others > 0 && tries >= 2 {
                break;
            }
            wait *= 2;
        }
    }
    if others > 0 {
        return Err(Error::Invalid(format!(
            "{server} answered {others} times, but not as a udpkit server: `udpkit stream` \
             needs `udpkit server` (any --protocol) at the other end"
        )));
    }
    Err(Error::NoReply {
        server,
        tries,
        waited,
        spoke: None,
    })
}

/// A running stream, either way.
struct Run<'a> {
    socket: &'a UdpSocket,
    /// Wakes on the socket (reports, data) and on the stop.
    poller: Poller,
    /// The socket's abilities, for the sender.
    state: SocketState,
    id: u64,
    cookie: u64,
    started: Instant,
    /// When the sending should be over: the duration, or the count at the rate.
    planned_end: Instant,
    /// Past this, the sending (this client's or the server's) is over, said or not.
    hard_end: Instant,
    replies: RecvBatch,
    query: Vec<u8>,
    /// The server's last report, and when it came.
    last: Option<(Counters, Instant)>,
    intervals: Vec<Figures>,
    /// Reverse: what arrives here.
    arrivals: Arrivals,
    /// Datagrams that were neither this stream's data nor its reports.
    foreign: u64,
    /// Datagrams this host refused to send (counted sent, and lost), and the first refusal.
    refused: u64,
    refusal: Option<Refusal>,
    /// Slots the pacer skipped.
    skipped: u64,
    /// When the last data datagram arrived (reverse): the end of what was received.
    last_data: Option<Instant>,
    /// The latest query's serial.
    serial: u64,
}

impl Run<'_> {
    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Asks for the receiver's figures; the reports to this query (or a later one) are
    /// the ones taken from now on.
    fn send_query(&mut self, sent: u64) {
        self.serial += 1;
        let n = Message::Query {
            id: self.id,
            cookie: self.cookie,
            sent,
            serial: self.serial,
        }
        .emit(&mut self.query, stream::QUERY_LEN);
        let _ = self.socket.send(&self.query[..n]);
    }

    /// The same query again (a retransmission): its report is as good.
    fn resend_query(&mut self, sent: u64) {
        self.serial -= 1;
        self.send_query(sent);
    }

    /// Waits until `deadline`, something arrives, or the stop (unless told to ignore it).
    fn wait_until(&mut self, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.poller
            .wait(Some(left), &mut Vec::new())
            .map_err(|e| Error::io("cannot wait for the server", e))
    }

    /// Takes what has arrived, a bounded number of batches (a flood cannot hold it):
    /// reports (kept) and, reverse, data (counted). True if any report came.
    fn drain(&mut self) -> bool {
        let mut reported = false;
        for _ in 0..limits::RECEIVE_BATCHES_PER_TURN {
            let n = match self.replies.recv(self.socket) {
                Ok(n) if n > 0 => n,
                _ => return reported,
            };
            let now = Instant::now();
            for k in 0..n {
                let (meta, buffer) = self.replies.get(k);
                let arrived = meta.received.map_or_else(wall_ns, |d| d.as_nanos() as u64);
                for data in meta.segments(buffer) {
                    match Message::parse(data) {
                        Some(Message::Data { id, seq, sent_ns }) if id == self.id => {
                            self.arrivals.arrive(seq, data.len(), sent_ns, arrived);
                            self.last_data = Some(now);
                        }
                        // Only the answer to the latest query: an older one, late, would
                        // miss what came since.
                        Some(Message::Report {
                            id,
                            serial,
                            counters,
                        }) if id == self.id && serial == self.serial => {
                            self.last = Some((counters, now));
                            reported = true;
                        }
                        Some(Message::Report { id, .. }) if id == self.id => {}
                        // Malformed only with this stream's ID, which only the server knows:
                        // an off-path forger cannot move this count.
                        _ if stream::stream_id(data) == Some(self.id) => self.arrivals.malformed(),
                        _ => self.foreign += 1,
                    }
                }
            }
        }
        reported
    }

    /// Whether the last stretch is an interval to print: long enough to have a rate (a
    /// tenth of the interval), or the only one. Shorter ones count in the total alone.
    fn is_interval(&self, f: &Figures, config: &Config) -> bool {
        f.end > f.start
            && (f.bytes > 0 || f.sent > 0)
            && (self.intervals.is_empty()
                || f.end - f.start >= config.interval.as_secs_f64() / 10.0)
    }

    /// One interval's figures from the counters at its start and end.
    fn figures(
        &self,
        start: f64,
        end: f64,
        sent: u64,
        before: &Counters,
        now: &Counters,
    ) -> Figures {
        let received = now.received - before.received.min(now.received);
        let expected = now.next_expected.saturating_sub(before.next_expected);
        let lost = expected.saturating_sub(received);
        let bytes = now.bytes.saturating_sub(before.bytes);
        let secs = (end - start).max(1e-9);
        Figures {
            start,
            end,
            sent,
            received,
            lost,
            lost_percent: if expected == 0 {
                0.0
            } else {
                100.0 * lost as f64 / expected as f64
            },
            duplicates: now.duplicates.saturating_sub(before.duplicates),
            reordered: now.reordered.saturating_sub(before.reordered),
            bytes,
            bits_per_second: bytes as f64 * 8.0 / secs,
            jitter_ms: now.jitter_ns as f64 / 1e6,
        }
    }

    /// The report: `sent` in all, of which the receiver's figures cover the first `known`
    /// (the rest, sent after its last report of an incomplete run, are of unknown fate).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        config: &Config,
        sent: u64,
        known: u64,
        end: f64,
        receiver: Counters,
        incomplete: Option<String>,
        stopped: bool,
    ) -> Report {
        let known = known.min(sent);
        let lost = known.saturating_sub(receiver.received);
        let secs = end.max(1e-9);
        let total = Figures {
            start: 0.0,
            end,
            sent,
            received: receiver.received,
            lost,
            lost_percent: if known == 0 {
                0.0
            } else {
                100.0 * lost as f64 / known as f64
            },
            duplicates: receiver.duplicates,
            reordered: receiver.reordered,
            bytes: receiver.bytes,
            bits_per_second: receiver.bytes as f64 * 8.0 / secs,
            jitter_ms: receiver.jitter_ns as f64 / 1e6,
        };
        Report {
            config: config.clone(),
            intervals: self.intervals.clone(),
            total,
            receiver,
            complete: incomplete.is_none(),
            incomplete,
            refused_here: self.refused,
            refused_why: self.refusal.map(|why| {
                let target = config.target;
                if why == Refusal::TooBig {
                    let mtu = SocketState::path_mtu(self.socket, target)
                        .map_or(String::new(), |m| {
                            format!(" (the route's MTU is {m} bytes)")
                        });
                    format!(
                        "datagrams of {} bytes are larger than this host sends to {}{mtu}: \
                         give a smaller -s",
                        config.size,
                        crate::addr::shown(target)
                    )
                } else {
                    format!("this host refused them: {why}")
                }
            }),
            foreign: self.foreign,
            skipped: self.skipped,
            unknown: sent - known,
            stopped,
        }
    }

    /// Forward: this client sends, paced, and asks the server for its counts at each
    /// interval and at the end.
    fn send(
        mut self,
        config: &Config,
        stop: &Stop,
        on_interval: &mut impl FnMut(&Figures),
    ) -> Result<Report, Error> {
        let mut data = DataSender::new(std::mem::take(&mut self.state), config.size);
        let mut schedule = Schedule::new(self.started, config.pps)
            .ok_or_else(|| Error::Invalid("the rate must be above zero".into()))?
            .of_datagrams(config.size);
        if let Some(d) = config.duration {
            schedule = schedule.ending_after(d);
        }
        let limit = config.count.unwrap_or(u64::MAX);
        let mut sent = 0u64;
        let mut next_interval = self.started + config.interval;
        // (counters, sent, seconds) at the start of the current interval.
        let mut mark = (Counters::default(), 0u64, 0.0f64);
        let mut asked: Option<(u64, f64)> = None;
        let mut short = None;
        loop {
            let now = Instant::now();
            if stop.is_stopped() || sent >= limit || schedule.is_over() {
                break;
            }
            if now >= self.hard_end {
                short = Some(match config.count {
                    Some(count) => format!(
                        "sent {sent} of the {count} datagrams asked: this host could not send \
                         at the rate within the run's length and {} s of grace",
                        limits::STREAM_GRACE.as_secs()
                    ),
                    None => format!(
                        "the sender could not keep the rate and was still sending {} s after \
                         the run's end",
                        limits::STREAM_GRACE.as_secs()
                    ),
                });
                break;
            }
            // An interval's query, unless the run ends within a tenth of an interval: the
            // final query covers that (no "3.00-3.00 sec" interval after it).
            if now >= next_interval {
                if next_interval + config.interval / 10 < self.planned_end {
                    self.send_query(sent);
                    asked = Some((sent, self.secs(now)));
                }
                next_interval += config.interval;
            }
            if self.drain()
                && let (Some((at_sent, at)), Some((counters, _))) = (asked.take(), self.last)
            {
                let f = self.figures(mark.2, at, at_sent - mark.1, &mark.0, &counters);
                on_interval(&f);
                self.intervals.push(f);
                mark = (counters, at_sent, at);
            }
            let due = schedule.due(now, limit - sent);
            if due.is_empty() {
                let wake = schedule
                    .next_at()
                    .unwrap_or(now)
                    .min(next_interval)
                    .min(self.hard_end);
                self.wait_until(wake)?;
                continue;
            }
            // In order, stopping at a refusal: the numbers sent never skip one that goes
            // later.
            let turn = data.send(self.socket, None, self.id, sent, due.end - due.start);
            sent += turn.went;
            schedule.take(turn.went);
            match turn.refusal {
                None => {}
                Some(Refusal::Icmp(IcmpError::PortUnreachable)) => {
                    return Err(Error::Refused {
                        server: config.target,
                    });
                }
                Some(why) if why.is_transient() => {
                    // A full buffer: the rest go on a later turn (or, too late, are skipped).
                    stop.wait(Duration::from_micros(20));
                }
                Some(why) => {
                    // Refused by this host (a firewall, too big for the route): the datagram
                    // is sent and lost here, so the run still ends and says why.
                    sent += 1;
                    self.refused += 1;
                    self.refusal.get_or_insert(why);
                    schedule.take(1);
                }
            }
        }
        self.skipped = schedule.skipped();
        let stopped = stop.is_stopped();
        // The run's time is at least the slots of what it sent (a run of one datagram takes
        // one slot, not the instant it took to send it).
        let end = self.secs(Instant::now()).max(sent as f64 / config.pps);
        // The last datagrams reach the server; then its final counts, asked until they come
        // (stopped or not: what was sent is told).
        self.poller.ignore_stop();
        let settled = Instant::now() + SETTLE;
        while Instant::now() < settled {
            self.wait_until(settled)?;
            self.drain();
        }
        let mut wait = FIRST_WAIT;
        for attempt in 0..TRIES {
            self.last = None;
            if attempt == 0 {
                self.send_query(sent);
            } else {
                self.resend_query(sent);
            }
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline {
                if self.drain() {
                    break;
                }
                self.wait_until(deadline)?;
            }
            if let Some((counters, _)) = self.last {
                let f = self.figures(mark.2, end, sent - mark.1, &mark.0, &counters);
                if self.is_interval(&f, config) {
                    on_interval(&f);
                    self.intervals.push(f);
                }
                return Ok(self.finish(config, sent, sent, end, counters, short, stopped));
            }
            wait = (wait * 2).min(LAST_WAIT);
        }
        let why = format!(
            "the server did not answer the final query ({TRIES} tries): it may have restarted \
             or the path lost the answers; the receiver's figures are those of its last report, \
             at {:.2} s",
            mark.2
        );
        Ok(self.finish(config, sent, mark.1, end, mark.0, Some(why), stopped))
    }

    /// Reverse: the server sends; this client counts what arrives, keeps the stream alive
    /// with a query each interval, and learns from the reports how much was sent.
    fn receive(
        mut self,
        config: &Config,
        stop: &Stop,
        on_interval: &mut impl FnMut(&Figures),
    ) -> Result<Report, Error> {
        let mut next_interval = self.started;
        let mut mark = (Counters::default(), 0u64, 0.0f64);
        let mut heard = Instant::now();
        let mut done_at: Option<Instant> = None;
        let mut sender_sent = 0u64;
        let incomplete = loop {
            let now = Instant::now();
            if stop.is_stopped() {
                break None; // what came until then is what is reported
            }
            if now >= next_interval {
                self.send_query(0);
                // Once the sending should be over, ask often: its end comes sooner.
                let over = now >= self.planned_end;
                let every = if over {
                    Duration::from_millis(100)
                } else {
                    config.interval.min(Duration::from_secs(1))
                };
                next_interval = now + every;
            }
            let before = (self.arrivals.counters().received, self.last.map(|l| l.1));
            let reported = self.drain();
            if self.arrivals.counters().received != before.0 || reported {
                heard = Instant::now();
            }
            if reported && let Some((counters, _)) = self.last {
                sender_sent = counters.sender_sent;
                self.skipped = counters.sender_skipped;
                if counters.sender_done != 0 && done_at.is_none() {
                    done_at = Some(Instant::now());
                }
            }
            // An interval's figures once it has passed; its `sent` is what the numbers that
            // arrived say was sent in it (the sender's own count comes a report late).
            let t = self.secs(now);
            if t - mark.2 >= config.interval.as_secs_f64() {
                let local = self.arrivals.counters();
                let numbered = local.next_expected.saturating_sub(mark.0.next_expected);
                let f = self.figures(mark.2, t, numbered, &mark.0, &local);
                on_interval(&f);
                self.intervals.push(f);
                mark = (local, sender_sent, t);
            }
            if done_at.is_some_and(|d| now.saturating_duration_since(d) >= SETTLE) {
                break None;
            }
            if now.saturating_duration_since(heard) >= SILENCE {
                break Some(format!(
                    "nothing came from the server for {} s: it may have restarted, or stopped \
                     sending for lack of our queries; figures as received",
                    SILENCE.as_secs()
                ));
            }
            if now >= self.hard_end {
                break Some(format!(
                    "the server had not said it was done {} s after the stream's planned end \
                     (it may be sending still); figures as received",
                    limits::STREAM_GRACE.as_secs()
                ));
            }
            // Until something arrives, or the next thing to do.
            let interval_end = self.started + Duration::from_secs_f64(mark.2) + config.interval;
            let mut wake = next_interval
                .min(interval_end)
                .min(heard + SILENCE)
                .min(self.hard_end);
            if let Some(done) = done_at {
                wake = wake.min(done + SETTLE);
            }
            self.wait_until(wake)?;
        };
        // The stream's time is what the data took to arrive, not the wait after it; at least
        // the slots of what arrived, and never before the last interval printed.
        let stopped = stop.is_stopped();
        let local = self.arrivals.counters();
        let end = self
            .secs(self.last_data.unwrap_or_else(Instant::now))
            .max(local.next_expected as f64 / config.pps)
            .max(mark.2);
        let numbered = local.next_expected.saturating_sub(mark.0.next_expected);
        let f = self.figures(mark.2, end, numbered, &mark.0, &local);
        if f.bytes > 0 && self.is_interval(&f, config) {
            on_interval(&f);
            self.intervals.push(f);
        }
        let sent = sender_sent.max(local.next_expected);
        let mut receiver = local;
        receiver.sender_sent = sender_sent;
        Ok(self.finish(config, sent, sent, end, receiver, incomplete, stopped))
    }
}
