//! The seed's server, at the speed of the kernel: answers every datagram with `Your data
//! was N bytes long`, in batches, on one or more threads; or, with another [`Protocol`],
//! echoes it (RFC 862) or reflects it as a STAMP Session-Reflector (RFC 8762/8972).
//!
//! Promise: no datagram and no failed reply stops the server; it stops only when told to
//! (a [`Stop`] handle, set by the CLI on SIGINT/SIGTERM) or when its [`Observer`] fails. Its
//! loop allocates nothing per datagram (a stateful reflector's session table excepted,
//! bounded) and publishes its [`Stats`] once per batch. An echo or STAMP reply is written
//! over its request, in place, and is exactly as long: no reply is longer than its request
//! but the seed's sentence, which the rate limit weighs.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::io::datagram::{BATCH, RecvBatch};
use crate::io::socket as net;
use crate::io::state::{ArrivalInfo, Options, Out, Refusal, SocketState};
use crate::io::wait::Blocking;
use crate::serve::sessions::{self, Sessions};
use crate::serve::stats::{Counters, InUse, Stats};
use crate::serve::streams::Streams;
use crate::shape::impair::{Impairer, Settings};
use crate::shape::ratelimit::{DEFAULT_PER_SECOND, Decision, RateLimit, RateLimiter};
use crate::wire::protocol::{Prepared, Reflecting};
use crate::wire::stamp::{Arrival, NtpTime};
use crate::wire::stream;
use crate::wire::{MAX_REPLY, Protocol, RECV_BUFFER};
use crate::{Error, Stop};

