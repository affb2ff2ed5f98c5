//! The server's side of `udpkit stream`, beside whatever protocol it speaks: streams
//! started by a return-routable handshake, their data counted where it arrives
//! ([`Arrivals`]), queries answered with the counts, and reverse streams sent from the
//! server's own port to the client's address (so they pass NAT).
//!
//! Promise: no state for a source that has not shown it receives at its address: a start
//! is answered with a cookie (keyed hash of the source, the stream ID and the time, never
//! stored), and only a start that carries it back creates a stream. Every number of a
//! plan is checked against `crate::limits` before it sizes anything: datagram size, rate,
//! and the length a duration or a count at that rate makes (an hour at most). Streams are
//! bounded ([`limits::STREAMS_PER_THREAD`] a worker, about 5 KiB each), one source prefix
//! holds at most [`limits::STREAMS_PER_PREFIX`] of them and [`limits::REVERSE_PER_PREFIX`]
//! reverse ones, and a stream is forgotten after [`limits::STREAM_IDLE`] of silence or
//! its planned length and grace, whichever comes first, however it is kept alive. A
//! reverse stream stops when its client has not queried for [`limits::STREAM_KEEPALIVE`]
//! (a client that goes away, or never was, gets no flood), is paced by the one
//! [`Schedule`] (no rush after a stall), and ends at the first refusal it cannot get past.
//! Every answer is written over its request and is no longer (`wire::stream`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Stop;
use crate::io::state::{ArrivalInfo, Options, SocketState};
use crate::limits;
use crate::load::pace::Schedule;
use crate::load::send::DataSender;
use crate::measure::arrivals::Arrivals;
use crate::shape::ratelimit::Prefix;
use crate::wire::stream::{Counters, Message, Plan};

/// A cookie is good for the time bucket it was made in and the one after.
const COOKIE_BUCKET: u64 = 30;

/// What a reverse stream's sender and the worker share.
#[derive(Debug, Default)]
struct Reverse {
    sent: AtomicU64,
    /// Slots its pacer skipped: it could not keep the rate.
    skipped: AtomicU64,
    done: AtomicBool,
    /// Milliseconds since the stream started when the client last queried.
    queried_ms: AtomicU64,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Stream {
    peer: SocketAddr,
    prefix: Prefix,
    cookie: u64,
    arrivals: Arrivals,
    heard: Instant,
    started: Instant,
    /// Forgotten then, however it is kept alive: its planned length and grace.
    until: Instant,
    reverse: Option<Arc<Reverse>>,
}

/// Why a plan is refused: what is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The datagram size is outside `wire::stream::DATA_MIN..=limits::DATAGRAM_MAX`.
    Size,
    /// The rate is outside `limits::STREAM_PPS_MIN..=limits::STREAM_PPS_MAX` (a reverse
    /// stream's, `..=limits::REVERSE_PPS_MAX`).
    Rate,
    /// No length, or a duration (or a count at the rate) past `limits::STREAM_DURATION_MAX`.
    Length,
    /// The worker's table, or this prefix's share of it, is full.
    Full,
}

/// A plan's length, once its numbers are checked against the limits: the duration, or the
/// count at the rate, whichever ends first.
pub fn plan_length(plan: &Plan) -> Result<Duration, Refused> {
    let size = plan.size as usize;
    if !(crate::wire::stream::DATA_MIN..=limits::DATAGRAM_MAX).contains(&size) {
        return Err(Refused::Size);
    }
    let pps = plan.milli_pps as f64 / 1000.0;
    let fastest = if plan.reverse {
        limits::REVERSE_PPS_MAX
    } else {
        limits::STREAM_PPS_MAX
    };
    if !(limits::STREAM_PPS_MIN..=fastest).contains(&pps) {
        return Err(Refused::Rate);
    }
    let max = limits::STREAM_DURATION_MAX.as_secs_f64();
    let by_duration = (plan.duration_ms > 0).then(|| plan.duration_ms as f64 / 1000.0);
    let by_count = (plan.count > 0).then(|| plan.count as f64 / pps);
    let secs = match (by_duration, by_count) {
        (Some(d), Some(c)) => d.min(c),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => return Err(Refused::Length),
    };
    if secs > max {
        return Err(Refused::Length);
    }
    Ok(Duration::from_secs_f64(secs))
}

/// One worker's streams; see the module's promise.
#[derive(Debug)]
pub struct Streams {
    key: std::collections::hash_map::RandomState,
    table: HashMap<u64, Stream>,
    swept: Instant,
    refused: u64,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new()
    }
}

impl Streams {
    /// No streams yet, with a cookie key of its own.
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

