//! Many targets watched at once, for ever: each target a connected socket with its own
//! [`Flow`] (the one matching of replies), its own [`Schedule`] (the one pacer, one probe an
//! interval, ping's habit after a stall), its own protocol, size, marking and timeout; one
//! loop waits on one [`Poller`] for a reply, the next probe due, the next timeout or the
//! stop. What `udpkit monitor` runs, and what its metrics are read from.
//!
//! Promise: every probe is accounted for: sent, then answered (`replies`), or timed out
//! (`lost`, a later reply counted `late` beside it), or refused by the kernel (`not_sent`,
//! counted lost at once); a reply is credited only as `Flow` says (IDs once proven); a
//! round trip matched by length alone goes to its own histogram (`unverified`). One-way
//! delays are recorded only when the reflector is this host or both ends' Error Estimates
//! say they are synchronised. Memory is fixed per target (its requests in flight, a few
//! histograms of [`Buckets`]), the number of targets bounded by
//! [`limits::MONITOR_TARGETS_MAX`]; the loop never waits on its readers: it publishes a
//! copy of its counters once a [`PUBLISH_EVERY`] and readers take the last copy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::io::datagram::RecvBatch;
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::state::{ArrivalInfo, Out, Refusal, SocketState};
use crate::io::wait::{Poller, Token};
use crate::limits;
use crate::load::engine::Requests;
use crate::load::flow::{Flow, Outcome, Tally};
use crate::load::pace::Schedule;
use crate::measure::buckets::Buckets;
use crate::measure::latency::Record;
use crate::measure::stamp::SessionCount;
use crate::wire::RECV_BUFFER;
use crate::{Error, Stop};

/// How often the loop publishes its counters for readers (a scrape sees them at most this
/// old).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// One target: where, and how to probe it. Two targets are the same target when every
/// field is the same; a reload keeps the counters of those that stay.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The server or reflector probed.
    pub address: SocketAddr,
    /// Its name in the metrics (`name` label); the address when not given.
    pub name: String,
    /// The protocol, and the TOS and TTL of every probe.
    pub requests: Requests,
    /// Bytes in each probe (a protocol may make them longer: STAMP's 44 at least).
    pub size: usize,
    /// Between probes.
    pub interval: Duration,
    /// How long a probe waits for its reply before it is lost.
    pub timeout: Duration,
    /// Probes to send in all (`None`: for ever); its counters stay once they are done.
    pub count: Option<u64>,
}

