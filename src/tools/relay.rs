//! `udpkit relay`: a UDP impairment proxy, what netem does in the kernel, without root.
//! Each client source gets its own upstream socket, so replies find their way back
//! (multiplexing by port again); impairments apply per direction.
//!
//! Promise: every datagram is counted once per direction as forwarded, dropped (by the
//! impairments, a full queue, the rate limit or a refused session) or (at exit) still
//! queued, and what the kernel dropped before the relay saw it is counted too
//! (`SO_MEMINFO`). Nothing that arrives can end it or grow it without bound: sessions are
//! bounded by [`MAX_SESSIONS`] and by the open files the process may hold, a flood of new
//! sources can evict only sessions that never sent a second datagram, one client prefix
//! holds at most 1/[`limits::RELAY_SESSIONS_PREFIX_SHARE`] of the sessions (so one source
//! never locks out another), the delay queue is
//! bounded in bytes, ICMP errors are counted. Beyond loopback, what it sends to each
//! client prefix is rate-limited as the server's replies are, so it cannot be used as a
//! reflector. The cost of a datagram does not grow with idle sessions (epoll, Linux).
//! It refuses to forward to itself.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::io::datagram::{Destination, RecvBatch};
use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::state::{Options, Out, Refusal, SocketState};
use crate::io::wait::{Poller, Token};
use crate::limits;
use crate::shape::impair::{Settings, Stage};
use crate::shape::ratelimit::{Prefix, RateLimit, RateLimiter};
use crate::wire::RECV_BUFFER;
use crate::{Error, Stop, addr};

/// Which traffic the impairments apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Requests, client to server.
    Up,
    /// Replies, server to client.
    Down,
    /// Both ways.
    Both,
}

/// How to relay.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where clients send.
    pub listen: SocketAddr,
    /// The server each session forwards to.
    pub to: SocketAddr,
    /// What is done to the traffic on its way (loss, duplication, delay, ...).
    pub impair: Settings,
    /// Which traffic the impairments apply to.
    pub direction: Direction,
    /// Seed for the impairments' choices (the same seed, the same choices).
    pub seed: Option<u64>,
    /// A session with no traffic for this long is closed.
    pub idle: Duration,
    /// Bytes the delay queue may hold; datagrams that do not fit are dropped and counted.
    pub queue_bytes: usize,
    /// Datagrams a second sent to each client prefix (as the server's `--rate-limit`): by
    /// default on beyond loopback.
    pub rate_limit: RateLimit,
    /// Impair only datagrams of at least this many bytes; smaller ones pass clean and
    /// uncounted by the impairments (0: all are impaired).
    pub impair_from: usize,
}

impl Config {
    /// A clean relay from `listen` to `to`, with the defaults.
    pub fn new(listen: SocketAddr, to: SocketAddr) -> Self {
        Config {
            listen,
            to,
            impair: Settings::default(),
            direction: Direction::Both,
            seed: None,
            idle: Duration::from_secs(60),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            rate_limit: RateLimit::Auto,
            impair_from: 0,
        }
    }
}

/// Sessions open at once, at most (fewer where the open-file limit is lower).
pub const MAX_SESSIONS: usize = limits::RELAY_SESSIONS;

/// The delay queue's bound by default: 64 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// A session that has carried only one datagram from its client is closed after this long
/// idle (or the configured idle time, if shorter), and can be evicted by a newcomer.
const UNCONFIRMED_IDLE: Duration = Duration::from_secs(5);

/// Open files kept free for everything else the process does.
const SPARE_FILES: usize = 32;

/// The listening socket's token; a session's is its index.
const LISTENER: Token = u64::MAX - 1;

/// One leg's counters: requests (up) or replies (down).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Leg {
    /// Datagrams that arrived on this leg.
    pub received: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Dropped on purpose (`--drop`).
    pub dropped: u64,
    /// Extra copies sent (`--duplicate`).
    pub duplicated: u64,
    /// Datagrams held back and sent after later ones (`--reorder`).
    pub reordered: u64,
    /// Sends the kernel refused (or no session to send through).
    pub failed: u64,
    /// Dropped because the delay queue was full.
    pub queue_full: u64,
    /// Withheld by the rate limit (down: to a client prefix over its budget).
    pub rate_limited: u64,
    /// Dropped by the kernel before the relay read them (full receive buffers).
    pub kernel_drops: u64,
    /// ICMP errors reported on this direction's sockets.
    pub icmp_errors: u64,
}

