//! The load engine: one loop that sends requests on one or more flows (each a connected
//! socket with its own source port), paced by a [`Pace`], matches every reply through
//! [`Flow`], counts everything in one [`Tally`], and tells its caller what happens as it
//! happens. `ping` is the engine with one flow paced by an interval, `bench` with many flows
//! in a closed loop (a window) or an open loop (a rate), and `mtu` runs one short phase per
//! size it probes on the same engine.
//!
//! (The test `drives_a_server_as_ping_and_bench_do` below shows it in use.)
//!
//! Promise: every request is accounted for (`sent = received + lost`); a phase ends by
//! itself (its count, its duration, a stop, or the caller's word) after at most one timeout
//! of draining (half a second when stopped); I/O is batched (`sendmmsg`/`recvmmsg` on
//! Linux), only ready sockets are read, every wait wakes on a reply, on the next request
//! due, on the oldest request's timeout and on the stop; nothing is allocated per request.
//! A send refused for an ICMP error the kernel held from an earlier datagram is counted and
//! tried once more; any ICMP error is counted, never fatal (all can be forged).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use crate::io::datagram::{BATCH, RecvBatch};
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::state::{Options, Out, Refusal, SocketState};
use crate::io::wait::{Blocking, Poller, Token};
use crate::limits;
use crate::load::flow::{Flow, Matching, Outcome, Tally};
use crate::load::pace::Schedule;
use crate::measure::latency::Latency;
use crate::measure::stamp::StampSample;
use crate::measure::stamp::{StampReport, StampStats};
use crate::wire::protocol::Claim;
use crate::wire::{MAX_REPLY, Protocol, RECV_BUFFER};
use crate::{Error, Stop};

/// When requests go.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Closed loop: each flow keeps this many requests in flight; the next goes when a
    /// reply comes or a request times out. `Window(1)` is one request at a time.
    Window(usize),
    /// Open loop: this many requests a second across all flows, each stamped with the time
    /// it was *meant* to go, so a stalled server cannot hide its stall (coordinated
    /// omission). After a stall of the generator itself, at most a small burst of those
    /// due go at once (`limits::pacer_burst`); the rest are skipped and counted
    /// (`Tally::skipped`), never rushed at the server.
    Rate(f64),
    /// One request every interval across the flows, whatever the replies, each stamped with
    /// the time it went; after a stall, one request, then the schedule again (ping's
    /// habit; the requests between are skipped and counted).
    Interval(Duration),
}

impl Pace {
    /// Requests that can be in flight on one of `flows` flows whose replies time out after
    /// `timeout`.
    fn in_flight(self, flows: usize, timeout: Duration) -> usize {
        let per_second = match self {
            Pace::Window(w) => return w.max(1),
            Pace::Rate(r) => r / flows.max(1) as f64,
            Pace::Interval(d) => 1.0 / d.as_secs_f64().max(1e-9) / flows.max(1) as f64,
        };
        (per_second * timeout.as_secs_f64()).ceil().min(1e9) as usize + 2
    }
}

/// The kernel's batching of datagrams, where it has it: requests of one size to the server
/// go as one segmented send (`gso`, `UDP_SEGMENT`), replies of one size come in as one
/// coalesced receive (`gro`, `UDP_GRO`). Off by default: a load generator turns them on,
/// a ping leaves single requests alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// Send requests of one size as one segmented send (`UDP_SEGMENT`), where the kernel
    /// has it.
    pub gso: bool,
    /// Receive replies of one size as one coalesced datagram (`UDP_GRO`), where the kernel
    /// has it.
    pub gro: bool,
}

/// What the requests speak, and how their IP headers are marked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Requests {
    /// The protocol the requests speak and the replies are read in.
    pub protocol: Protocol,
    /// The TOS byte (IPv4) or traffic class (IPv6): DSCP in the high six bits, ECN in the
    /// low two; with STAMP also asked of the reflector for its replies (CoS TLV).
    pub tos: Option<u8>,
    /// The TTL (IPv4) or hop limit (IPv6).
    pub ttl: Option<u8>,
}

/// One stretch of requests at one pace.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub pace: Pace,
    /// Send at most this many requests...
    pub count: Option<u64>,
    /// ...for at most this long (neither: until stopped).
    pub duration: Option<Duration>,
    /// A request unanswered this long is lost (a later reply is counted late).
    pub timeout: Duration,
}

/// Figures so far, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Time since the phase began.
    pub elapsed: Duration,
    /// How long the phase is meant to send, if known.
    pub planned: Option<Duration>,
    /// Requests sent so far, on all flows.
    pub sent: u64,
    /// Requests answered so far (first replies, late or not).
    pub received: u64,
}