/// Hears what the server does, as it does it; every method has a silent default. The CLI
/// prints the seed's lines; a library user may count, collect or ignore (`()`).
pub trait Observer {
    /// A datagram arrived from `peer`; it is answered next, unless rate-limited.
    fn datagram(&mut self, _peer: SocketAddr, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
    /// The rate limit withheld the reply to `peer` (`slipped`: answered anyway).
    fn rate_limited(&mut self, _peer: SocketAddr, _slipped: bool) -> io::Result<()> {
        Ok(())
    }
    /// `--drop-rate` chose to ignore a datagram from `peer`.
    fn pretend_drop(&mut self, _peer: SocketAddr) -> io::Result<()> {
        Ok(())
    }
    /// The reply to `peer` could not be sent (the kernel said why); the server goes on.
    fn send_failed(&mut self, _peer: SocketAddr, _why: Refusal) -> io::Result<()> {
        Ok(())
    }
    /// Receiving failed; the server goes on.
    fn recv_failed(&mut self, _error: &io::Error) -> io::Result<()> {
        Ok(())
    }
    /// A batch is done: a place to write out what was buffered.
    fn batch_done(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Observer for () {}

/// How a server runs; `Config::new(addr)` gives the seed's behaviour.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to bind (port 0: any free port; see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// Sockets on the same address (`SO_REUSEPORT`), one thread each.
    pub threads: usize,
    /// Share of datagrams to ignore on purpose, 0 to 1.
    pub drop_rate: f64,
    /// Seed for `drop_rate`'s choices.
    pub seed: Option<u64>,
    /// The per-prefix limit on replies, which keeps the server from being an amplifier.
    pub rate_limit: RateLimit,
    /// Send replies of one size to one client together (`UDP_SEGMENT`) where the kernel
    /// can.
    pub gso: bool,
    /// Receive a client's requests of one size together (`UDP_GRO`) where the kernel can.
    pub gro: bool,
    /// What the server answers: the seed's sentence, an echo, or a STAMP reflection.
    pub protocol: Protocol,
    /// STAMP: keep each session's own sequence numbers (RFC 8972's stateful reflector)
    /// instead of repeating the sender's.
    pub stateful: bool,
}

impl Config {
    /// The seed's server on `addr`: one thread, no drops, the seed's protocol, the rate
    /// limit on beyond loopback, GSO and GRO where the kernel has them.
    pub fn new(addr: SocketAddr) -> Self {
        Config {
            addr,
            threads: 1,
            drop_rate: 0.0,
            seed: None,
            rate_limit: RateLimit::Auto,
            gso: true,
            gro: true,
            protocol: Protocol::SEED,
            stateful: false,
        }
    }

    /// The replies a second per prefix that the whole server allows, if limited.
    pub fn effective_rate_limit(&self) -> Option<f64> {
        match self.rate_limit {
            RateLimit::Off => None,
            RateLimit::PerSecond(rate) => Some(rate),
            RateLimit::Auto if self.addr.ip().is_loopback() => None,
            RateLimit::Auto => Some(DEFAULT_PER_SECOND),
        }
    }
}

/// Bound server sockets, ready to run.
#[derive(Debug)]
pub struct Server {
    config: Config,
    sockets: Vec<UdpSocket>,
    /// Each socket's abilities, as bound.
    states: Vec<SocketState>,
    counters: Vec<Counters>,
    local: SocketAddr,
    receive_buffer: usize,
}

impl Server {
    /// Binds `addr` with the seed's behaviour; port 0 picks a free port, which
    /// [`Server::local_addr`] tells.
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        Self::with_config(Config::new(addr))
    }

    /// Binds `config.threads` sockets to `config.addr`.
    pub fn with_config(config: Config) -> Result<Self, Error> {
        let threads = config.threads.max(1);
        let share = threads > 1;
        let first = net::bind(config.addr, share, "-p PORT")?;
        let local = net::local_addr(&first)?;
        let mut sockets = vec![first];
        for _ in 1..threads {
            sockets.push(net::bind(local, share, "-p PORT")?);
        }
        // Every socket's options in one place; receive times for STAMP's t2 (a stream's,
        // for its jitter, are asked for when the first stream starts: the seed's protocol
        // pays nothing for them).
        let options = Options {
            gso: config.gso,
            gro: config.gro,
            receive_buffer: Some(net::SERVER_RECEIVE_BUFFER),
            send_buffer: Some(net::SERVER_SEND_BUFFER),
            count_drops: true,
            reply_from: Some(local),
            arrivals: if config.protocol.test_packets() {
                ArrivalInfo::Full
            } else {
                ArrivalInfo::Plain
            },
        };
        let mut states = Vec::with_capacity(sockets.len());
        let mut receive_buffer = usize::MAX;
        for socket in &sockets {
            socket
                .set_nonblocking(true)
                .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
            states.push(SocketState::new(socket, &options));
            receive_buffer = receive_buffer.min(net::receive_buffer(socket));
        }
        let counters = sockets.iter().map(|_| Counters::default()).collect();
        Ok(Server {
            config: Config { threads, ..config },
            sockets,
            states,
            counters,
            local,
            receive_buffer,
        })
    }

    /// The address actually bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The configuration the server was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The smallest receive buffer the kernel granted a socket, as `SO_RCVBUF` reports it.
    pub fn receive_buffer(&self) -> usize {
        self.receive_buffer
    }

    /// The counters so far, summed over the threads; callable while `run` runs.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::sum(self.counters.iter().map(Counters::snapshot));
        // The kernel's own count, read now, sees drops that no later datagram has carried.
        let now: Option<u64> = self.sockets.iter().map(net::kernel_drops).sum();
        if let Some(now) = now {
            stats.kernel_drops = stats.kernel_drops.max(now);
        }
        stats
    }

    /// What the server holds now (STAMP sessions, streams), summed over its threads, as
    /// of each thread's last batch.
    pub fn in_use(&self) -> InUse {
        self.counters
            .iter()
            .map(Counters::in_use)
            .fold(InUse::default(), |a, b| InUse {
                sessions: a.sessions + b.sessions,
                streams: a.streams + b.streams,
            })
    }