/// What the relay did.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Requests, clients to the server.
    pub up: Leg,
    /// Replies, the server to clients.
    pub down: Leg,
    /// Sessions opened (one a client address).
    pub sessions_opened: u64,
    /// Sessions closed after going idle.
    pub sessions_expired: u64,
    /// Datagrams from new sources refused: the session table (or open files) was full.
    pub sessions_refused: u64,
    /// Sessions of one datagram closed to make room for a new source.
    pub sessions_evicted: u64,
    /// The most sessions this relay may hold, given the open-file limit.
    pub max_sessions: u64,
    /// Datagrams still in the delay queue when the relay stopped.
    pub queued_at_exit: u64,
    /// The most bytes the delay queue held at once.
    pub queue_peak_bytes: u64,
}

struct Session {
    client: SocketAddr,
    upstream: UdpSocket,
    last_active: Instant,
    /// Datagrams from the client so far.
    from_client: u64,
    /// The address the client sent to: replies go out from it.
    destination: Option<Destination>,
}

impl Session {
    fn confirmed(&self) -> bool {
        self.from_client > 1
    }
}

/// A datagram in an impairment stage: the client it belongs to, and its bytes.
type Item = (SocketAddr, Vec<u8>);

/// A bound relay, ready to run.
pub struct Relay {
    config: Config,
    listener: UdpSocket,
    local: SocketAddr,
    max_sessions: usize,
    /// The counters as last published by `run` (once a second, and at its end).
    live: std::sync::Mutex<Counters>,
}

impl Relay {
    /// Binds the listening address; refuses a target that is the relay itself.
    pub fn bind(config: Config) -> Result<Self, Error> {
        let listener = net::bind(config.listen, false, "--listen HOST:PORT")?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
        let local = net::local_addr(&listener)?;
        if forwards_to_itself(local, config.to) {
            return Err(Error::Invalid(format!(
                "the relay would forward to itself: it listens on {} and --to is {}; give \
                 the server's address",
                addr::shown(local),
                addr::shown(config.to)
            )));
        }
        SocketState::new(
            &listener,
            &Options {
                receive_buffer: Some(net::SERVER_RECEIVE_BUFFER),
                reply_from: Some(local),
                ..Options::default()
            },
        );
        Ok(Relay {
            live: std::sync::Mutex::new(Counters::default()),
            max_sessions: MAX_SESSIONS.min(open_file_budget()),
            config,
            listener,
            local,
        })
    }