impl Target {
    /// Checks what the limits say of one target.
    pub fn check(&self) -> Result<(), String> {
        let (lo, hi) = (limits::MONITOR_INTERVAL_MIN, limits::MONITOR_INTERVAL_MAX);
        if self.interval < lo || self.interval > hi {
            return Err(format!(
                "interval {:?} is not within {lo:?}..={hi:?}",
                self.interval
            ));
        }
        if self.timeout.is_zero() || self.timeout > hi {
            return Err(format!(
                "timeout {:?} is not within 0..={hi:?}",
                self.timeout
            ));
        }
        if in_flight(self) > limits::MONITOR_IN_FLIGHT_MAX {
            return Err(format!(
                "a timeout of {:?} at an interval of {:?} keeps {} probes in flight; at most \
                 {} may be (shorten the timeout or lengthen the interval)",
                self.timeout,
                self.interval,
                in_flight(self),
                limits::MONITOR_IN_FLIGHT_MAX
            ));
        }
        if self.size > limits::DATAGRAM_MAX {
            return Err(format!(
                "size {} is over {}, the largest datagram",
                self.size,
                limits::DATAGRAM_MAX
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err("the name holds a control character: give printable text".into());
        }
        if self.name.len() > limits::MONITOR_NAME_BYTES {
            return Err(format!(
                "the name is {} bytes long; at most {} may be",
                self.name.len(),
                limits::MONITOR_NAME_BYTES
            ));
        }
        Ok(())
    }
}

/// Probes one target may have in flight: its timeout over its interval, plus two.
fn in_flight(t: &Target) -> usize {
    let ratio = t.timeout.as_secs_f64() / t.interval.as_secs_f64().max(1e-9);
    (ratio.ceil().min(1e6) as usize) + 2
}

/// What one target's probes came to, since it was added. (The histograms most targets
/// never fill are made on their first duration: a seed target's counts are a few hundred
/// bytes.)
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests sent, answered, duplicated, forged, bad, refused by the kernel, skipped by
    /// the pacer after a stall, and ICMP errors by kind (`Tally::lost` is not used: see
    /// `lost`).
    pub tally: Tally,
    /// Requests whose timeout passed without a reply (or that the kernel refused).
    pub lost: u64,
    /// Round trips of replies proven by their request's ID (or, for a protocol of test
    /// packets, by sequence number and timestamp).
    pub rtt: Buckets,
    /// Round trips of replies matched by length alone (a server that sends no IDs):
    /// anyone who can guess the length could have sent them. `None` until there is one.
    pub rtt_unverified: Option<Box<Buckets>>,
    /// STAMP: the way there (t2 - t1) and back (t4 - t3), recorded only when both clocks
    /// are known to agree. `None` until there is one.
    pub forward: Option<Box<Buckets>>,
    /// See `forward`.
    pub backward: Option<Box<Buckets>>,
    /// STAMP: replies whose clocks were not both synchronised (their one-way delays were
    /// not recorded).
    pub one_way_unknown: u64,
    /// STAMP: loss split `(forward, backward, unknown)` by the reflector's own count, when
    /// it can be (a stateful reflector, no restart, no forgery).
    pub lost_split: Option<(u64, u64, u64)>,
    /// STAMP: hops on the way there (the TTL sent less the TTL the reflector saw), from the
    /// last reply that said.
    pub hops: Option<u8>,
    /// The DSCP the requests are sent with.
    pub dscp_sent: u8,
    /// STAMP with a CoS TLV: the DSCP the last request arrived with.
    pub dscp_seen: Option<u8>,
    /// STAMP with a CoS TLV: requests that arrived with another DSCP than they were sent.
    pub remarked: u64,
    /// One of the last few probes settled was answered in time.
    pub up: bool,
}

impl Clone for Counts {
    fn clone(&self) -> Self {
        let mut c = Counts::default();
        c.clone_from(self);
        c
    }

    /// Field by field, keeping the histograms already made (a publication reuses them).
    fn clone_from(&mut self, o: &Self) {
        self.tally = o.tally;
        self.lost = o.lost;
        self.rtt = o.rtt;
        self.rtt_unverified.clone_from(&o.rtt_unverified);
        self.forward.clone_from(&o.forward);
        self.backward.clone_from(&o.backward);
        self.one_way_unknown = o.one_way_unknown;
        self.lost_split = o.lost_split;
        self.hops = o.hops;
        self.dscp_sent = o.dscp_sent;
        self.dscp_seen = o.dscp_seen;
        self.remarked = o.remarked;
        self.up = o.up;
    }
}

/// The last counters published, for readers on other threads.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When it was taken.
    pub at: SystemTime,
    /// Every target, with its counters.
    pub targets: Vec<(Arc<Target>, Counts)>,
    /// How late probes were handed to the kernel against their slots, over all targets.
    pub send_lag: Buckets,
    /// The latest any probe was.
    pub send_lag_max: Duration,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            at: SystemTime::now(),
            targets: Vec::new(),
            send_lag: Buckets::default(),
            send_lag_max: Duration::ZERO,
        }
    }
}

/// Where the loop publishes its [`Snapshot`]: taking the last one holds a lock for the copy
/// of one pointer, on either side.
#[derive(Clone, Debug, Default)]
pub struct Board(Arc<Mutex<Arc<Snapshot>>>);

impl Board {
    /// The last snapshot published.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Publishes `snapshot`; returns the one it replaces.
    fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let new = Arc::new(snapshot);
        std::mem::replace(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), new)
    }
}

