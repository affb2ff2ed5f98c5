//! `udpkit relay`: a UDP impairment proxy, what netem does in the kernel, without root.
//! Each client source gets its own upstream socket, so replies find their way back
//! (multiplexing by port again); impairments apply per direction.
//!
//! Promise: every datagram is counted once per direction as forwarded, dropped or (at
//! exit) still queued; sessions and the delay queue are bounded, so no traffic pattern
//! grows memory without limit; the loop ends when told to stop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::impair::{Impairer, Settings};
use crate::protocol::RECV_BUFFER;
use crate::{Error, Stop, net};

/// Which traffic the impairments apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Requests, client to server.
    Up,
    /// Replies, server to client.
    Down,
    Both,
}

/// How to relay.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub to: SocketAddr,
    pub impair: Settings,
    pub direction: Direction,
    pub seed: Option<u64>,
    /// A session with no traffic for this long is closed.
    pub idle: Duration,
}

/// Sessions open at once, at most; datagrams from further new sources are dropped.
pub const MAX_SESSIONS: usize = 4096;

/// Datagrams waiting in the delay queue, at most; further ones are dropped.
pub const MAX_QUEUED: usize = 100_000;

/// One direction's counters.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Flow {
    pub received: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Sends the kernel refused.
    pub failed: u64,
}

/// What the relay did.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub up: Flow,
    pub down: Flow,
    pub sessions_opened: u64,
    pub sessions_expired: u64,
    /// Datagrams from new sources dropped because `MAX_SESSIONS` were open.
    pub sessions_refused: u64,
    /// Datagrams still in the delay queue when the relay stopped.
    pub queued_at_exit: u64,
}

impl Counters {
    pub fn describe(&self) -> String {
        let f = |name: &str, c: &Flow| {
            format!(
                "{name}: {} received, {} forwarded, {} dropped, {} duplicated, {} reordered, {} failed",
                c.received, c.forwarded, c.dropped, c.duplicated, c.reordered, c.failed
            )
        };
        format!(
            "{}; {}; sessions: {} opened, {} expired, {} refused; {} still queued",
            f("up", &self.up),
            f("down", &self.down),
            self.sessions_opened,
            self.sessions_expired,
            self.sessions_refused,
            self.queued_at_exit
        )
    }
}

struct Session {
    client: SocketAddr,
    upstream: UdpSocket,
    last_active: Instant,
}

/// A datagram waiting for its time.
struct Delayed {
    at: Instant,
    order: u64,
    up: bool,
    client: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// One direction's impairments and the datagram it holds back for reordering.
struct Path {
    impairer: Option<Impairer>,
    held: Option<(SocketAddr, Vec<u8>, Instant)>,
}

/// How long a datagram held back for reordering waits for another to overtake it.
const HOLD_AT_MOST: Duration = Duration::from_millis(100);

/// A bound relay, ready to run.
pub struct Relay {
    config: Config,
    listener: UdpSocket,
    local: SocketAddr,
}

impl Relay {
    pub fn bind(config: Config) -> Result<Self, Error> {
        let listener = net::bind(config.listen, false)?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
        let local = net::local_addr(&listener)?;
        Ok(Relay {
            config,
            listener,
            local,
        })
    }

    /// The address clients send to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Relays until `stop` is set; returns the counters.
    pub fn run(&self, stop: &Stop) -> Result<Counters, Error> {
        let c = &self.config;
        let seed = c.seed;
        let path = |applies: bool, offset: u64| Path {
            impairer: (applies && !c.impair.is_clean())
                .then(|| Impairer::new(c.impair, seed.map(|s| s.wrapping_add(offset)))),
            held: None,
        };
        let mut up = path(c.direction != Direction::Down, 0);
        let mut down = path(c.direction != Direction::Up, 1);
        let mut counters = Counters::default();
        let mut sessions: Vec<Session> = Vec::new();
        let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
        let mut queue: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
        let mut order = 0u64;
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut last_sweep = Instant::now();

        while !stop.is_stopped() {
            let now = Instant::now();
            // Datagrams whose time has come, and held ones nobody overtook.
            while queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
                let Reverse(d) = queue.pop().expect("peeked");
                self.send(
                    &sessions,
                    &by_client,
                    d.up,
                    d.client,
                    &d.data,
                    &mut counters,
                );
            }
            for (is_up, path) in [(true, &mut up), (false, &mut down)] {
                if path
                    .held
                    .as_ref()
                    .is_some_and(|(_, _, since)| now >= *since + HOLD_AT_MOST)
                {
                    let (client, data, _) = path.held.take().expect("checked");
                    self.send(&sessions, &by_client, is_up, client, &data, &mut counters);
                }
            }
            if now >= last_sweep + Duration::from_secs(1) {
                last_sweep = now;
                let before = sessions.len();
                sessions.retain(|s| now < s.last_active + c.idle);
                if sessions.len() != before {
                    counters.sessions_expired += (before - sessions.len()) as u64;
                    by_client = sessions
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.client, i))
                        .collect();
                }
            }

            let mut wait = Duration::from_millis(100);
            if let Some(Reverse(d)) = queue.peek() {
                wait = wait.min(d.at.saturating_duration_since(now));
            }
            if up.held.is_some() || down.held.is_some() {
                wait = wait.min(Duration::from_millis(5));
            }
            wait_readable(&self.listener, &sessions, wait);