    /// The address clients send to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The most sessions it will hold at once.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// The counters of the run going on, at most a second old (what a metrics endpoint
    /// shows); all zero before it starts.
    pub fn counters(&self) -> Counters {
        *self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relays until `stop` is set; returns the counters.
    pub fn run(&self, stop: &Stop) -> Result<Counters, Error> {
        let c = &self.config;
        // One impairment stage a direction; the queue's bytes are shared out between the
        // directions that are impaired.
        let impaired = [c.direction != Direction::Down, c.direction != Direction::Up];
        let share = c.queue_bytes / impaired.iter().filter(|i| **i).count().max(1);
        let stage = |applies: bool, offset: u64| {
            Stage::new(
                applies.then_some(c.impair),
                c.seed.map(|s| s.wrapping_add(offset)),
                share,
            )
        };
        let limit = match c.rate_limit {
            RateLimit::Off => None,
            RateLimit::PerSecond(rate) => Some(rate),
            RateLimit::Auto if self.local.ip().is_loopback() => None,
            RateLimit::Auto => Some(crate::shape::ratelimit::DEFAULT_PER_SECOND),
        };
        let mut state = State {
            relay: self,
            up: stage(impaired[0], 0),
            down: stage(impaired[1], 1),
            outbox: Vec::new(),
            state: SocketState::default(),
            counters: Counters {
                max_sessions: self.max_sessions as u64,
                ..Counters::default()
            },
            sessions: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            held: HashMap::new(),
            limiter: limit.map(|rate| RateLimiter::new(rate, rate)),
            poller: {
                let mut poller = Poller::new(stop).map_err(|e| Error::io("cannot wait", e))?;
                poller
                    .add(&self.listener, LISTENER)
                    .map_err(|e| Error::io("cannot watch the listening socket", e))?;
                poller
            },
        };
        let mut rx = RecvBatch::new(RECV_BUFFER);
        let mut last_sweep = Instant::now();
        let mut ready = Vec::new();

        while !stop.is_stopped() {
            let now = Instant::now();
            state.release_due(now);
            if now >= last_sweep + Duration::from_secs(1) {
                last_sweep = now;
                state.sweep(now);
                // Once a second, for readers (a metrics endpoint): a copy, never a wait.
                let counters = state.counters();
                *self.live.lock().unwrap_or_else(|e| e.into_inner()) = counters;
            }
            let mut wait = Duration::from_millis(100);
            for due in [state.up.next_due(), state.down.next_due()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(due.saturating_duration_since(now));
            }
            state
                .poller
                .wait(Some(wait), &mut ready)
                .map_err(|e| Error::io("cannot wait", e))?;
            // Each ready socket gets one batch (a fair share); whoever still has more is read
            // on the next turn (level-triggered), so requests cannot starve replies.
            for &token in &ready {
                match token {
                    LISTENER => state.read_clients(&mut rx)?,
                    i => state.read_server(i as usize, &mut rx)?,
                }
            }
        }
        let counters = state.counters();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = counters;
        Ok(counters)
    }
}

/// Everything a running relay holds.
struct State<'a> {
    relay: &'a Relay,
    /// The impairment stages of requests (up) and replies (down).
    up: Stage<Item>,
    down: Stage<Item>,
    /// What a stage gave out to send, reused.
    outbox: Vec<Item>,
    /// Sends one datagram at a time (the relay's sockets ask for nothing more).
    state: SocketState,
    counters: Counters,
    /// A slab: a closed session leaves a hole that the next one fills.
    sessions: Vec<Option<Session>>,
    free: Vec<usize>,
    by_client: HashMap<SocketAddr, usize>,
    /// Sessions each client prefix holds (a prefix holds at most `share()` of them).
    held: HashMap<Prefix, usize>,
    limiter: Option<RateLimiter>,
    poller: Poller,
}