    /// Serves on every socket, one thread each with an observer from `observer`, until
    /// `stop` is set or an observer fails (then `Error::Callback`, and the others stop too).
    pub fn run<O, F>(&self, stop: &Stop, mut observer: F) -> Result<(), Error>
    where
        O: Observer + Send,
        F: FnMut() -> O,
    {
        // One limiter for every thread: the limit is the server's.
        let limiter = self
            .config
            .effective_rate_limit()
            .map(|rate| Mutex::new(RateLimiter::new(rate, rate)));
        let limiter = limiter.as_ref();
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .sockets
                .iter()
                .zip(&self.counters)
                .zip(&self.states)
                .enumerate()
                .map(|(index, ((socket, counters), state))| {
                    let mut worker = Worker {
                        socket,
                        counters,
                        loss: (self.config.drop_rate > 0.0).then(|| {
                            Impairer::new(
                                Settings {
                                    drop: self.config.drop_rate,
                                    ..Settings::default()
                                },
                                self.config.seed.map(|s| s.wrapping_add(index as u64)),
                            )
                        }),
                        limiter,
                        state: state.clone(),
                        protocol: self.config.protocol,
                        sessions: (self.config.protocol.has_sessions() && self.config.stateful)
                            .then(|| {
                                Sessions::new(sessions::DEFAULT_CAPACITY, sessions::DEFAULT_IDLE)
                            }),
                        streams: Streams::new(),
                    };
                    let mut observer = observer();
                    scope.spawn(move || {
                        let result = worker.serve(stop, &mut observer);
                        if result.is_err() {
                            stop.stop();
                        }
                        result
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a server thread panicked"))
                .fold(Ok(()), Result::and)
        })
    }

    /// Runs the server, silent, on threads of its own until the handle is dropped.
    ///
    /// ```
    /// let server = udpkit::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap().spawn();
    /// let client = udpkit::Client::connect(server.local_addr()).unwrap();
    /// let reply = client.request(b"hello", &udpkit::Backoff::default(), &udpkit::Stop::new(), |_| {}).unwrap();
    /// assert_eq!(reply.data, b"Your data was 5 bytes long");
    /// ```
    pub fn spawn(self) -> RunningServer {
        let stop = Stop::new();
        let server = Arc::new(self);
        let thread = {
            let (stop, server) = (stop.clone(), Arc::clone(&server));
            std::thread::spawn(move || server.run(&stop, || ()))
        };
        RunningServer {
            server,
            stop,
            thread: Some(thread),
        }
    }
}

/// One socket's loop.
struct Worker<'a> {
    socket: &'a UdpSocket,
    counters: &'a Counters,
    /// `--drop-rate`: the relay's impairment stage, with loss alone.
    loss: Option<Impairer>,
    limiter: Option<&'a Mutex<RateLimiter>>,
    /// The socket's abilities; sends the replies, segmented (`UDP_SEGMENT`) where the
    /// socket and the path allow.
    state: SocketState,
    protocol: Protocol,
    /// A stateful STAMP reflector's sessions.
    sessions: Option<Sessions>,
    /// `udpkit stream`'s streams, whatever the protocol.
    streams: Streams,
}

/// The most datagrams one coalesced receive is answered for: the kernel's cap on a
/// segmented send (`UDP_MAX_SEGMENTS`, 128 since Linux 6.x; 64 before), which a local
/// sender's send reaches a `UDP_GRO` socket with whole, and more than GRO coalesces (64).
const MAX_SEGMENTS: usize = 128;

/// The most requests one batch can hold: 64 receives of up to `MAX_SEGMENTS` datagrams.
const MAX_REQUESTS: usize = BATCH * MAX_SEGMENTS;

/// One reply written, before it is sent.
#[derive(Clone, Copy, Default)]
struct Answer {
    /// Where its bytes are: in the reply buffer, or (`in_place`) in the receive's own
    /// buffer, written over the request.
    start: usize,
    len: usize,
    in_place: bool,
    /// The TOS byte it goes out with, where its protocol says (`None`: the socket's).
    tos: Option<u8>,
}

impl Worker<'_> {
    fn serve<O: Observer>(&mut self, stop: &Stop, observer: &mut O) -> Result<(), Error> {
        let output = |source| Error::Callback { source };
        // Every buffer the loop needs, allocated once.
        let mut batch = RecvBatch::new(RECV_BUFFER);
        // Replies back to back: those to one client of one size can go as one GSO send.
        let mut replies = vec![0u8; MAX_REQUESTS * MAX_REPLY];
        // Each answer as it will be sent: where its bytes are, to whom, from where (room
        // for the most a batch can hold, touched only as far as a batch fills it).
        let mut outs: Vec<Out> = Vec::with_capacity(MAX_REQUESTS);
        // Under load every receive finds datagrams queued and nothing waits.
        let mut waiter = Blocking::new(self.socket, stop)
            .map_err(|e| Error::io("cannot wait for datagrams", e))?;
        let mut clock_read: Option<Instant> = None;
        let mut clock_error = crate::measure::stamp::clock_estimate();
        let mut sessions_refused = 0;
        while !stop.is_stopped() {
            if let Err(e) = waiter.recv(self.socket, &mut batch, None) {
                if !is_timeout(&e) && e.kind() != io::ErrorKind::Interrupted {
                    observer.recv_failed(&e).map_err(output)?;
                }
                continue;
            }
            let now = Instant::now();
            // Taken once a batch, not once a datagram.
            let mut limiter = self
                .limiter
                .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
            let mut tally = Stats::default();
            outs.clear();
            let mut used = 0;
            // STAMP: the reflector's clock, read once a batch (t3, and t2 where the kernel
            // gave no receive time), and its error estimate, once a second.
            let wall = if self.protocol.test_packets() {
                NtpTime::now()
            } else {
                NtpTime::default()
            };
            let mut wall_ns = None;
            if self.protocol.test_packets()
                && clock_read.is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
            {
                clock_read = Some(now);
                clock_error = crate::measure::stamp::clock_estimate();
            }
            for i in 0..batch.len() {
                let base = batch.offset(i);
                let (meta, buffer) = batch.get_mut(i);
                let Some(peer) = meta.source else { continue };
                // Each datagram the kernel coalesced is a request of its own.
                let stride = meta.stride.max(1);
                let whole = meta.len.div_ceil(stride).max(1);
                for k in 0..whole {
                    // A datagram cut short by the buffer (a coalesced receive larger than
                    // 64 KiB) would be answered with a length it did not have, and one past
                    // MAX_SEGMENTS (a kernel allowing more) has no room: neither is.
                    if (meta.truncated && k + 1 == whole) || k >= MAX_SEGMENTS {
                        tally.received += 1;
                        continue;
                    }
                    let start = (k * stride).min(meta.len);
                    let data = &mut buffer[start..(start + stride).min(meta.len)];
                    let len = data.len();
                    tally.received += 1;
                    tally.bytes_in += len as u64;
                    if let Some(loss) = &mut self.loss
                        && loss.decide(now).copies == 0
                    {
                        tally.dropped_simulated += 1;
                        observer.pretend_drop(peer).map_err(output)?;
                        continue;
                    }
                    // A stream's datagrams, whatever the protocol: counted, data never
                    // answered, a start or query answered in place.
                    let streamed = stream::is_stream(data);
                    let answer = if streamed {
                        let arrived = meta.received.map_or_else(
                            || *wall_ns.get_or_insert_with(crate::io::clock::wall_ns),
                            |d| d.as_nanos() as u64,
                        );
                        let socket = self.socket;
                        match self.streams.handle(peer, data, now, arrived, socket, stop) {
                            Some(len) => Some(Answer {
                                start,
                                len,
                                in_place: true,
                                tos: None,
                            }),
                            None => continue,
                        }
                    } else {
                        observer.datagram(peer, data).map_err(output)?;
                        None
                    };
                    // The reply is written first (the rate limiter weighs its real length):
                    // into the reply buffer (a refused one is written over by the next), or
                    // over the request itself, completed once the limit has said yes.
                    let answer = match answer {
                        Some(answer) => answer,
                        None => {
                            let slot = (&mut replies[used..used + MAX_REPLY])
                                .try_into()
                                .expect("room for MAX_REQUESTS replies");
                            match self.protocol.prepare(data, slot) {
                                Prepared::Written(n) => Answer {
                                    start: used,
                                    len: n,
                                    in_place: false,
                                    tos: None,
                                },
                                Prepared::InPlace(n) => Answer {
                                    start,
                                    len: n,
                                    in_place: true,
                                    tos: None,
                                },
                                Prepared::Malformed => {
                                    tally.malformed += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    if let Some(limiter) = limiter.as_mut() {
                        // Slip lets a real client of the seed's protocol through a spoofed
                        // flood of its prefix; an echo, a STAMP reflection or a stream's
                        // answer is as long as its request, and slipping those would bounce
                        // half of any flood off the server: they never slip.
                        let decision = match limiter.decide(peer.ip(), now, len, answer.len) {
                            Decision::Slip if answer.in_place => Decision::Refuse,
                            d => d,
                        };
                        match decision {
                            Decision::Answer => {}
                            Decision::Slip => {
                                tally.slipped += 1;
                                observer.rate_limited(peer, true).map_err(output)?;
                            }
                            Decision::Refuse => {
                                tally.dropped_rate_limited += 1;
                                observer.rate_limited(peer, false).map_err(output)?;
                                continue;
                            }
                        }
                    }
                    let mut answer = answer;
                    if !streamed && self.protocol.completes() {
                        let arrival = Arrival {
                            at: meta.received.map_or(wall, NtpTime::from_unix),
                            ttl: meta.ttl,
                            tos: meta.tos,
                        };
                        let sessions = &mut self.sessions;
                        let mut session_seq =
                            |ssid: u16| sessions.as_mut().and_then(|s| s.next_seq(peer, ssid, now));
                        let mut ctx = Reflecting {
                            arrival,
                            // Sent no earlier than received, whichever clock said when.
                            sent: if wall.nanos_since(arrival.at) > 0 {
                                wall
                            } else {
                                arrival.at
                            },
                            clock_error,
                            marks_each_answer: self.state.marks_each(),
                            session_seq: &mut session_seq,
                        };
                        let bytes = if answer.in_place {
                            &mut data[..]
                        } else {
                            &mut replies[answer.start..answer.start + answer.len]
                        };
                        answer.tos = self.protocol.complete(bytes, &mut ctx);
                    }
                    if !answer.in_place {
                        used += answer.len;
                    }
                    outs.push(Out {
                        buffer: usize::from(answer.in_place),
                        start: if answer.in_place {
                            base + answer.start
                        } else {
                            answer.start
                        },
                        len: answer.len,
                        to: meta.source,
                        from: meta.destination,
                        tos: answer.tos,
                    });
                }
            }
            drop(limiter);
            // Each reply goes to its request's sender, from the address it was sent to;
            // replies of one size to one sender, back to back, go as one segmented send.
            let mut failure = Ok(());
            let buffers = [&replies[..], batch.buffer()];
            let outs = &outs[..];
            let totals = self.state.send(self.socket, &buffers, outs, |i, why| {
                if failure.is_ok()
                    && let Some(peer) = outs[i].to
                {
                    failure = observer.send_failed(peer, why);
                }
            });
            tally.replied += totals.sent;
            tally.send_failed += totals.failed;
            tally.bytes_out += totals.bytes;
            if let Some(sessions) = &self.sessions {
                tally.sessions_refused = sessions.refused() - sessions_refused;
                sessions_refused = sessions.refused();
            }
            self.counters.add(&tally, batch.kernel_drops());
            self.counters.set_in_use(
                self.sessions.as_ref().map_or(0, Sessions::len),
                self.streams.len(),
            );
            failure.map_err(output)?;
            observer.batch_done().map_err(output)?;
        }
        Ok(())
    }
}

/// A server running on threads of its own; dropping it stops the server and waits for it.
#[derive(Debug)]
pub struct RunningServer {
    server: Arc<Server>,
    stop: Stop,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl RunningServer {
    /// The address the server is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The counters so far; a reply may reach its client a moment before the batch that
    /// sent it is counted (see [`RunningServer::stop`] for final figures).
    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// Stops the server, waits for its threads, and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.server.stats()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A receive timeout reads as `WouldBlock` on Unix and `TimedOut` on Windows.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
