//! The server's side of `udpkit stream`, beside whatever protocol it speaks: streams
//! started by a return-routable handshake, their data counted where it arrives
//! ([`Arrivals`]), queries answered with the counts, and reverse streams sent from the
//! server's own port to the client's address (so they pass NAT).
//!
//! Promise: no state for a source that has not shown it receives at its address: a start
//! is answered with a cookie (keyed hash of the source, the stream ID and the time, never
//! stored), and only a start that carries it back creates a stream. Streams are bounded
//! ([`MAX_STREAMS`] a worker, forgotten after [`IDLE`] of silence); a reverse stream
//! stops when its client has not queried for [`KEEPALIVE`] (a client that goes away, or
//! never was, gets no flood) and at most [`MAX_REVERSE`] run at once. Every answer is
//! written over its request and is no longer (`wire::stream`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Stop;
use crate::io::datagram::{BATCH, Sender, Transmit};
use crate::io::socket as net;
use crate::load::arrivals::Arrivals;
use crate::wire::stream::{Counters, Message, Plan};

/// Streams one worker keeps at once; a start beyond is not accepted.
pub const MAX_STREAMS: usize = 64;

/// Reverse streams sending at once, per worker.
pub const MAX_REVERSE: usize = 4;

/// A stream not heard from this long is forgotten.
pub const IDLE: Duration = Duration::from_secs(10);

/// A reverse stream whose client has not queried this long stops sending.
pub const KEEPALIVE: Duration = Duration::from_secs(3);

/// A cookie is good for the time bucket it was made in and the one after.
const COOKIE_BUCKET: u64 = 30;

/// The fastest a reverse stream is sent, datagrams a second (about 12 Gbit/s of 1,400-byte
/// datagrams): a plan asking for more is refused.
pub const MAX_REVERSE_PPS: u64 = 1_000_000;

/// The longest a reverse stream may be asked to run.
pub const MAX_REVERSE_DURATION: Duration = Duration::from_secs(3600);

/// What a reverse stream's sender and the worker share.
#[derive(Debug, Default)]
struct Reverse {
    sent: AtomicU64,
    done: AtomicBool,
    /// Milliseconds since the stream started when the client last queried.
    queried_ms: AtomicU64,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Stream {
    peer: SocketAddr,
    cookie: u64,
    arrivals: Arrivals,
    heard: Instant,
    started: Instant,
    reverse: Option<Arc<Reverse>>,
}

/// One worker's streams; see the module's promise.
#[derive(Debug)]
pub struct Streams {
    key: std::collections::hash_map::RandomState,
    table: HashMap<u64, Stream>,
    swept: Instant,
    refused: u64,
}

/// Nanoseconds since the Unix epoch on this host's clock.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Default for Streams {
    fn default() -> Self {
        Self::new()
    }
}

impl Streams {
    pub fn new() -> Streams {
        Streams {
            key: std::collections::hash_map::RandomState::new(),
            table: HashMap::new(),
            swept: Instant::now(),
            refused: 0,
        }
    }

    fn cookie(&self, peer: SocketAddr, id: u64, bucket: u64) -> u64 {
        // Never 0: 0 asks for a cookie.
        self.key.hash_one((peer, id, bucket)) | 1
    }