impl State<'_> {
    /// The counters so far, with the kernel's drop counts and the stages' own.
    fn counters(&self) -> Counters {
        let mut counters = self.counters;
        counters.up.kernel_drops += net::kernel_drops(&self.relay.listener).unwrap_or(0);
        for s in self.sessions.iter().flatten() {
            counters.down.kernel_drops += net::kernel_drops(&s.upstream).unwrap_or(0);
        }
        for (leg, stage) in [
            (&mut counters.up, &self.up),
            (&mut counters.down, &self.down),
        ] {
            let c = stage.counts();
            leg.dropped = c.dropped;
            leg.duplicated = c.duplicated;
            leg.reordered = c.reordered;
            leg.queue_full = c.queue_full;
        }
        counters.queue_peak_bytes = self.up.counts().peak_bytes + self.down.counts().peak_bytes;
        counters.queued_at_exit = (self.up.pending() + self.down.pending()) as u64;
        counters
    }

    fn flow(&mut self, up: bool) -> &mut Leg {
        if up {
            &mut self.counters.up
        } else {
            &mut self.counters.down
        }
    }

    /// Sends what the stages have due.
    fn release_due(&mut self, now: Instant) {
        for up in [true, false] {
            let mut out = std::mem::take(&mut self.outbox);
            let stage = if up { &mut self.up } else { &mut self.down };
            stage.release(now, &mut |item| out.push(item));
            for (client, data) in out.drain(..) {
                self.send(up, client, &data);
            }
            self.outbox = out;
        }
    }

    /// Closes idle sessions.
    fn sweep(&mut self, now: Instant) {
        let idle = self.relay.config.idle;
        for i in 0..self.sessions.len() {
            let expired = self.sessions[i].as_ref().is_some_and(|s| {
                let limit = if s.confirmed() {
                    idle
                } else {
                    idle.min(UNCONFIRMED_IDLE)
                };
                now >= s.last_active + limit
            });
            if expired {
                self.close(i);
                self.counters.sessions_expired += 1;
            }
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(s) = self.sessions[i].take() {
            // What the kernel dropped on this socket dies with it: count it now.
            self.counters.down.kernel_drops += net::kernel_drops(&s.upstream).unwrap_or(0);
            self.poller.remove(&s.upstream);
            self.by_client.remove(&s.client);
            let prefix = Prefix::of(s.client.ip());
            if let Some(n) = self.held.get_mut(&prefix) {
                *n -= 1;
                if *n == 0 {
                    self.held.remove(&prefix);
                }
            }
            self.free.push(i);
        }
    }

    fn open_sessions(&self) -> usize {
        self.sessions.len() - self.free.len()
    }

    /// The sessions one client prefix may hold: a share of the table, so that one source
    /// never fills it.
    fn share(&self) -> usize {
        (self.relay.max_sessions / limits::RELAY_SESSIONS_PREFIX_SHARE).max(1)
    }

    /// The longest idle session that never sent a second datagram, of `prefix` if given.
    fn evictable(&self, prefix: Option<Prefix>) -> Option<usize> {
        self.sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
            .filter(|(_, s)| !s.confirmed())
            .filter(|(_, s)| prefix.is_none_or(|p| Prefix::of(s.client.ip()) == p))
            .min_by_key(|(_, s)| s.last_active)
            .map(|(i, _)| i)
    }

    /// The session for a new client, or `None` (counted) when none can be had.
    fn open(&mut self, client: SocketAddr, now: Instant) -> Option<usize> {
        let prefix = Prefix::of(client.ip());
        // Only a session that never sent a second datagram may make room, the longest
        // idle first: a flood of new sources cannot push out real clients. A prefix at its
        // share makes room among its own sessions only.
        let at_share = self.held.get(&prefix).copied().unwrap_or(0) >= self.share();
        let full = self.open_sessions() >= self.relay.max_sessions;
        if at_share || full {
            match self.evictable(at_share.then_some(prefix)) {
                Some(i) => {
                    self.close(i);
                    self.counters.sessions_evicted += 1;
                }
                None => {
                    self.counters.sessions_refused += 1;
                    return None;
                }
            }
        }
        let upstream = match net::connect(self.relay.config.to).and_then(|s| {
            s.set_nonblocking(true)
                .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
            Ok(s)
        }) {
            Ok(s) => s,
            // Out of files or ports: refuse this source, keep relaying for the others.
            Err(_) => {
                self.counters.sessions_refused += 1;
                return None;
            }
        };
        let i = self.free.pop().unwrap_or_else(|| {
            self.sessions.push(None);
            self.sessions.len() - 1
        });
        if self.poller.add(&upstream, i as Token).is_err() {
            self.free.push(i);
            self.counters.sessions_refused += 1;
            return None;
        }
        self.sessions[i] = Some(Session {
            client,
            upstream,
            last_active: now,
            from_client: 0,
            destination: None,
        });
        self.by_client.insert(client, i);
        *self.held.entry(prefix).or_insert(0) += 1;
        self.counters.sessions_opened += 1;
        Some(i)
    }

    /// Reads one batch (a fair share) of requests from clients.
    fn read_clients(&mut self, rx: &mut RecvBatch) -> Result<(), Error> {
        let relay = self.relay;
        let n = receive(rx, &relay.listener, &mut self.counters.up.icmp_errors)
            .map_err(|e| Error::io(format!("cannot receive on {}", relay.local), e))?;
        for i in 0..n {
            let (meta, data) = rx.get(i);
            let Some(client) = meta.source else { continue };
            self.counters.up.received += 1;
            let now = Instant::now();
            let index = match self.by_client.get(&client) {
                Some(&i) => i,
                None => match self.open(client, now) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let session = self.sessions[index].as_mut().expect("a live session");
            session.last_active = now;
            session.from_client += 1;
            session.destination = meta.destination;
            self.impair(true, client, data);
        }
        Ok(())
    }

    /// Reads one batch (a fair share) of replies from the server for session `i`.
    fn read_server(&mut self, i: usize, rx: &mut RecvBatch) -> Result<(), Error> {
        let Some(session) = self.sessions.get(i).and_then(Option::as_ref) else {
            return Ok(());
        };
        let to = self.relay.config.to;
        let n = receive(rx, &session.upstream, &mut self.counters.down.icmp_errors)
            .map_err(|e| Error::io(format!("cannot receive from {to}"), e))?;
        let client = session.client;
        if let Some(session) = self.sessions[i].as_mut() {
            session.last_active = Instant::now();
        }
        for k in 0..n {
            self.counters.down.received += 1;
            self.impair(false, client, rx.get(k).1);
        }
        Ok(())
    }

    /// Passes a datagram through one direction's stage and sends what comes out now.
    fn impair(&mut self, up: bool, client: SocketAddr, data: &[u8]) {
        let stage = if up { &mut self.up } else { &mut self.down };
        if stage.is_clean() || data.len() < self.relay.config.impair_from {
            self.send(up, client, data);
            return;
        }
        let mut out = std::mem::take(&mut self.outbox);
        stage.push(Instant::now(), (client, data.to_vec()), &mut |item| {
            out.push(item)
        });
        for (client, data) in out.drain(..) {
            self.send(up, client, &data);
        }
        self.outbox = out;
    }

    /// Sends one datagram on its way: up through the client's session, down to the client
    /// from the address it sent to (within the client prefix's rate limit).
    fn send(&mut self, up: bool, client: SocketAddr, data: &[u8]) {
        let session = self
            .by_client
            .get(&client)
            .and_then(|&i| self.sessions[i].as_ref());
        let (socket, out) = match (up, session) {
            (true, Some(s)) => (&s.upstream, Out::at(0, data.len())),
            (false, _) => {
                if let Some(limiter) = &mut self.limiter
                    && !limiter.allow(client.ip(), Instant::now())
                {
                    self.counters.down.rate_limited += 1;
                    return;
                }
                (
                    &self.relay.listener,
                    Out {
                        to: Some(client),
                        from: session.and_then(|s| s.destination),
                        ..Out::at(0, data.len())
                    },
                )
            }
            (true, None) => {
                self.flow(up).failed += 1;
                return;
            }
        };
        let mut icmp = false;
        let totals = self.state.send(socket, &[data], &[out], |_, why| {
            icmp = matches!(why, Refusal::Icmp(_));
        });
        let leg = self.flow(up);
        leg.forwarded += totals.sent;
        leg.failed += totals.failed;
        leg.icmp_errors += u64::from(icmp);
    }
}

/// One batch from `socket`: none when nothing is queued, and none (counted in
/// `icmp_errors`) when the kernel hands back an ICMP error instead (a closed port, or a
/// forged error: never fatal).
fn receive(rx: &mut RecvBatch, socket: &UdpSocket, icmp_errors: &mut u64) -> io::Result<usize> {
    match rx.recv(socket) {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) if IcmpError::of(&e).is_some() => {
            *icmp_errors += 1;
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Whether a relay listening on `local` would send what it forwards to itself.
fn forwards_to_itself(local: SocketAddr, to: SocketAddr) -> bool {
    if to.port() != local.port() {
        return false;
    }
    let (l, t) = (local.ip().to_canonical(), to.ip().to_canonical());
    if l == t {
        return true;
    }
    // A wildcard listener receives on every local address: is `to` one of them?
    l.is_unspecified()
        && (t.is_loopback() || t.is_unspecified() || UdpSocket::bind(SocketAddr::new(t, 0)).is_ok())
}

/// How many sessions the open-file limit leaves room for (one file each), keeping some
/// spare; `MAX_SESSIONS` where it cannot be read.
fn open_file_budget() -> usize {
    crate::io::process::files_left()
        .map_or(MAX_SESSIONS, |left| left.saturating_sub(SPARE_FILES).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loops_back_to_itself_are_seen_up_front() {
        assert!(forwards_to_itself(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9000")
        ));
        assert!(forwards_to_itself(
            addr("0.0.0.0:9000"),
            addr("127.0.0.1:9000")
        ));
        assert!(forwards_to_itself(
            addr("0.0.0.0:9000"),
            addr("127.0.0.2:9000")
        ));
        assert!(forwards_to_itself(addr("[::]:9000"), addr("[::1]:9000")));
        assert!(!forwards_to_itself(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9001")
        ));
        assert!(!forwards_to_itself(
            addr("127.0.0.1:9000"),
            addr("127.0.0.2:9000")
        ));
    }
}