/// Why a request did not go: the kernel's refusal.
pub use crate::io::state::Refusal as NotSent;

/// What happened, as it happens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// The first reply to request `seq` of `flow` (or, `duplicate`, another one).
    Reply {
        /// The flow the request went on, from 0.
        flow: usize,
        /// The request's sequence number on its flow, from 0.
        seq: u64,
        /// The request's length.
        bytes: usize,
        /// The reply's own length (a reflected packet's may differ from its request's).
        reply_bytes: usize,
        /// The round-trip time, from when the request was sent (or, at a rate, meant to
        /// be) to when the reply came.
        rtt: Duration,
        /// The reply came after the request's timeout (it still counts as received).
        late: bool,
        /// Not the first reply to this request.
        duplicate: bool,
        /// False for a reply matched by its length alone (no request ID).
        verified: bool,
        /// STAMP: the reflector's timestamps and what it saw (first replies only).
        stamp: Option<StampSample>,
    },
    /// An ICMP error came back (or was forged), noticed after request `seq` went.
    Unreachable {
        /// The request after which the error was noticed: the last one sent, or the one
        /// whose send reported it.
        seq: u64,
        /// What the ICMP error says.
        kind: IcmpError,
    },
    /// Request `seq` of `flow` did not go; it counts as lost at once.
    NotSent {
        /// The flow the request was to go on, from 0.
        flow: usize,
        /// The request's sequence number on its flow.
        seq: u64,
        /// Why the kernel refused it.
        why: NotSent,
    },
    /// A reply ignored because it lacked the right request ID.
    Forged,
    /// A datagram that answers no request (or could answer more than one); `names` is the
    /// length it names if it is a reply in the seed's form.
    Bad {
        /// The request length the datagram names (`None`: not a reply in the seed's form).
        names: Option<usize>,
    },
    /// A reply with request `seq`'s ID (on `flow`) that names or has another length, `got`
    /// bytes: the request or the reply was cut short on the way. Counted as bad.
    Cut {
        /// The flow the request went on.
        flow: usize,
        /// The request's sequence number.
        seq: u64,
        /// The length the reply names or has.
        got: usize,
    },
    /// The first reply without a request ID: it and those after it are matched by the
    /// length they name and cannot be authenticated.
    Unverified,
    /// The server proved it repeats request IDs: `count` replies taken on their length
    /// alone were forged and are no longer counted.
    Revoked {
        /// Replies that had been counted on their length and no longer are.
        count: u64,
    },
    /// Ten times a second.
    Progress(Progress),
}

/// The outcome of all the phases run.
#[derive(Clone, Debug)]
pub struct Report {
    pub tally: Tally,
    /// `Ids` when every flow proved IDs; `Length` when some replies were matched by length.
    pub matching: Matching,
    /// From the first request to the last reply (or the end of sending, if later).
    pub elapsed: Duration,
    /// From the first request to the end of sending.
    pub sending: Duration,
    pub latency: Latency,
    /// Open loop: how late each request was handed to the kernel against the time it was
    /// meant to go (empty for the other paces).
    pub send_lag: Latency,
    /// STAMP: what the reflector's replies said beyond the round trip.
    pub stamp: Option<StampReport>,
}

/// Requests remembered across all flows, at most (32 bytes each: 32 MiB). More in flight
/// than this is refused up front (closed loop) or counted as unmatched (open loop).
pub const MAX_REMEMBERED: usize = limits::REQUESTS_REMEMBERED;

/// How long a stopped phase waits for replies still on their way.
const STOP_DRAIN: Duration = Duration::from_millis(500);

/// How often [`Event::Progress`] comes, and foreign datagrams are counted.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The room for one reply: replies are under 100 bytes; anything longer is cut short here
/// and then fails to parse, as it should.
const REPLY_ROOM: usize = 2048;

struct FlowState {
    socket: UdpSocket,
    /// Receives what reaches this flow's port from anyone but the server.
    witness: Option<UdpSocket>,
    flow: Flow,
    latency: Latency,
    /// Round trips of answers matched by length alone, until the flow proves IDs.
    unverified: Latency,
}