    /// Starts refused: the table or a prefix's share was full, or a plan out of bounds.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Streams kept now: accepted and not yet forgotten.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// No stream kept.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes the streams hold (their arrival counts), for a memory figure.
    pub fn bytes(&self) -> usize {
        self.table.values().map(|s| s.arrivals.bytes()).sum()
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
            if let Some(id) = crate::wire::stream::stream_id(data)
                && let Some(s) = self.table.get_mut(&id)
                && s.peer == peer
            {
                s.arrivals.malformed();
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
                let started = match self.start(peer, id, cookie, plan, now, socket, stop) {
                    Ok(()) => true,
                    Err(_) => {
                        self.refused += 1;
                        false
                    }
                };
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
                    let ms = now.saturating_duration_since(s.started).as_millis();
                    r.queried_ms
                        .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
                    counters.sender_sent = r.sent.load(Ordering::Relaxed);
                    counters.sender_skipped = r.skipped.load(Ordering::Relaxed);
                    counters.sender_done = u64::from(r.done.load(Ordering::Relaxed));
                }
                // As long as the query, no longer (a shorter query, a shorter report).
                let room = data.len();
                Some(
                    Message::Report {
                        id,
                        serial,
                        counters,
                    }
                    .emit(data, room),
                )
            }
            // Not for a server.
            Message::Accept { .. } | Message::Report { .. } => None,
        }
    }

    /// Creates the stream (idempotent: a start repeated because its answer was lost finds
    /// it there), or says why it cannot be.
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
    ) -> Result<(), Refused> {
        if let Some(s) = self.table.get(&id) {
            return if s.peer == peer {
                Ok(())
            } else {
                Err(Refused::Full)
            };
        }
        let length = plan_length(&plan)?;
        let prefix = Prefix::of(peer.ip());
        let mine = self.table.values().filter(|s| s.prefix == prefix).count();
        if self.table.len() >= limits::STREAMS_PER_THREAD || mine >= limits::STREAMS_PER_PREFIX {
            return Err(Refused::Full);
        }
        // The kernel's receive times from now on, for the jitter (idempotent).
        SocketState::arrivals(socket, ArrivalInfo::Timed);
        let reverse = if plan.reverse {
            let running = |s: &&Stream| {
                s.reverse
                    .as_ref()
                    .is_some_and(|r| !r.done.load(Ordering::Relaxed))
            };
            let all = self.table.values().filter(running).count();
            let ours = self
                .table
                .values()
                .filter(running)
                .filter(|s| s.prefix == prefix)
                .count();
            if all >= limits::REVERSE_PER_THREAD || ours >= limits::REVERSE_PER_PREFIX {
                return Err(Refused::Full);
            }
            let clone = socket.try_clone().map_err(|_| Refused::Full)?;
            let shared = Arc::new(Reverse::default());
            let (shared2, stop) = (Arc::clone(&shared), stop.clone());
            std::thread::Builder::new()
                .name("udpkit-stream".into())
                .spawn(move || send_reverse(&clone, peer, id, plan, length, &shared2, &stop))
                .map_err(|_| Refused::Full)?;
            Some(shared)
        } else {
            None
        };
        self.table.insert(
            id,
            Stream {
                peer,
                prefix,
                cookie,
                arrivals: Arrivals::compact(),
                heard: now,
                started: now,
                until: now + length + limits::STREAM_GRACE + limits::STREAM_IDLE,
                reverse,
            },
        );
        Ok(())
    }

    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        self.table.retain(|_, s| {
            let live =
                now.saturating_duration_since(s.heard) < limits::STREAM_IDLE && now < s.until;
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

/// A reverse stream's sender: `plan`'s datagrams to `peer` from the server's port, paced,
/// in segmented sends where the kernel can, until its count or `length`, the server's
/// stop, its client's silence, or a refusal other than a full buffer.
fn send_reverse(
    socket: &UdpSocket,
    peer: SocketAddr,
    id: u64,
    plan: Plan,
    length: Duration,
    shared: &Reverse,
    stop: &Stop,
) {
    crate::io::process::precise_timers();
    let size = plan.size as usize;
    let pps = plan.milli_pps as f64 / 1000.0;
    let gso = Options {
        gso: true,
        ..Options::default()
    };
    let mut data = DataSender::new(SocketState::new(socket, &gso), size);
    let started = Instant::now();
    let Some(schedule) = Schedule::new(started, pps) else {
        shared.done.store(true, Ordering::Relaxed);
        return;
    };
    let schedule = schedule.of_datagrams(size);
    // By duration: no slot past it. By count: the count, however late (a stall delays
    // it; it is never rushed), but never past the length and half the client's grace.
    let mut schedule = if plan.duration_ms > 0 {
        schedule.ending_after(Duration::from_millis(plan.duration_ms))
    } else {
        schedule
    };
    let deadline = started + length + limits::STREAM_GRACE / 2;
    let limit = if plan.count > 0 { plan.count } else { u64::MAX };
    let mut sent = 0u64;
    while sent < limit && !stop.is_stopped() && !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let alive_ms = shared.queried_ms.load(Ordering::Relaxed);
        let since = now.saturating_duration_since(started).as_millis();
        if since.saturating_sub(u128::from(alive_ms)) > limits::STREAM_KEEPALIVE.as_millis() {
            break; // the client went away, or never was
        }
        let due = schedule.due(now, limit - sent);
        shared.skipped.store(schedule.skipped(), Ordering::Relaxed);
        if due.is_empty() {
            let Some(next) = schedule.next_at() else {
                break; // its length is over
            };
            // At most 5 ms: the worker's word to stop and the client's silence are looked
            // at between waits.
            let wait = next.saturating_duration_since(Instant::now());
            stop.wait(wait.min(Duration::from_millis(5)));
            continue;
        }
        let turn = data.send(socket, Some(peer), id, sent, due.end - due.start);
        sent += turn.went;
        schedule.take(turn.went);
        shared.sent.store(sent, Ordering::Relaxed);
        match turn.refusal {
            None => {}
            // A full buffer: the rest go on a later turn (or are skipped, if too late).
            Some(why) if why.is_transient() => {
                stop.wait(Duration::from_micros(50));
            }
            // The host refuses these datagrams for good (too big, a firewall, no route):
            // trying again would only spin.
            Some(_) => break,
        }
    }
    shared.sent.store(sent, Ordering::Relaxed);
    shared.skipped.store(schedule.skipped(), Ordering::Relaxed);
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

    /// A started stream of `id` from `a`, or false where refused.
    fn started(s: &mut Streams, a: SocketAddr, id: u64, plan: Plan) -> bool {
        let Some(Message::Accept { cookie, .. }) = ask(
            s,
            a,
            Message::Start {
                id,
                cookie: 0,
                plan,
            },
            0,
        ) else {
            panic!("no cookie")
        };
        matches!(
            ask(s, a, Message::Start { id, cookie, plan }, 0),
            Some(Message::Accept { started: true, .. })
        )
    }

    #[test]
    fn the_table_is_bounded_and_one_prefix_holds_a_share_of_it() {
        let mut s = Streams::new();
        // One source (one /24), the attacker's best: as many streams as it can hold.
        for i in 0..20u64 {
            let ok = started(&mut s, peer(3000 + i as u16), i, plan());
            assert_eq!(ok, (i as usize) < limits::STREAMS_PER_PREFIX, "stream {i}");
        }
        // Others, each from a /24 of its own, fill the rest of the table, no more.
        let mut others = 0;
        for i in 0..100u64 {
            let a = SocketAddr::from(([127, 1, i as u8, 1], 4000));
            others += usize::from(started(&mut s, a, 1000 + i, plan()));
        }
        assert_eq!(
            others,
            limits::STREAMS_PER_THREAD - limits::STREAMS_PER_PREFIX
        );
        assert_eq!(s.len(), limits::STREAMS_PER_THREAD);
        assert_eq!(s.refused(), 12 + 100 - others as u64);
    }

    #[test]
    fn plans_out_of_bounds_are_refused_before_they_size_anything() {
        let base = plan();
        let cases = [
            (
                Plan {
                    size: u32::MAX,
                    ..base
                },
                Refused::Size,
            ),
            (
                Plan {
                    size: 65_508,
                    ..base
                },
                Refused::Size,
            ),
            (Plan { size: 20, ..base }, Refused::Size),
            (
                Plan {
                    milli_pps: 0,
                    ..base
                },
                Refused::Rate,
            ),
            (
                Plan {
                    milli_pps: u64::MAX,
                    ..base
                },
                Refused::Rate,
            ),
            (
                Plan {
                    count: 0,
                    duration_ms: 0,
                    ..base
                },
                Refused::Length,
            ),
            // The case: a count that, at the rate, runs for ever.
            (
                Plan {
                    count: u64::MAX,
                    milli_pps: 1_000_000_000,
                    ..base
                },
                Refused::Length,
            ),
            (
                Plan {
                    duration_ms: u64::MAX,
                    count: 0,
                    ..base
                },
                Refused::Length,
            ),
        ];
        for (plan, why) in cases {
            assert_eq!(plan_length(&plan), Err(why), "{plan:?}");
            let mut s = Streams::new();
            assert!(!started(&mut s, peer(5000), 9, plan), "{plan:?} started");
            assert!(s.is_empty());
        }
        assert_eq!(plan_length(&base), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn a_stream_kept_alive_past_its_plan_is_forgotten() {
        let mut s = Streams::new();
        let a = peer(6000);
        assert!(started(&mut s, a, 1, Plan { count: 1, ..plan() }));
        // Heard every second, but its plan (one datagram at 1/s) is long over.
        let t = Instant::now();
        for k in 1..=30u64 {
            let now = t + Duration::from_secs(k);
            if let Some(stream) = s.table.get_mut(&1) {
                stream.heard = now;
            }
            s.sweep(now);
        }
        assert!(s.is_empty(), "still held after 30 s");
    }
}