/// A target being probed.
struct Probe {
    target: Arc<Target>,
    socket: UdpSocket,
    flow: Flow,
    schedule: Schedule,
    counts: Counts,
    session: SessionCount,
    /// The TTL the requests go with, if the kernel says.
    sent_ttl: Option<u8>,
    /// The reflector is this host: one clock.
    same_host: bool,
    /// The last settled probes, newest in bit 0: 1 answered in time.
    recent: u8,
    /// Probes settled so far (answered in time or lost).
    settled: u64,
    /// Bumped when the slot is reused: events for an older target are ignored.
    generation: u32,
}

/// Probes settled before `up` says anything, and how many recent ones it looks at.
const RECENT: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Send,
    Expire,
}

/// How early a probe may leave to share its wake-up with others due just after it (a
/// loop that woke for every one of 10,000 probes a second would spend more on waking than
/// on probing). Its send lag is counted from its slot, early as none.
const SEND_AHEAD: Duration = Duration::from_millis(1);

/// What is due and when, for every target: a min-heap of 16-byte entries (nanoseconds since
/// the watch began; the slot, its generation and the kind packed in one word), two a probe
/// at most, small enough to stay in cache.
struct Agenda {
    epoch: Instant,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Agenda {
    fn new() -> Agenda {
        Agenda {
            epoch: Instant::now(),
            heap: BinaryHeap::new(),
        }
    }

    fn push(&mut self, at: Instant, due: Due, slot: usize, generation: u32) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let word = ((slot as u64) << 32)
            | (u64::from(generation & GENERATION_MASK) << 1)
            | u64::from(due == Due::Expire);
        self.heap.push(Reverse((nanos, word)));
    }

    /// When to wake for the next thing due (a probe: [`SEND_AHEAD`] before its time).
    fn wake_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((nanos, word))| {
            let at = self.epoch + Duration::from_nanos(*nanos);
            if word & 1 == 0 {
                at.checked_sub(SEND_AHEAD).unwrap_or(at)
            } else {
                at
            }
        })
    }

    /// The next thing due at `now` (a probe: within [`SEND_AHEAD`] of it).
    fn pop(&mut self, now: Instant) -> Option<(Due, usize, u32)> {
        let &Reverse((nanos, word)) = self.heap.peek()?;
        let due = if word & 1 == 1 {
            Due::Expire
        } else {
            Due::Send
        };
        let at = self.epoch + Duration::from_nanos(nanos);
        let ahead = if due == Due::Send {
            SEND_AHEAD
        } else {
            Duration::ZERO
        };
        if at > now + ahead {
            return None;
        }
        self.heap.pop();
        Some((due, (word >> 32) as usize, (word as u32) >> 1))
    }
}

/// The generations a slot's entries carry (31 bits: one is the kind).
const GENERATION_MASK: u32 = u32::MAX >> 1;

/// The targets, their sockets and the loop's buffers; see the module's promise.
pub struct Watch {
    stop: Stop,
    poller: Poller,
    /// Boxed: a reload moves thousands of them in and out of the loop, a pointer each.
    probes: Vec<Option<Box<Probe>>>,
    free: Vec<usize>,
    by_target: HashMap<Arc<Target>, usize>,
    due: Agenda,
    replies: RecvBatch,
    request: Vec<u8>,
    state: SocketState,
    ready: Vec<Token>,
    send_lag: Buckets,
    send_lag_max: Duration,
    generations: u32,
    /// The snapshot published before the current one, to be filled again.
    spare: Option<Arc<Snapshot>>,
    /// Targets of a reload, their sockets open, waiting to be admitted.
    #[allow(clippy::vec_box)] // moved a pointer at a time (see `probes`)
    pending: Vec<Box<Probe>>,
    /// A snapshot being filled, the next slot to copy and the entries filled so far.
    filling: Option<(Snapshot, usize, usize)>,
}

/// Targets copied into a snapshot a turn.
const PUBLISH_CHUNK: usize = 2048;

/// A reload made ready off the loop's thread: targets gone, and the new ones with their
/// sockets (see [`Watch::plan`]).
pub struct Plan {
    gone: Vec<Target>,
    #[allow(clippy::vec_box)] // moved a pointer at a time into the loop
    made: Vec<Box<Probe>>,
}

impl Plan {
    /// Targets the plan adds.
    pub fn added(&self) -> usize {
        self.made.len()
    }