/// The flows, their sockets and the buffers of the loop; see the module's promise.
pub struct Engine {
    target: SocketAddr,
    /// Before `flows`: dropped before the sockets it may shut.
    waiter: Waiter,
    flows: Vec<FlowState>,
    stop: Stop,
    ready: Vec<Token>,
    replies: RecvBatch,
    out: Outbox,
    /// The flows' sockets' abilities (alike: one target), and their sends.
    state: SocketState,
    foreign_buf: Vec<u8>,
    tally: Tally,
    sent: u64,
    said_unverified: bool,
    /// The flow that goes first in the next turn of a closed loop (they take turns).
    first_flow: usize,
    protocol: Protocol,
    stamp: Option<StampStats>,
    started: Option<Instant>,
    send_end: Option<Instant>,
    last_reply: Option<Instant>,
}

impl Engine {
    /// `flows` connected sockets to `target`, each remembering enough requests for what
    /// `pace` can keep in flight within `timeout`, of `size` bytes, with the kernel's
    /// batching where `offload` asks for it and the kernel has it.
    pub fn new(
        target: SocketAddr,
        flows: usize,
        size: usize,
        pace: Pace,
        timeout: Duration,
        stop: &Stop,
        offload: Offload,
    ) -> Result<Engine, Error> {
        Self::build(target, flows, pace, timeout, stop, offload, 1, |capacity| {
            Flow::new(size, capacity)
        })
    }