    fn cookie_ok(&self, peer: SocketAddr, id: u64, cookie: u64) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            / COOKIE_BUCKET;
        cookie != 0
            && (cookie == self.cookie(peer, id, now)
                || cookie == self.cookie(peer, id, now.saturating_sub(1)))
    }

    /// Starts refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Handles stream datagram `data` from `peer`, received at `arrived_ns` (this host's
    /// clock); writes the answer, if any, over `data` and returns its length. `socket` is
    /// the worker's, for a reverse stream's sender.
    pub fn handle(
        &mut self,
        peer: SocketAddr,
        data: &mut [u8],
        now: Instant,
        arrived_ns: u64,
        socket: &UdpSocket,
        stop: &Stop,
    ) -> Option<usize> {
        if now.saturating_duration_since(self.swept) >= Duration::from_secs(1) {
            self.sweep(now);
        }
        let Some(message) = Message::parse(data) else {
            // A stream datagram that cannot be read: counted on its stream if the ID is
            // there and known from this peer.
            if data.len() >= 18 {
                let id = u64::from_be_bytes(data[10..18].try_into().expect("8 bytes"));
                if let Some(s) = self.table.get_mut(&id)
                    && s.peer == peer
                {
                    s.arrivals.malformed();
                }
            }
            return None;
        };
        match message {
            Message::Data { id, seq, sent_ns } => {
                // Only a known stream, from the address that started it; the same ID
                // from elsewhere is counted as forged.
                if let Some(s) = self.table.get_mut(&id)
                    && s.reverse.is_none()
                {
                    if s.peer == peer {
                        s.arrivals.arrive(seq, data.len(), sent_ns, arrived_ns);
                        s.heard = now;
                    } else {
                        s.arrivals.forged();
                    }
                }
                None
            }
            Message::Start { id, cookie, plan } => {
                if cookie == 0 || !self.cookie_ok(peer, id, cookie) {
                    let bucket = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                        / COOKIE_BUCKET;
                    let answer = Message::Accept {
                        id,
                        cookie: self.cookie(peer, id, bucket),
                        started: false,
                    };
                    return Some(answer.emit(data, 0));
                }
                let started = self.start(peer, id, cookie, plan, now, socket, stop);
                Some(
                    Message::Accept {
                        id,
                        cookie,
                        started,
                    }
                    .emit(data, 0),
                )
            }
            Message::Query {
                id, cookie, serial, ..
            } => {
                let s = self.table.get_mut(&id)?;
                if s.peer != peer || s.cookie != cookie {
                    return None;
                }
                s.heard = now;
                let mut counters: Counters = s.arrivals.counters();
                if let Some(r) = &s.reverse {
                    let ms = now.saturating_duration_since(s.started).as_millis() as u64;
                    r.queried_ms.store(ms, Ordering::Relaxed);
                    counters.sender_sent = r.sent.load(Ordering::Relaxed);
                    counters.sender_done = u64::from(r.done.load(Ordering::Relaxed));
                }
                Some(
                    Message::Report {
                        id,
                        serial,
                        counters,
                    }
                    .emit(data, 0),
                )
            }
            // Not for a server.
            Message::Accept { .. } | Message::Report { .. } => None,
        }
    }

    /// Creates the stream (idempotent: a start repeated because its answer was lost finds
    /// it there); false if it cannot be.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        peer: SocketAddr,
        id: u64,
        cookie: u64,
        plan: Plan,
        now: Instant,
        socket: &UdpSocket,
        stop: &Stop,
    ) -> bool {
        if let Some(s) = self.table.get(&id) {
            return s.peer == peer;
        }
        if self.table.len() >= MAX_STREAMS {
            self.refused += 1;
            return false;
        }
        // The kernel's receive times from now on, for the jitter (idempotent).
        net::timestamp_arrivals(socket);
        let reverse = if plan.reverse {
            let running = self
                .table
                .values()
                .filter(|s| {
                    s.reverse
                        .as_ref()
                        .is_some_and(|r| !r.done.load(Ordering::Relaxed))
                })
                .count();
            let pps = plan.milli_pps / 1000;
            let too_long = plan.duration_ms > MAX_REVERSE_DURATION.as_millis() as u64
                || (plan.duration_ms == 0 && plan.count == 0);
            if running >= MAX_REVERSE || pps > MAX_REVERSE_PPS || plan.milli_pps == 0 || too_long {
                self.refused += 1;
                return false;
            }
            let Ok(clone) = socket.try_clone() else {
                return false;
            };
            let shared = Arc::new(Reverse::default());
            let (shared2, stop) = (Arc::clone(&shared), stop.clone());
            let spawned = std::thread::Builder::new()
                .name("udpkit-stream".into())
                .spawn(move || send_reverse(&clone, peer, id, plan, &shared2, &stop));
            if spawned.is_err() {
                return false;
            }
            Some(shared)
        } else {
            None
        };
        self.table.insert(
            id,
            Stream {
                peer,
                cookie,
                arrivals: Arrivals::new(),
                heard: now,
                started: now,
                reverse,
            },
        );
        true
    }

    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        self.table.retain(|_, s| {
            let live = now.saturating_duration_since(s.heard) < IDLE;
            if !live && let Some(r) = &s.reverse {
                r.stop.store(true, Ordering::Relaxed);
            }
            live
        });
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for s in self.table.values() {
            if let Some(r) = &s.reverse {
                r.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// What one turn of a stream's sender did.
pub(crate) struct Turn {
    /// Datagrams that went, the first ones of those asked for.
    pub went: u64,
    /// The refusal that stopped the turn (a path refusing GSO is handled, not returned),
    /// with how many datagrams the refused send carried.
    pub refusal: Option<(io::Error, u64)>,
}

/// A stream's sender, either side: data datagrams numbered in order, in segmented sends
/// (GSO) where the path takes them, otherwise batches of single ones (`sendmmsg`), always
/// stopping at a refusal so that no number is skipped and sent later.
pub(crate) struct DataSender {
    sender: Sender,
    packed: Vec<u8>,
    size: usize,
    gso: usize,
    segmented: bool,
}

impl DataSender {
    /// For datagrams of `size` bytes on `socket`; `offload`: segmented where possible.
    pub fn new(socket: &UdpSocket, size: usize, offload: bool) -> DataSender {
        let gso = if offload {
            net::gso_fit(net::gso_segments(socket).min(BATCH), size)
        } else {
            1
        };
        DataSender {
            sender: Sender::new(),
            packed: vec![0u8; size * gso.max(BATCH)],
            size,
            gso,
            segmented: gso > 1,
        }
    }

    /// Sends up to `due` datagrams of stream `id` numbered from `first`, to `to` (`None`:
    /// the connected peer), stamped now.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        to: Option<SocketAddr>,
        id: u64,
        first: u64,
        due: u64,
    ) -> Turn {
        let size = self.size;
        let n = (due as usize).min(if self.segmented { self.gso } else { BATCH });
        let at = wall_ns();
        for k in 0..n {
            Message::Data {
                id,
                seq: first + k as u64,
                sent_ns: at,
            }
            .emit(&mut self.packed[k * size..(k + 1) * size], size);
        }
        let mut transmits = [Transmit::EMPTY; BATCH];
        let segmented = self.segmented && n > 1;
        let count = if segmented {
            transmits[0] = Transmit {
                destination: to,
                contents: &self.packed[..n * size],
                segment_size: Some(size),
                ..Transmit::EMPTY
            };
            1
        } else {
            for (k, t) in transmits[..n].iter_mut().enumerate() {
                t.destination = to;
                t.contents = &self.packed[k * size..(k + 1) * size];
            }
            n
        };
        let (totals, refusal) = self.sender.send_prefix(socket, &transmits[..count]);
        let went = match (segmented, totals.sent > 0) {
            (true, true) => n as u64,
            (true, false) => 0,
            (false, _) => totals.sent,
        };
        let refusal = match refusal {
            Some(e) if segmented && net::gso_refused(&e) => {
                // The path refuses GSO (quinn-udp's rule): single datagrams from now on.
                self.segmented = false;
                None
            }
            Some(e) => Some((e, if segmented { n as u64 } else { 1 })),
            None => None,
        };
        Turn { went, refusal }
    }
}

/// A reverse stream's sender: `plan`'s datagrams to `peer` from the server's port, paced,
/// in segmented sends where the kernel can, until its count or duration, the server's
/// stop, or its client's silence.
fn send_reverse(
    socket: &UdpSocket,
    peer: SocketAddr,
    id: u64,
    plan: Plan,
    shared: &Reverse,
    stop: &Stop,
) {
    let size = (plan.size as usize).max(crate::wire::stream::DATA_MIN);
    let pps = plan.milli_pps as f64 / 1000.0;
    let mut data = DataSender::new(socket, size, true);
    let started = Instant::now();
    let until = (plan.duration_ms > 0).then(|| started + Duration::from_millis(plan.duration_ms));
    let limit = if plan.count > 0 { plan.count } else { u64::MAX };
    let mut sent = 0u64;
    while sent < limit && !stop.is_stopped() && !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if until.is_some_and(|t| now >= t) {
            break;
        }
        let alive_ms = shared.queried_ms.load(Ordering::Relaxed);
        let since = now.saturating_duration_since(started).as_millis() as u64;
        if since.saturating_sub(alive_ms) > KEEPALIVE.as_millis() as u64 {
            break; // the client went away, or never was
        }
        let due = ((now - started).as_secs_f64() * pps) as u64;
        let due = due.min(limit);
        if due <= sent {
            let next = started + Duration::from_secs_f64((sent + 1) as f64 / pps);
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(5)));
            continue;
        }
        let turn = data.send(socket, Some(peer), id, sent, due - sent);
        sent += turn.went;
        shared.sent.store(sent, Ordering::Relaxed);
        if turn.refusal.is_some() {
            // A full buffer (or a path refusing for now): the rest go on the next turn.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    shared.sent.store(sent, Ordering::Relaxed);
    shared.done.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Handles `m` (padded to `len`) from `from`; the answer, parsed.
    fn ask(s: &mut Streams, from: SocketAddr, m: Message, len: usize) -> Option<Message> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = vec![0u8; 2048];
        let n = m.emit(&mut buf, len);
        let answer = s.handle(
            from,
            &mut buf[..n],
            Instant::now(),
            1,
            &socket,
            &Stop::new(),
        )?;
        assert!(answer <= n, "an answer longer than its request");
        Message::parse(&buf[..answer])
    }

    /// A start (cookie 0: asking for one) of stream `id` from `from`.
    fn start(s: &mut Streams, from: SocketAddr, id: u64, cookie: u64) -> Option<Message> {
        ask(
            s,
            from,
            Message::Start {
                id,
                cookie,
                plan: plan(),
            },
            0,
        )
    }

    fn plan() -> Plan {
        Plan {
            reverse: false,
            milli_pps: 1000,
            size: 100,
            count: 10,
            duration_ms: 0,
        }
    }

    #[test]
    fn a_stream_exists_only_once_its_client_brings_the_cookie_back() {
        let mut s = Streams::new();
        let a = peer(1000);
        let Some(Message::Accept {
            cookie,
            started: false,
            ..
        }) = start(&mut s, a, 1, 0)
        else {
            panic!("no cookie");
        };
        assert!(s.is_empty(), "state before the cookie came back");
        // The cookie is the client's: from another address it starts nothing.
        let answer = start(&mut s, peer(1001), 1, cookie);
        assert!(matches!(
            answer,
            Some(Message::Accept { started: false, .. })
        ));
        assert!(s.is_empty());
        let answer = start(&mut s, a, 1, cookie);
        assert!(matches!(
            answer,
            Some(Message::Accept { started: true, .. })
        ));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn data_with_the_streams_id_from_elsewhere_is_counted_forged_never_received() {
        let mut s = Streams::new();
        let a = peer(2000);
        let Some(Message::Accept { cookie, .. }) = start(&mut s, a, 5, 0) else {
            panic!()
        };
        start(&mut s, a, 5, cookie);
        assert!(
            ask(
                &mut s,
                a,
                Message::Data {
                    id: 5,
                    seq: 0,
                    sent_ns: 0
                },
                100
            )
            .is_none()
        );
        ask(
            &mut s,
            peer(2001),
            Message::Data {
                id: 5,
                seq: 1,
                sent_ns: 0,
            },
            100,
        );
        let query = Message::Query {
            id: 5,
            cookie,
            sent: 1,
            serial: 3,
        };
        let Some(Message::Report {
            serial, counters, ..
        }) = ask(&mut s, a, query, crate::wire::stream::QUERY_LEN)
        else {
            panic!("no report")
        };
        assert_eq!(serial, 3);
        assert_eq!((counters.received, counters.forged), (1, 1));
        // A query with the wrong cookie, or from elsewhere: no answer.
        let bad = Message::Query {
            id: 5,
            cookie: cookie ^ 2,
            sent: 1,
            serial: 4,
        };
        assert!(ask(&mut s, a, bad, crate::wire::stream::QUERY_LEN).is_none());
        assert!(ask(&mut s, peer(2001), query, crate::wire::stream::QUERY_LEN).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut s = Streams::new();
        for i in 0..(MAX_STREAMS as u64 + 5) {
            let a = peer(3000 + i as u16);
            let Some(Message::Accept { cookie, .. }) = start(&mut s, a, i, 0) else {
                panic!()
            };
            let started = matches!(
                start(&mut s, a, i, cookie),
                Some(Message::Accept { started: true, .. })
            );
            assert_eq!(started, (i as usize) < MAX_STREAMS);
        }
        assert_eq!(s.len(), MAX_STREAMS);
        assert_eq!(s.refused(), 5);
    }
}
