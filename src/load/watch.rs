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
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::io::datagram::RecvBatch;
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::state::{Out, Refusal, SocketState};
use crate::io::wait::{Poller, Token};
use crate::limits;
use crate::load::engine::Requests;
use crate::load::flow::{Flow, Outcome, Tally};
use crate::load::pace::Schedule;
use crate::measure::buckets::Buckets;
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

/// What one target's probes came to, since it was added.
#[derive(Clone, Debug, Default)]
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
    /// anyone who can guess the length could have sent them.
    pub rtt_unverified: Buckets,
    /// STAMP: the way there (t2 - t1) and back (t4 - t3), recorded only when both clocks
    /// are known to agree.
    pub forward: Buckets,
    /// See `forward`.
    pub backward: Buckets,
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

    fn publish(&self, snapshot: Snapshot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Send,
    Expire,
}

/// The targets, their sockets and the loop's buffers; see the module's promise.
pub struct Watch {
    stop: Stop,
    poller: Poller,
    probes: Vec<Option<Probe>>,
    free: Vec<usize>,
    by_target: HashMap<Arc<Target>, usize>,
    due: BinaryHeap<Reverse<(Instant, Due, usize, u32)>>,
    replies: RecvBatch,
    request: Vec<u8>,
    state: SocketState,
    ready: Vec<Token>,
    send_lag: Buckets,
    send_lag_max: Duration,
    generations: u32,
}

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
            due: BinaryHeap::new(),
            replies: RecvBatch::with_slots(8, RECV_BUFFER),
            request: Vec::new(),
            state: SocketState::default(),
            ready: Vec::new(),
            send_lag: Buckets::default(),
            send_lag_max: Duration::ZERO,
            generations: 0,
        })
    }

    /// The targets watched now.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.by_target.keys().map(|t| &**t)
    }

    /// Watches `targets` from now on: those already watched keep their counters, those no
    /// longer listed are dropped, new ones start (each at a random point of its first
    /// interval, so that many targets do not probe at once). All or nothing: on an error
    /// (a target the limits refuse, a socket the system will not give) nothing changes.
    pub fn set_targets(&mut self, targets: &[Target]) -> Result<(), Error> {
        if targets.len() > limits::MONITOR_TARGETS_MAX {
            return Err(Error::Invalid(format!(
                "{} targets are too many: at most {} may be watched",
                targets.len(),
                limits::MONITOR_TARGETS_MAX
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut new = Vec::new();
        for t in targets {
            t.check()
                .map_err(|why| Error::Invalid(format!("target {}: {why}", t.name)))?;
            if !seen.insert(t) {
                return Err(Error::Invalid(format!(
                    "target {} is listed twice with the same settings",
                    t.name
                )));
            }
            if !self.by_target.contains_key(t) {
                new.push(t);
            }
        }
        // Sockets first: if the system refuses one, nothing has changed yet. A target is
        // an open file: the soft limit is raised (to the hard one) for them all.
        crate::io::files::allow_open_files(targets.len() + 256);
        let leaving = self
            .by_target
            .keys()
            .filter(|t| !seen.contains(&***t))
            .count();
        if let Some(left) = crate::io::process::files_left() {
            // A few files kept back for the metrics endpoint and the configuration.
            if new.len() > (left + leaving).saturating_sub(32) {
                return Err(Error::Invalid(format!(
                    "{} new targets need as many open files; {} are left (raise `ulimit -n`)",
                    new.len(),
                    left + leaving
                )));
            }
        }
        let mut made = Vec::with_capacity(new.len());
        for t in new {
            made.push(Self::open(t)?);
        }
        // Then the change.
        let gone: Vec<Arc<Target>> = self
            .by_target
            .keys()
            .filter(|t| !seen.contains(&***t))
            .cloned()
            .collect();
        for t in gone {
            if let Some(i) = self.by_target.remove(&t) {
                if let Some(p) = self.probes[i].take() {
                    self.poller.remove(&p.socket);
                }
                self.free.push(i);
            }
        }
        let now = Instant::now();
        for mut probe in made {
            self.generations = self.generations.wrapping_add(1);
            probe.generation = self.generations;
            let i = self.free.pop().unwrap_or_else(|| {
                self.probes.push(None);
                self.probes.len() - 1
            });
            self.poller
                .add(&probe.socket, i as Token)
                .map_err(|e| Error::io("cannot wait for replies", e))?;
            let interval = probe.target.interval;
            let start = now + interval.mul_f64(fastrand::f64());
            probe.schedule = Schedule::new(start, 1.0 / interval.as_secs_f64())
                .expect("a checked interval")
                .with_burst(1);
            self.due
                .push(Reverse((start, Due::Send, i, probe.generation)));
            self.by_target.insert(Arc::clone(&probe.target), i);
            self.probes[i] = Some(probe);
        }
        Ok(())
    }

    /// A connected, marked socket and a flow for `t`.
    fn open(t: &Target) -> Result<Probe, Error> {
        let socket = net::connect(t.address)?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
        SocketState::mark(&socket, t.address, t.requests.tos, t.requests.ttl)?;
        let tos = t.requests.tos.unwrap_or(0);
        let mut flow = Flow::new(t.size, in_flight(t) * 4);
        flow.set_protocol(t.requests.protocol, (tos >> 2, tos & 3));
        let same_host = socket
            .local_addr()
            .is_ok_and(|local| local.ip() == t.address.ip());
        Ok(Probe {
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
        })
    }

    /// Probes until the stop is set; `between` is called at least once a
    /// [`PUBLISH_EVERY`], after the counters are published to `board` (a reload goes
    /// there: it may call [`Watch::set_targets`]).
    pub fn run(&mut self, board: &Board, mut between: impl FnMut(&mut Watch)) -> Result<(), Error> {
        let mut next_publish = Instant::now();
        loop {
            let now = Instant::now();
            if self.stop.is_stopped() {
                self.publish(board);
                return Ok(());
            }
            if now >= next_publish {
                self.publish(board);
                between(self);
                next_publish = Instant::now() + PUBLISH_EVERY;
            }
            // What is due.
            while let Some(&Reverse((at, due, i, generation))) = self.due.peek() {
                if at > now {
                    break;
                }
                self.due.pop();
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
            let until = self
                .due
                .peek()
                .map_or(next_publish, |Reverse((at, ..))| (*at).min(next_publish));
            self.poller
                .wait(
                    Some(until.saturating_duration_since(Instant::now())),
                    &mut self.ready,
                )
                .map_err(|e| Error::io("cannot wait for replies", e))?;
            for r in 0..self.ready.len() {
                let i = self.ready[r] as usize;
                self.receive(i);
            }
        }
    }

    /// Sends target `i`'s probe due now (or counts it skipped, after a stall).
    fn send(&mut self, i: usize, now: Instant) {
        let Some(p) = self.probes[i].as_mut() else {
            return;
        };
        let due = p.schedule.due(now, 1);
        p.counts.tally.skipped = p.schedule.skipped();
        if !due.is_empty() {
            let slot = p.schedule.at(due.start);
            p.schedule.take(1);
            self.request.clear();
            let seq = p.flow.next_request(&mut self.request, now);
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
                self.due.push(Reverse((
                    now + p.target.timeout,
                    Due::Expire,
                    i,
                    p.generation,
                )));
            }
        }
        let more = p.target.count.is_none_or(|c| p.counts.tally.sent < c);
        if let (Some(next), true) = (p.schedule.next_at(), more) {
            self.due.push(Reverse((next, Due::Send, i, p.generation)));
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
                    let at = Instant::now();
                    for k in 0..n {
                        let (meta, buffer) = self.replies.get(k);
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
                    counts.forward.record(Duration::from_nanos(fwd as u64));
                    counts.backward.record(Duration::from_nanos(back as u64));
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

    /// Publishes a copy of every target's counters.
    fn publish(&self, board: &Board) {
        let mut targets = Vec::with_capacity(self.by_target.len());
        for p in self.probes.iter().flatten() {
            targets.push((Arc::clone(&p.target), p.counts.clone()));
        }
        board.publish(Snapshot {
            at: SystemTime::now(),
            targets,
            send_lag: self.send_lag,
            send_lag_max: self.send_lag_max,
        });
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