    /// [`Engine::new`] for one of `engines` engines of one load (a bench's threads), which
    /// share [`MAX_REMEMBERED`] between them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn sharing(
        target: SocketAddr,
        flows: usize,
        size: usize,
        pace: Pace,
        timeout: Duration,
        stop: &Stop,
        offload: Offload,
        engines: usize,
    ) -> Result<Engine, Error> {
        Self::build(
            target,
            flows,
            pace,
            timeout,
            stop,
            offload,
            engines,
            |capacity| Flow::new(size, capacity),
        )
    }

    /// One flow whose requests are exactly `size` bytes until [`Engine::set_size`] (see
    /// [`Flow::exact`]), for probing sizes.
    pub fn exact(
        target: SocketAddr,
        size: usize,
        pace: Pace,
        timeout: Duration,
        stop: &Stop,
    ) -> Result<Engine, Error> {
        Self::build(
            target,
            1,
            pace,
            timeout,
            stop,
            Offload::default(),
            1,
            |capacity| Flow::exact(size, capacity),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        target: SocketAddr,
        flows: usize,
        pace: Pace,
        timeout: Duration,
        stop: &Stop,
        offload: Offload,
        engines: usize,
        make: impl Fn(usize) -> Flow,
    ) -> Result<Engine, Error> {
        let flows = flows.max(1);
        // This engine's share of what a whole load may remember.
        let budget = MAX_REMEMBERED / engines.max(1);
        let in_flight = pace.in_flight(flows, timeout);
        if matches!(pace, Pace::Window(_)) && flows.saturating_mul(in_flight) * 4 > budget {
            return Err(Error::Invalid(format!(
                "{} flows of {in_flight} requests in flight are too many: keep flows x \
                 window at most {}",
                flows * engines.max(1),
                MAX_REMEMBERED / 4
            )));
        }
        // Four times what can be in flight, at least 32: room for two window's worth of
        // lengths, and to tell an old request of the same length from a new one. A reply
        // to a request forgotten this long ago is unmatched rather than credited anew. All
        // the flows of all the engines of a load remember MAX_REMEMBERED at most.
        let capacity = in_flight
            .saturating_mul(4)
            .clamp(32, (budget / flows).max(32));
        let waiting = |e| Error::io("cannot wait for replies", e);
        let mut poller = Poller::new(stop).map_err(waiting)?;
        let mut states = Vec::with_capacity(flows);
        let options = Options {
            gso: offload.gso,
            gro: offload.gro,
            // Room for bursts of replies, but for a ping-pong.
            receive_buffer: (flows > 1 || !matches!(pace, Pace::Window(1) | Pace::Interval(_)))
                .then_some(4 << 20),
            ..Options::default()
        };
        let mut state: Option<SocketState> = None;
        for i in 0..flows {
            let socket = net::connect(target)?;
            socket.set_nonblocking(true).map_err(waiting)?;
            match &mut state {
                None => state = Some(SocketState::new(&socket, &options)),
                Some(state) => state.join(&socket, &options),
            }
            poller.add(&socket, i as Token).map_err(waiting)?;
            states.push(FlowState {
                witness: net::foreign_witness(&socket),
                socket,
                flow: make(capacity),
                latency: Latency::new(),
                unverified: Latency::new(),
            });
        }
        let state = state.expect("at least one flow");
        let gro = state.gro();
        Ok(Engine {
            target,
            waiter: Waiter::new(poller, &states, pace, stop).map_err(waiting)?,
            flows: states,
            stop: stop.clone(),
            ready: Vec::with_capacity(flows),
            // As many replies at a time as can be in flight (a ping-pong: a few).
            // (Coalesced, up to 64 replies of at most MAX_REPLY bytes share one buffer.)
            replies: RecvBatch::with_slots(
                in_flight.saturating_mul(flows).max(4),
                if gro { 64 * MAX_REPLY } else { REPLY_ROOM },
            ),
            out: Outbox::new(),
            state,
            foreign_buf: vec![0; 2048],
            tally: Tally::default(),
            sent: 0,
            said_unverified: false,
            first_flow: 0,
            protocol: Protocol::SEED,
            stamp: None,
            started: None,
            send_end: None,
            last_reply: None,
        })
    }

    /// Flow `i`'s socket (for options such as forbidding fragmentation).
    pub fn socket(&self, i: usize) -> &UdpSocket {
        &self.flows[i].socket
    }

    /// Speaks `requests.protocol` and marks every datagram as `requests` says, from the
    /// first request on (call before running a phase).
    pub fn prepare(&mut self, requests: &Requests) -> Result<(), Error> {
        let tos = requests.tos.unwrap_or(0);
        self.set_protocol(requests.protocol, (tos >> 2, tos & 3));
        for f in &self.flows {
            SocketState::mark(&f.socket, self.target, requests.tos, requests.ttl)?;
        }
        let ttl = SocketState::ttl(&self.flows[0].socket, self.target);
        if let Some(stats) = &mut self.stamp {
            stats.set_sent(tos, ttl);
        }
        Ok(())
    }

    /// Speaks `protocol` from the first request on (call before running a phase); with
    /// STAMP, asks the reflector to send back DSCP and ECN `cos`. Echo and STAMP replies
    /// are as long as their requests: the receive buffers grow to take any datagram.
    pub fn set_protocol(&mut self, protocol: Protocol, cos: (u8, u8)) {
        self.protocol = protocol;
        for f in &mut self.flows {
            f.flow.set_protocol(protocol, cos);
        }
        if protocol.replies_as_long_as_requests() {
            self.replies = RecvBatch::with_slots(self.replies.slots(), RECV_BUFFER);
        }
        self.stamp = protocol.test_packets().then(|| {
            let same_host = self.flows[0]
                .socket
                .local_addr()
                .is_ok_and(|local| local.ip() == self.target.ip());
            StampStats::new(self.flows.len(), same_host)
        });
    }

    /// The size of every flow's requests from now on (flows made by [`Engine::exact`]).
    pub fn set_size(&mut self, size: usize) {
        for f in &mut self.flows {
            f.flow.set_size(size);
        }
    }

    /// The kernel's batching in effect: asked for and granted (GSO stays on until the path
    /// refuses a segmented send).
    pub fn offload(&self) -> Offload {
        Offload {
            gso: self.state.gso(),
            gro: self.state.gro(),
        }
    }

    /// Requests sent so far, in all phases.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Figures so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// `Ids` once every flow has proved that its server repeats request IDs.
    pub fn matching(&self) -> Matching {
        Matching::settled(
            self.flows.iter().map(|f| f.flow.matching()),
            self.tally.unverified,
        )
    }

    fn waiting(&self) -> usize {
        self.flows.iter().map(|f| f.flow.waiting()).sum()
    }

    /// Runs one phase; `on_event` hears of each reply and anomaly as it comes. Its error
    /// ends the run as `Error::Callback`; its `Break` ends the phase at once (requests
    /// still waiting stay waiting, for a later phase to take their replies).
    pub fn run(
        &mut self,
        phase: &Phase,
        mut on_event: impl FnMut(&Event) -> io::Result<ControlFlow<()>>,
    ) -> Result<(), Error> {
        let mut emit = |event: Event| match on_event(&event) {
            Ok(ControlFlow::Continue(())) => Ok(false),
            Ok(ControlFlow::Break(())) => Ok(true),
            Err(source) => Err(Error::Callback { source }),
        };
        let started = Instant::now();
        self.started.get_or_insert(started);
        let flows_n = self.flows.len();
        let send_until = phase.duration.map(|d| started + d);
        let limit = phase
            .count
            .map_or(u64::MAX, |c| self.sent.saturating_add(c));
        // Open loop and interval: the one pacer, slots from the phase's start.
        let mut schedule = match phase.pace {
            Pace::Rate(rate) => Schedule::new(started, rate),
            Pace::Interval(d) => {
                Schedule::new(started, 1.0 / d.as_secs_f64().max(1e-9)).map(|s| s.with_burst(1))
            }
            Pace::Window(_) => None,
        }
        .map(|s| match phase.duration {
            Some(d) => s.ending_after(d),
            None => s,
        });
        let skipped_before = self.tally.skipped;
        if schedule.is_none() && !matches!(phase.pace, Pace::Window(_)) {
            return Err(Error::Invalid(
                "a rate or interval must be a finite number above zero".into(),
            ));
        }
        let mut sending = true;
        let mut drain_until = None;
        let mut next_progress = started + PROGRESS_EVERY;
        let mut events = Vec::new();
        loop {
            let now = Instant::now();
            for f in &mut self.flows {
                f.flow.expire(now, phase.timeout);
            }
            if sending
                && (self.stop.is_stopped()
                    || send_until.is_some_and(|t| now >= t)
                    || schedule.as_ref().is_some_and(Schedule::is_over)
                    || self.sent >= limit)
            {
                sending = false;
                self.send_end = Some(now);
                drain_until = Some(now + phase.timeout);
            }
            if !sending {
                if let (true, Waiter::Poller(poller)) = (self.stop.is_stopped(), &mut self.waiter) {
                    poller.ignore_stop();
                }
                // Told to stop: replies still on their way get half a second, not a
                // timeout that may be a day long.
                if self.stop.is_stopped() {
                    drain_until = drain_until.map(|t| t.min(now + STOP_DRAIN));
                }
                if self.waiting() == 0 || drain_until.is_some_and(|t| now >= t) {
                    break;
                }
            }

            // Send what is due.
            let mut next_due = None;
            if sending {
                let mut budget = limit - self.sent;
                match phase.pace {
                    Pace::Window(window) => {
                        // At most SENDS_PER_TURN a turn, the flows taking turns to go
                        // first: a large window fills over turns that each look at the
                        // clock and the stop; the next comes at once (its wait only reads
                        // what replies are there).
                        let mut turn = limits::SENDS_PER_TURN as u64;
                        self.first_flow = (self.first_flow + 1) % flows_n;
                        let first = self.first_flow;
                        for i in (0..flows_n).map(|k| (k + first) % flows_n) {
                            let waiting = self.flows[i].flow.waiting();
                            let room = window.saturating_sub(waiting) as u64;
                            let n = room.min(budget).min(turn);
                            budget -= n;
                            turn -= n;
                            if n < room.min(budget + n) {
                                next_due = Some(now);
                            }
                            for _ in 0..n {
                                self.enqueue(i, now, false, &mut events);
                            }
                            self.flush(&mut events);
                        }
                        self.sent = limit - budget;
                    }
                    Pace::Rate(_) => {
                        let schedule = schedule.as_mut().expect("a schedule for a rate");
                        // Every request whose time has come goes now, stamped with that
                        // time, each flow's in batches (segmented where it can); a few
                        // batches a turn, so that replies are read and the end is noticed
                        // even when the rate is more than can be sent.
                        let due = schedule.due(now, ((BATCH * flows_n) as u64).min(budget));
                        self.tally.skipped = skipped_before + schedule.skipped();
                        let n = flows_n as u64;
                        for i in 0..flows_n {
                            // Slot j goes on flow j mod n, as in turn.
                            let mut j = due.start + (i as u64 + n - due.start % n) % n;
                            while j < due.end {
                                self.enqueue(i, schedule.at(j), true, &mut events);
                                j += n;
                            }
                            self.flush(&mut events);
                        }
                        let count = due.end - due.start;
                        schedule.take(count);
                        self.sent += count;
                        next_due = schedule.next_at();
                    }
                    Pace::Interval(_) => {
                        let schedule = schedule.as_mut().expect("a schedule for an interval");
                        let due = schedule.due(now, budget.min(1));
                        self.tally.skipped = skipped_before + schedule.skipped();
                        if !due.is_empty() {
                            let i = (due.start % flows_n as u64) as usize;
                            self.enqueue(i, now, false, &mut events);
                            self.flush(&mut events);
                            schedule.take(1);
                            self.sent += 1;
                        }
                        next_due = schedule.next_at();
                    }
                }
                for event in events.drain(..) {
                    match event {
                        Event::Unreachable { kind, .. } => self.tally.note_icmp(kind),
                        Event::NotSent { flow, seq, .. } => {
                            self.tally.not_sent += 1;
                            self.flows[flow].flow.abandon(seq);
                        }
                        _ => {}
                    }
                    if emit(event)? {
                        return Ok(());
                    }
                }
                if self.sent >= limit {
                    continue; // notice the end of sending before waiting
                }
            }

            // Wait for a reply until the next request is due, the oldest one times out,
            // or progress is due (at once if a reply is there).
            let mut until = next_progress;
            if let Some(t) = next_due {
                until = until.min(t);
            }
            if let Some(t) = drain_until {
                until = until.min(t);
            }
            for f in &self.flows {
                if let Some(since) = f.flow.oldest_waiting_since() {
                    until = until.min(since + phase.timeout);
                }
            }
            let wait = until.saturating_duration_since(now);
            match &mut self.waiter {
                Waiter::Poller(poller) => {
                    poller
                        .wait(Some(wait), &mut self.ready)
                        .map_err(|e| Error::io("cannot wait for replies", e))?;
                    // Only the flows whose sockets are ready are read.
                    for r in 0..self.ready.len() {
                        let i = self.ready[r] as usize;
                        if self.receive(i, None, &mut emit)? {
                            return Ok(());
                        }
                    }
                }
                Waiter::Blocking(blocking) => {
                    let got = blocking.recv(&self.flows[0].socket, &mut self.replies, Some(wait));
                    if self.receive(0, Some(got), &mut emit)? {
                        return Ok(());
                    }
                }
            }
            let now = Instant::now();
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                // Off the hot path: foreign datagrams are counted ten times a second.
                self.count_foreign();
                let progress = Progress {
                    elapsed: now.duration_since(started),
                    planned: phase.duration,
                    sent: self.sent,
                    received: self.tally.received,
                };
                if emit(Event::Progress(progress))? {
                    return Ok(());
                }
            }
        }
        self.count_foreign();
        Ok(())
    }

    /// Queues flow `i`'s next request, stamped `at` (the time it was meant to go, when
    /// `intended`: its send lag is recorded), and sends the outbox when it is full.
    fn enqueue(&mut self, i: usize, at: Instant, intended: bool, events: &mut Vec<Event>) {
        let seq = self.flows[i].flow.next_request(self.out.next(), at);
        self.out.note(i, seq);
        if intended {
            self.out.intend(at);
        }
        if self.out.is_full() {
            self.flush(events);
        }
    }

    /// Sends what the outbox holds.
    fn flush(&mut self, events: &mut Vec<Event>) {
        if self.out.queued > 0 {
            self.out.send(&mut self.state, &self.flows, events);
        }
    }

    /// Reads flow `i`'s replies (starting with `first`, a receive already made, if any)
    /// until none is left; true if the caller ended the phase.
    fn receive(
        &mut self,
        i: usize,
        mut first: Option<io::Result<usize>>,
        emit: &mut impl FnMut(Event) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let f = &mut self.flows[i];
        // A bounded number of batches: a flood to this port cannot keep the loop from its
        // clock; what is left is read on the next turn.
        for _ in 0..limits::RECEIVE_BATCHES_PER_TURN {
            let got = match first.take() {
                Some(got) => got,
                None => self.replies.recv(&f.socket),
            };
            match got {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let at = Instant::now();
                    self.last_reply = Some(at);
                    for k in 0..n {
                        let (meta, buffer) = self.replies.get(k);
                        for data in meta.segments(buffer) {
                            let outcome = f.flow.on_reply(data, at);
                            let revoked = f.flow.take_revoked();
                            if revoked.answers > 0 {
                                self.tally.revoke(revoked, &mut f.unverified);
                                if emit(Event::Revoked {
                                    count: revoked.answers,
                                })? {
                                    return Ok(true);
                                }
                            }
                            self.tally.count(outcome, &mut f.latency, &mut f.unverified);
                            let event = match outcome {
                                Outcome::Answer {
                                    seq,
                                    rtt,
                                    late,
                                    verified,
                                    stamp,
                                } => {
                                    if let (Some(stats), Some(sample)) = (&mut self.stamp, &stamp) {
                                        stats.observe(i, seq, rtt, sample);
                                    }
                                    if !verified && !self.said_unverified {
                                        self.said_unverified = true;
                                        if emit(Event::Unverified)? {
                                            return Ok(true);
                                        }
                                    }
                                    Event::Reply {
                                        flow: i,
                                        seq,
                                        bytes: f.flow.request_len(seq).unwrap_or(0),
                                        reply_bytes: data.len(),
                                        rtt,
                                        late,
                                        duplicate: false,
                                        verified,
                                        stamp,
                                    }
                                }
                                Outcome::Duplicate { seq, rtt } => Event::Reply {
                                    flow: i,
                                    seq,
                                    bytes: f.flow.request_len(seq).unwrap_or(0),
                                    reply_bytes: data.len(),
                                    rtt,
                                    late: false,
                                    duplicate: true,
                                    verified: f.flow.matching() == Matching::Ids,
                                    stamp: None,
                                },
                                Outcome::Forged => Event::Forged,
                                Outcome::Cut { seq, got } => Event::Cut { flow: i, seq, got },
                                Outcome::Bad | Outcome::Unmatched => Event::Bad {
                                    names: match self.protocol.read_reply(data) {
                                        Claim::Length(n) | Claim::Id { len: n, .. } => Some(n),
                                        _ => None,
                                    },
                                },
                            };
                            if emit(event)? {
                                return Ok(true);
                            }
                        }
                    }
                    if n < self.replies.slots() {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => match IcmpError::of(&e) {
                    Some(kind) => {
                        self.tally.note_icmp(kind);
                        let seq = f.flow.sent().saturating_sub(1);
                        if emit(Event::Unreachable { seq, kind })? {
                            return Ok(true);
                        }
                    }
                    None => {
                        return Err(Error::io(format!("cannot receive from {}", self.target), e));
                    }
                },
            }
        }
        Ok(false)
    }

    fn count_foreign(&mut self) {
        for f in &self.flows {
            self.tally.foreign += net::drain_foreign(f.witness.as_ref(), &mut self.foreign_buf);
        }
    }

    /// The figures of all the phases run.
    pub fn report(&self) -> Report {
        let mut tally = self.tally;
        tally.sent = self.sent;
        let mut latency = Latency::new();
        for f in &self.flows {
            latency.merge(&f.latency);
            latency.merge(&f.unverified);
        }
        let started = self.started.unwrap_or_else(Instant::now);
        let end = match (self.last_reply, self.send_end) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(started),
        };
        Report {
            tally,
            matching: self.matching(),
            elapsed: end.saturating_duration_since(started),
            sending: self
                .send_end
                .unwrap_or(started)
                .saturating_duration_since(started),
            latency,
            send_lag: self.out.lag.clone(),
            stamp: self.stamp.as_ref().map(|s| {
                let sent: Vec<u64> = self.flows.iter().map(|f| f.flow.sent()).collect();
                let received: Vec<u64> = self
                    .flows
                    .iter()
                    .map(|f| f.latency.count() + f.unverified.count())
                    .collect();
                s.report(&sent, &received, tally.forged)
            }),
        }
    }
}