            // Requests from clients.
            loop {
                let (len, client) = match self.listener.recv_from(&mut buf) {
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => {
                        return Err(Error::io(format!("cannot receive on {}", self.local), e));
                    }
                };
                counters.up.received += 1;
                let index = match by_client.get(&client) {
                    Some(&i) => i,
                    None if sessions.len() >= MAX_SESSIONS => {
                        counters.sessions_refused += 1;
                        continue;
                    }
                    None => {
                        let upstream = net::connect(c.to)?;
                        upstream
                            .set_nonblocking(true)
                            .map_err(|e| Error::io("cannot make the socket non-blocking", e))?;
                        sessions.push(Session {
                            client,
                            upstream,
                            last_active: now,
                        });
                        by_client.insert(client, sessions.len() - 1);
                        counters.sessions_opened += 1;
                        sessions.len() - 1
                    }
                };
                sessions[index].last_active = Instant::now();
                self.impair(
                    &sessions,
                    &by_client,
                    &mut up,
                    true,
                    client,
                    &buf[..len],
                    &mut queue,
                    &mut order,
                    &mut counters,
                );
            }
            // Replies from the server, session by session.
            for i in 0..sessions.len() {
                loop {
                    let len = match sessions[i].upstream.recv(&mut buf) {
                        Ok(len) => len,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // ICMP unreachable from the server's side, or a signal: go on.
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => {
                            return Err(Error::io(format!("cannot receive from {}", c.to), e));
                        }
                    };
                    counters.down.received += 1;
                    sessions[i].last_active = Instant::now();
                    let client = sessions[i].client;
                    self.impair(
                        &sessions,
                        &by_client,
                        &mut down,
                        false,
                        client,
                        &buf[..len],
                        &mut queue,
                        &mut order,
                        &mut counters,
                    );
                }
            }
        }
        counters.queued_at_exit =
            queue.len() as u64 + u64::from(up.held.is_some()) + u64::from(down.held.is_some());
        Ok(counters)
    }

    /// Applies one direction's impairments to a datagram and sends or queues its copies.
    #[allow(clippy::too_many_arguments)]
    fn impair(
        &self,
        sessions: &[Session],
        by_client: &HashMap<SocketAddr, usize>,
        path: &mut Path,
        up: bool,
        client: SocketAddr,
        data: &[u8],
        queue: &mut BinaryHeap<Reverse<Delayed>>,
        order: &mut u64,
        counters: &mut Counters,
    ) {
        let now = Instant::now();
        let Some(impairer) = &mut path.impairer else {
            self.send(sessions, by_client, up, client, data, counters);
            return;
        };
        let fate = impairer.decide(now);
        let flow = if up {
            &mut counters.up
        } else {
            &mut counters.down
        };
        if fate.copies == 0 {
            flow.dropped += 1;
            return;
        }
        if fate.copies == 2 {
            flow.duplicated += 1;
        }
        // Only a single copy is held back; a duplicated datagram goes out as it is.
        if fate.hold && fate.copies == 1 && path.held.is_none() {
            flow.reordered += 1;
            path.held = Some((client, data.to_vec(), now));
            return;
        }
        for &at in &fate.at[..fate.copies] {
            if at <= now {
                self.send(sessions, by_client, up, client, data, counters);
            } else if queue.len() < MAX_QUEUED {
                *order += 1;
                queue.push(Reverse(Delayed {
                    at,
                    order: *order,
                    up,
                    client,
                    data: data.to_vec(),
                }));
            } else {
                let flow = if up {
                    &mut counters.up
                } else {
                    &mut counters.down
                };
                flow.dropped += 1;
            }
        }
        // The datagram held back goes once another has overtaken it.
        if let Some((held_client, held, _)) = path.held.take() {
            self.send(sessions, by_client, up, held_client, &held, counters);
        }
    }

    /// Sends one datagram on its way: up through the client's session, down to the client.
    fn send(
        &self,
        sessions: &[Session],
        by_client: &HashMap<SocketAddr, usize>,
        up: bool,
        client: SocketAddr,
        data: &[u8],
        counters: &mut Counters,
    ) {
        let result = if up {
            match by_client.get(&client) {
                Some(&i) => sessions[i].upstream.send(data),
                None => Err(io::ErrorKind::NotFound.into()),
            }
        } else {
            self.listener.send_to(data, client)
        };
        let flow = if up {
            &mut counters.up
        } else {
            &mut counters.down
        };
        match result {
            Ok(_) => flow.forwarded += 1,
            Err(_) => flow.failed += 1,
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
    )
}

/// Sleeps until a socket has a datagram or `wait` passes.
#[cfg(unix)]
fn wait_readable(listener: &UdpSocket, sessions: &[Session], wait: Duration) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
        .chain(sessions.iter().map(|s| s.upstream.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = wait.as_micros().div_ceil(1000).min(1000) as libc::c_int;
    // SAFETY: `fds` is a valid array of pollfd of the length given.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
    }
}

#[cfg(not(unix))]
fn wait_readable(_: &UdpSocket, _: &[Session], wait: Duration) {
    std::thread::sleep(wait.min(Duration::from_millis(1)));
}