    /// Targets the plan drops.
    pub fn removed(&self) -> usize {
        self.gone.len()
    }
}

/// Targets a reload took away, their sockets still open: drop it off the loop's thread.
pub struct Leaving(
    #[allow(dead_code, clippy::vec_box)] Vec<Box<Probe>>,
    #[allow(dead_code)] Vec<Target>,
);

/// New targets admitted to a running watch a turn, at most (each an `epoll_ctl`): a reload
/// of thousands delays no probe by more than a millisecond or two.
pub const ADMIT_PER_TURN: usize = 256;

impl Watch {
    /// A watch of no target yet, ending when `stop` is set.
    pub fn new(stop: &Stop) -> Result<Watch, Error> {
        let poller = Poller::new(stop).map_err(|e| Error::io("cannot wait for replies", e))?;
        // Probes leave on time: the kernel's default timer slack (50 µs) would make each late.
        crate::io::process::precise_timers();
        Ok(Watch {
            stop: stop.clone(),
            poller,
            probes: Vec::new(),
            free: Vec::new(),
            by_target: HashMap::new(),
            due: Agenda::new(),
            replies: RecvBatch::with_slots(8, RECV_BUFFER),
            request: Vec::new(),
            state: SocketState::default(),
            ready: Vec::new(),
            send_lag: Buckets::default(),
            send_lag_max: Duration::ZERO,
            generations: 0,
            spare: None,
            pending: Vec::new(),
            filling: None,
        })
    }