/// How the engine waits: in the receive itself for one flow (Linux), one system call a
/// wake; on a poller over all flows otherwise.
enum Waiter {
    Poller(Poller),
    Blocking(Blocking),
}

impl Waiter {
    /// Blocking for one flow in a closed loop; the poller, whose timeouts are exact to the
    /// nanosecond, wherever requests must leave on time (a rate, an interval).
    fn new(poller: Poller, flows: &[FlowState], pace: Pace, stop: &Stop) -> io::Result<Waiter> {
        if let ([one], Pace::Window(_)) = (flows, pace) {
            return Ok(Waiter::Blocking(Blocking::new(&one.socket, stop)?));
        }
        if !matches!(pace, Pace::Window(_)) {
            // Wake-ups on time: the kernel's default timer slack (50 µs) would make every
            // request of an open loop leave that much late.
            crate::io::process::precise_timers();
        }
        Ok(Waiter::Poller(poller))
    }
}

/// Requests waiting to go on one flow, in buffers reused from batch to batch (a buffer that
/// held a request of the same size keeps its padding, so only the ID is rewritten).
/// Requests of one size go as one segmented send (GSO) where the socket allows.
struct Outbox {
    bufs: Vec<Vec<u8>>,
    seqs: [u64; BATCH],
    flow: usize,
    queued: usize,
    /// The queued requests back to back, for segmented sends.
    packed: Vec<u8>,
    /// Where each queued request lies in `packed`.
    outs: [Out; BATCH],
    /// When each queued request was meant to go (open loop), for the send lag.
    intended: [Option<Instant>; BATCH],
    /// How late requests were handed to the kernel against their intended times.
    lag: Latency,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            bufs: (0..BATCH).map(|_| Vec::new()).collect(),
            seqs: [0; BATCH],
            flow: 0,
            queued: 0,
            packed: Vec::new(),
            outs: [Out::at(0, 0); BATCH],
            intended: [None; BATCH],
            lag: Latency::new(),
        }
    }

    /// When the request just queued was meant to go.
    fn intend(&mut self, at: Instant) {
        self.intended[self.queued - 1] = Some(at);
    }

    /// Records the send lag of the queued requests meant for a time, as they go now.
    fn note_lag(&mut self) {
        if self.intended[0].is_none() {
            return;
        }
        let now = Instant::now();
        for at in self.intended[..self.queued].iter_mut() {
            if let Some(at) = at.take() {
                self.lag.record(now.saturating_duration_since(at));
            }
        }
    }

    /// The buffer for the next request.
    fn next(&mut self) -> &mut Vec<u8> {
        self.queued += 1;
        &mut self.bufs[self.queued - 1]
    }

    /// Which flow and request the buffer just taken holds.
    fn note(&mut self, flow: usize, seq: u64) {
        self.flow = flow;
        self.seqs[self.queued - 1] = seq;
    }

    fn is_full(&self) -> bool {
        self.queued == BATCH
    }

    /// Sends what is queued on its flow's socket, back to back, as segmented sends where the
    /// requests are of one size and the socket allows (the socket state sends again singly
    /// what the path refuses segmented). A request refused for an ICMP error that the
    /// kernel held from an earlier datagram is tried once more; the events say what was
    /// refused.
    fn send(&mut self, state: &mut SocketState, flows: &[FlowState], events: &mut Vec<Event>) {
        let flow = self.flow;
        let socket = &flows[flow].socket;
        self.note_lag();
        let queued = self.queued;
        self.packed.clear();
        for (out, buf) in self.outs.iter_mut().zip(&self.bufs[..queued]) {
            *out = Out::at(self.packed.len(), buf.len());
            self.packed.extend_from_slice(buf);
        }
        let mut again = [0usize; BATCH];
        let mut retries = 0;
        let packed = [&self.packed[..]];
        state.send(socket, &packed, &self.outs[..queued], |i, why| {
            let seq = self.seqs[i];
            match why {
                Refusal::Icmp(kind) => {
                    events.push(Event::Unreachable { seq, kind });
                    again[retries] = i;
                    retries += 1;
                }
                why => events.push(Event::NotSent { flow, seq, why }),
            }
        });
        // The refusal of a segmented send got past by sending singly: an ICMP error held
        // from an earlier datagram is counted.
        if let Some(Refusal::Icmp(kind)) = state.take_recovered() {
            events.push(Event::Unreachable {
                seq: self.seqs[0],
                kind,
            });
        }
        for &i in &again[..retries] {
            let seq = self.seqs[i];
            state.send(socket, &packed, &self.outs[i..=i], |_, why| {
                if let Refusal::Icmp(kind) = why {
                    events.push(Event::Unreachable { seq, kind });
                }
                events.push(Event::NotSent { flow, seq, why });
            });
        }
        self.queued = 0;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Engine, Event, Offload, Pace, Phase};
    use crate::Stop;
    use crate::wire::{MAX_REPLY, emit_reply, request_id};
    use std::net::UdpSocket;
    use std::ops::ControlFlow;
    use std::time::Duration;

    /// A server of the seed's protocol on a thread, written here from the wire alone (the
    /// engine's layer is below the server's); it ends when the test's socket closes.
    pub(crate) fn seed_server() -> std::io::Result<std::net::SocketAddr> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        let addr = socket.local_addr()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut reply = [0u8; MAX_REPLY];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let len = emit_reply(&mut reply, n, request_id(&buf[..n]));
                let _ = socket.send_to(&reply[..len], peer);
            }
        });
        Ok(addr)
    }

    #[test]
    fn drives_a_server_as_ping_and_bench_do() -> Result<(), Box<dyn std::error::Error>> {
        let server = seed_server()?;
        let pace = Pace::Window(4); // four requests in flight on each flow
        let timeout = Duration::from_secs(1);
        let stop = Stop::new();
        let offload = Offload::default(); // no GSO, no GRO
        let mut engine = Engine::new(server, 2, 64, pace, timeout, &stop, offload)?;
        let phase = Phase {
            pace,
            count: Some(100),
            duration: None,
            timeout,
        };
        let mut replies = 0;
        engine.run(&phase, |event| {
            if let Event::Reply {
                duplicate: false, ..
            } = event
            {
                replies += 1;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let report = engine.report();
        assert_eq!(report.tally.sent, 100);
        assert_eq!(report.tally.received, replies);
        assert_eq!(
            report.tally.sent,
            report.tally.received + report.tally.lost()
        );
        Ok(())
    }
}