    /// The targets watched now (and those waiting to be admitted).
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.by_target
            .keys()
            .map(|t| &**t)
            .chain(self.pending.iter().map(|p| &*p.target))
    }

    /// Watches `targets` from now on: those already watched keep their counters, those no
    /// longer listed are dropped, new ones start (each at a random point of its first
    /// interval, so that many targets do not probe at once). All or nothing: on an error
    /// (a target the limits refuse, a socket the system will not give) nothing changes.
    /// (A running watch takes a [`Plan`] made off its thread instead: [`Watch::plan`].)
    pub fn set_targets(&mut self, targets: &[Target]) -> Result<(), Error> {
        let current: HashSet<Target> = self.targets().cloned().collect();
        let plan = Self::plan(&current, targets)?;
        drop(self.apply(plan));
        self.admit(usize::MAX)
    }

    /// Checks `targets` and opens the sockets of those not in `current` (what a watch
    /// watches now): the slow part of a reload, done off the loop's thread, changing no
    /// watch. Refused whole when the limits refuse a target, a target is listed twice, or
    /// the files left cannot hold the new ones.
    pub fn plan(current: &HashSet<Target>, targets: &[Target]) -> Result<Plan, Error> {
        if targets.len() > limits::MONITOR_TARGETS_MAX {
            return Err(Error::Invalid(format!(
                "{} targets are too many: at most {} may be watched",
                targets.len(),
                limits::MONITOR_TARGETS_MAX
            )));
        }
        let mut seen = HashSet::new();
        let mut labels = HashSet::new();
        let mut new = Vec::new();
        for t in targets {
            t.check()
                .map_err(|why| Error::Invalid(format!("target {}: {why}", t.name)))?;
            // Two targets of one address, name and protocol would be one series twice.
            if !labels.insert((t.address, t.name.as_str(), t.requests.protocol)) || !seen.insert(t)
            {
                return Err(Error::Invalid(format!(
                    "target {} ({}, {}) is listed twice: give each its own name",
                    t.name,
                    crate::addr::shown(t.address),
                    t.requests.protocol
                )));
            }
            if !current.contains(t) {
                new.push(t);
            }
        }
        let gone: Vec<Target> = current
            .iter()
            .filter(|t| !seen.contains(t))
            .cloned()
            .collect();
        // A target is an open file: the soft limit is raised (to the hard one) for them all.
        crate::io::files::allow_open_files(targets.len() + 256);
        if let Some(left) = crate::io::process::files_left() {
            // A few files kept back for the metrics endpoint and the configuration.
            if new.len() > (left + gone.len()).saturating_sub(32) {
                return Err(Error::Invalid(format!(
                    "{} new targets need as many open files; {} are left (raise `ulimit -n`)",
                    new.len(),
                    left + gone.len()
                )));
            }
        }
        let made = new
            .into_iter()
            .map(Self::open)
            .collect::<Result<Vec<Box<Probe>>, Error>>()?;
        Ok(Plan { gone, made })
    }

    /// Takes `plan` (made against what this watch watches): its gone targets leave now
    /// (their sockets come back, to be closed off the loop's thread: closing thousands
    /// takes tens of milliseconds), its new ones are admitted [`ADMIT_PER_TURN`] a turn, so
    /// that no probe of the others is kept waiting by a large reload.
    pub fn apply(&mut self, plan: Plan) -> Leaving {
        let mut leaving = Vec::with_capacity(plan.gone.len());
        let plan = plan;
        for t in &plan.gone {
            if let Some(i) = self.by_target.remove(t) {
                // Not taken off the poller: closing the socket does that; until then it
                // may wake the loop once for the slot's next target, which reads nothing.
                leaving.extend(self.probes[i].take());
                self.free.push(i);
            } else {
                self.pending.retain(|p| *p.target != *t);
            }
        }
        self.pending.extend(plan.made);
        // The names of the targets gone are freed off the loop's thread too.
        Leaving(leaving, plan.gone)
    }

    /// Admits at most `n` of the targets waiting (their sockets already open): each starts
    /// at a random point of its first interval from now.
    fn admit(&mut self, n: usize) -> Result<(), Error> {
        let n = n.min(self.pending.len());
        // Room for exactly the targets to come (a doubling would leave up to half unused).
        let short = n.saturating_sub(self.free.len());
        self.probes.reserve_exact(short);
        let mut starts = Vec::with_capacity(n);
        for mut probe in self.pending.drain(..n) {
            self.generations = self.generations.wrapping_add(1) & GENERATION_MASK;
            probe.generation = self.generations;
            let i = self.free.pop().unwrap_or_else(|| {
                self.probes.push(None);
                self.probes.len() - 1
            });
            self.poller
                .add(&probe.socket, i as Token)
                .map_err(|e| Error::io("cannot wait for replies", e))?;
            self.by_target.insert(Arc::clone(&probe.target), i);
            starts.push(i);
            self.probes[i] = Some(probe);
        }
        // Times from now, once all are in (adding them takes time of its own).
        let now = Instant::now();
        for i in starts {
            let p = self.probes[i].as_mut().expect("just admitted");
            let interval = p.target.interval;
            let start = now + interval.mul_f64(fastrand::f64());
            p.schedule = Schedule::new(start, 1.0 / interval.as_secs_f64())
                .expect("a checked interval")
                .with_burst(1);
            self.due.push(start, Due::Send, i, p.generation);
        }
        Ok(())
    }

    /// A connected, marked socket and a flow for `t`.
    fn open(t: &Target) -> Result<Box<Probe>, Error> {
        let socket = net::connect(t.address)?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
        SocketState::mark(&socket, t.address, t.requests.tos, t.requests.ttl)?;
        // Replies are read when the loop next wakes: their round trips end when the
        // kernel received them.
        SocketState::arrivals(&socket, ArrivalInfo::Timed);
        let tos = t.requests.tos.unwrap_or(0);
        let mut flow = Flow::new(t.size, in_flight(t) * 4);
        flow.set_protocol(t.requests.protocol, (tos >> 2, tos & 3));
        let same_host = socket
            .local_addr()
            .is_ok_and(|local| local.ip() == t.address.ip());
        Ok(Box::new(Probe {
            target: Arc::new(t.clone()),
            sent_ttl: SocketState::ttl(&socket, t.address),
            socket,
            flow,
            schedule: Schedule::new(Instant::now(), 1.0).expect("one a second"),
            counts: Counts {
                dscp_sent: tos >> 2,
                ..Counts::default()
            },
            session: SessionCount::default(),
            same_host,
            recent: 0,
            settled: 0,
            generation: 0,
        }))
    }

    /// Probes until the stop is set; `between` is called at least once a
    /// [`PUBLISH_EVERY`], after the counters are published to `board` (a reload goes
    /// there: it may call [`Watch::set_targets`]).
    ///
    /// The loop wakes only for what is due (probes, within [`SEND_AHEAD`] of each other,
    /// share a wake-up; timeouts; a publication): replies are read at each wake-up, with the
    /// kernel's own receive time, so that waiting to read them changes no round trip, and
    /// before any timeout due then is applied.
    pub fn run(&mut self, board: &Board, mut between: impl FnMut(&mut Watch)) -> Result<(), Error> {
        let mut next_publish = Instant::now();
        loop {
            // The replies there, first: one may have come before a timeout due now.
            self.poller
                .wait(Some(Duration::ZERO), &mut self.ready)
                .map_err(|e| Error::io("cannot wait for replies", e))?;
            for r in 0..self.ready.len() {
                let i = self.ready[r] as usize;
                self.receive(i);
            }
            if !self.pending.is_empty() {
                self.admit(ADMIT_PER_TURN)?;
            }
            let now = Instant::now();
            if self.stop.is_stopped() {
                self.publish(board);
                return Ok(());
            }
            if now >= next_publish && self.filling.is_none() {
                between(self);
                next_publish = now + PUBLISH_EVERY;
                self.publish_some(board, PUBLISH_CHUNK);
            } else if self.filling.is_some() {
                self.publish_some(board, PUBLISH_CHUNK);
            }
            while let Some((due, i, generation)) = self.due.pop(now) {
                let Some(p) = self.probes.get_mut(i).and_then(Option::as_mut) else {
                    continue;
                };
                if p.generation != generation {
                    continue;
                }
                match due {
                    Due::Send => self.send(i, now),
                    Due::Expire => Self::expire(p, now),
                }
            }
            let mut until = self
                .due
                .wake_at()
                .map_or(next_publish, |at| at.min(next_publish));
            if !self.pending.is_empty() || self.filling.is_some() {
                until = Instant::now(); // more to admit or to copy: the next turn at once
            }
            crate::io::wait::pause(&self.stop, until.saturating_duration_since(Instant::now()));
        }
    }

    /// Sends target `i`'s probe due now (or counts it skipped, after a stall).
    fn send(&mut self, i: usize, now: Instant) {
        let Some(p) = self.probes[i].as_mut() else {
            return;
        };
        let due = p.schedule.due(now + SEND_AHEAD, 1);
        p.counts.tally.skipped = p.schedule.skipped();
        if !due.is_empty() {
            let slot = p.schedule.at(due.start);
            p.schedule.take(1);
            self.request.clear();
            // Stamped as it goes (other probes may have gone before it in this wake-up).
            let seq = p.flow.next_request(&mut self.request, Instant::now());
            p.counts.tally.sent += 1;
            let mut refused = None;
            let out = [Out::at(0, self.request.len())];
            for _ in 0..2 {
                refused = None;
                self.state
                    .send(&p.socket, &[&self.request], &out, |_, why| {
                        refused = Some(why)
                    });
                match refused {
                    // An error the kernel held from an earlier datagram: counted, tried once
                    // more.
                    Some(Refusal::Icmp(kind)) => p.counts.tally.note_icmp(kind),
                    _ => break,
                }
            }
            if refused.is_some() {
                p.counts.tally.not_sent += 1;
                p.flow.abandon(seq);
                Self::settle(p, 1, false);
            } else {
                let lag = Instant::now().saturating_duration_since(slot);
                self.send_lag.record(lag);
                self.send_lag_max = self.send_lag_max.max(lag);
                self.due
                    .push(now + p.target.timeout, Due::Expire, i, p.generation);
            }
        }
        let more = p.target.count.is_none_or(|c| p.counts.tally.sent < c);
        if let (Some(next), true) = (p.schedule.next_at(), more) {
            self.due.push(next, Due::Send, i, p.generation);
        }
    }

    /// Counts target `p`'s probes whose timeout has passed as lost.
    fn expire(p: &mut Probe, now: Instant) {
        let lost = p.flow.expire(now, p.target.timeout) as u64;
        if lost > 0 {
            Self::settle(p, lost, false);
        }
    }

    /// `n` probes of `p` settled, answered in time or not.
    fn settle(p: &mut Probe, n: u64, answered: bool) {
        for _ in 0..n.min(8) {
            p.recent = (p.recent << 1) | u8::from(answered);
        }
        p.settled += n;
        if !answered {
            p.counts.lost += n;
        }
        let mask = (1u8 << RECENT) - 1;
        p.counts.up = p.recent & mask != 0;
        if p.target.requests.protocol.test_packets() {
            let forged = p.counts.tally.forged;
            p.counts.lost_split = match p.session.why_not(forged) {
                // Nothing lost: nothing to split, whatever the reflector.
                _ if p.counts.lost == 0 => Some((0, 0, 0)),
                Some(_) => None,
                None => Some(
                    p.session
                        .split(p.settled, p.settled.saturating_sub(p.counts.lost)),
                ),
            };
        }
    }

    /// Reads target `i`'s replies until none is left (a bounded number of batches).
    fn receive(&mut self, i: usize) {
        let Some(p) = self.probes.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        for _ in 0..limits::RECEIVE_BATCHES_PER_TURN {
            match self.replies.recv(&p.socket) {
                Ok(0) => return,
                Ok(n) => {
                    // The kernel's receive times, on this loop's clock.
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    let since_epoch = wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    for k in 0..n {
                        let (meta, buffer) = self.replies.get(k);
                        let at = meta
                            .received
                            .and_then(|rx| since_epoch.checked_sub(rx))
                            .and_then(|ago| now.checked_sub(ago))
                            .unwrap_or(now);
                        // A timeout that passed before the reply came applies first: the
                        // reply is then late, as it was.
                        let lost = p.flow.expire(at, p.target.timeout) as u64;
                        if lost > 0 {
                            Self::settle(p, lost, false);
                        }
                        for data in meta.segments(buffer) {
                            Self::count(p, data, at);
                        }
                    }
                    if n < self.replies.slots() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An ICMP error (or a forged one): counted, never fatal; any other
                    // error of a connected socket is counted as other.
                    p.counts
                        .tally
                        .note_icmp(IcmpError::of(&e).unwrap_or(IcmpError::Other));
                    return;
                }
            }
        }
    }

    /// One datagram from target `p`'s address.
    fn count(p: &mut Probe, data: &[u8], at: Instant) {
        let outcome = p.flow.on_reply(data, at);
        let revoked = p.flow.take_revoked();
        if revoked.answers > 0 {
            // Counters only go up: answers taken on their length and now proven forged
            // are counted forged too (they stay in `replies`).
            p.counts.tally.forged += revoked.answers;
        }
        let counts = &mut p.counts;
        counts
            .tally
            .count(outcome, &mut counts.rtt, &mut counts.rtt_unverified);
        if let Outcome::Answer {
            seq, late, stamp, ..
        } = outcome
        {
            if !late {
                Self::settle(p, 1, true);
            }
            if let Some(s) = stamp {
                let counts = &mut p.counts;
                let agreed =
                    p.same_host || (s.reflector_error.synchronized && s.sender_error.synchronized);
                let (fwd, back) = (s.forward_nanos(), s.backward_nanos());
                if agreed && fwd >= 0 && back >= 0 {
                    Record::record(&mut counts.forward, Duration::from_nanos(fwd as u64));
                    Record::record(&mut counts.backward, Duration::from_nanos(back as u64));
                } else {
                    counts.one_way_unknown += 1;
                }
                if let (Some(sent), true) = (p.sent_ttl, s.ttl != 0) {
                    counts.hops = Some(sent.saturating_sub(s.ttl));
                }
                if let Some(cos) = s.cos {
                    counts.dscp_seen = Some(cos.dscp);
                    counts.remarked += u64::from(cos.dscp != counts.dscp_sent);
                }
                p.session.observe(seq, s.reflector_seq);
            }
        }
    }

    /// Copies the counters of up to `n` more targets into the snapshot being filled
    /// (begun, if none is, into the snapshot published before the last, in place, when no
    /// reader holds it any longer: no allocation once the targets are settled); publishes
    /// it once every target is in. A copy a few thousand targets at a time keeps any
    /// probe from waiting on it for more than a fraction of a millisecond.
    fn publish_some(&mut self, board: &Board, n: usize) {
        let (mut snapshot, mut slot, mut k) = match self.filling.take() {
            Some(f) => f,
            None => {
                let mut snapshot = self
                    .spare
                    .take()
                    .and_then(|s| Arc::try_unwrap(s).ok())
                    .unwrap_or_default();
                let want = self.by_target.len();
                snapshot
                    .targets
                    .reserve_exact(want.saturating_sub(snapshot.targets.len()));
                (snapshot, 0, 0)
            }
        };
        let targets = &mut snapshot.targets;
        let end = slot.saturating_add(n).min(self.probes.len());
        for p in self.probes[slot..end].iter().flatten() {
            match targets.get_mut(k) {
                Some((t, c)) => {
                    if !Arc::ptr_eq(t, &p.target) {
                        *t = Arc::clone(&p.target);
                    }
                    c.clone_from(&p.counts);
                }
                None => targets.push((Arc::clone(&p.target), p.counts.clone())),
            }
            k += 1;
        }
        slot = end;
        if slot < self.probes.len() {
            self.filling = Some((snapshot, slot, k));
            return;
        }
        targets.truncate(k);
        snapshot.at = SystemTime::now();
        snapshot.send_lag = self.send_lag;
        snapshot.send_lag_max = self.send_lag_max;
        self.spare = Some(board.publish(snapshot));
    }

    /// Publishes every target's counters now (the last publication of a run).
    fn publish(&mut self, board: &Board) {
        self.publish_some(board, usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::engine::tests::seed_server;

    fn target(address: SocketAddr, name: &str) -> Target {
        Target {
            address,
            name: name.into(),
            requests: Requests::default(),
            size: 64,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            count: None,
        }
    }

    #[test]
    fn probes_targets_and_keeps_the_counters_of_those_that_stay() -> Result<(), Error> {
        let server = seed_server().map_err(|e| Error::io("server", e))?;
        // Nothing listens on a port just freed: its probes are lost (port unreachable).
        let silent = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| Error::io("port", e))?;
        let stop = Stop::new();
        let mut watch = Watch::new(&stop)?;
        let a = target(server, "a");
        let b = target(silent, "b");
        watch.set_targets(&[a.clone(), b.clone()])?;
        let board = Board::default();
        let started = Instant::now();
        let mut reloaded = false;
        watch.run(&board, |w| {
            let elapsed = started.elapsed();
            if elapsed > Duration::from_millis(600) && !reloaded {
                reloaded = true;
                w.set_targets(std::slice::from_ref(&a)).expect("a reload");
            }
            if elapsed > Duration::from_millis(1200) {
                stop.stop();
            }
        })?;
        let snapshot = board.latest();
        assert_eq!(snapshot.targets.len(), 1);
        let (t, c) = &snapshot.targets[0];
        assert_eq!(t.name, "a");
        // About 60 probes at 20 ms over 1.2 s: the counters kept through the reload.
        assert!(c.tally.sent > 40, "{c:?}");
        assert_eq!(c.tally.received, c.rtt.count());
        assert!(c.tally.sent - c.tally.received <= 2, "{c:?}");
        assert!(c.up);
        assert!(snapshot.send_lag_max < Duration::from_millis(100));
        Ok(())
    }

    #[test]
    fn a_refused_target_changes_nothing() -> Result<(), Error> {
        let stop = Stop::new();
        let mut watch = Watch::new(&stop)?;
        let a = target("127.0.0.1:9".parse().expect("an address"), "a");
        watch.set_targets(std::slice::from_ref(&a))?;
        let mut bad = a.clone();
        bad.name = "bad".into();
        bad.interval = Duration::from_micros(1);
        assert!(watch.set_targets(&[bad]).is_err());
        assert_eq!(watch.targets().count(), 1);
        assert!(watch.set_targets(&[a.clone(), a.clone()]).is_err());
        assert_eq!(watch.targets().count(), 1);
        Ok(())
    }
}
