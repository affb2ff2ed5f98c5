//! `udpkit discover`: one request to a broadcast address, and every server that answers
//! within the window, with its round-trip time (SO_BROADCAST, chapter 2 of the book).
//!
//! Promise: exactly one request is sent; only replies that repeat its request ID, or that
//! are the seed's reply for its length (servers that do not repeat IDs), are listed, each
//! server once, in the order they answered; those without the ID are marked unverified
//! (anyone who can guess the port and length could have sent them); a reply with the ID
//! from an address already listed as unverified makes it verified. A multicast address is
//! refused: a server cannot reply from one. The wait ends by itself, or at once when the
//! caller's [`Stop`] is set (the report then says so, with the servers found until then).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::io::datagram::RecvBatch;
use crate::io::socket as net;
use crate::io::wait::Poller;
use crate::wire::{RequestId, emit_request, parse_reply};
use crate::{Error, Stop, addr};

/// Bytes in the discovery request: an ID and a little padding, as ping's default.
const SIZE: usize = 38;

/// How long `udpkit discover` waits for answers unless told (`-W`).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// Where to ask, and for how long to listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// A broadcast address and the servers' port (`255.255.255.255:1060`, a subnet's
    /// broadcast address, or one server's own address).
    pub broadcast: SocketAddr,
    /// How long to collect answers after the request went.
    pub wait: Duration,
}

impl Config {
    /// Asks `broadcast` and listens for [`DEFAULT_WAIT`], as `udpkit discover` does.
    pub fn new(broadcast: SocketAddr) -> Self {
        Config {
            broadcast,
            wait: DEFAULT_WAIT,
        }
    }
}

/// A server that answered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Found {
    /// Where the answer came from.
    pub address: SocketAddr,
    /// From the request to the answer.
    pub rtt: Duration,
    /// The reply repeated the request's ID; false for the seed's sentence alone.
    pub verified: bool,
}

/// What a discovery found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The address asked ([`Config::broadcast`]).
    pub broadcast: SocketAddr,
    /// Every server that answered, once each, in the order they answered.
    pub servers: Vec<Found>,
    /// The window asked for ([`Config::wait`]).
    pub wait: Duration,
    /// From the request to the end of listening: the window, or less when stopped.
    pub elapsed: Duration,
    /// The caller's stop ended the listening before the window had passed.
    pub stopped: bool,
}

impl Report {
    /// Servers whose answer did not repeat the request's ID.
    pub fn unverified(&self) -> usize {
        self.servers.iter().filter(|f| !f.verified).count()
    }
}

/// Sends one request to `config.broadcast` and collects the servers that answer within
/// `config.wait`, or until `stop` is set; `on_found` hears of each server as it is listed,
/// and again when a reply with the request's ID verifies one listed as unverified.
///
/// ```
/// use udpkit::{Server, Stop, discover};
///
/// let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
/// // One server's own address works as well as a broadcast address.
/// let config = discover::Config {
///     wait: std::time::Duration::from_millis(200),
///     ..discover::Config::new(server.local_addr())
/// };
/// let report = discover::discover(&config, &Stop::new(), |found| {
///     println!("{} answered in {:?}", found.address, found.rtt);
/// })?;
/// assert_eq!(report.servers.len(), 1);
/// assert!(report.servers[0].verified);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn discover(
    config: &Config,
    stop: &Stop,
    mut on_found: impl FnMut(&Found),
) -> Result<Report, Error> {
    let Config { broadcast, wait } = *config;
    if broadcast.ip().is_multicast() {
        return Err(Error::Invalid(format!(
            "{} is a multicast address, and a server cannot reply from one: give a \
             broadcast address (255.255.255.255 or a subnet's, like 192.0.2.255)",
            broadcast.ip()
        )));
    }
    let any = if broadcast.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = net::bind(any.parse().expect("a valid address"), false, "")?;
    socket
        .set_broadcast(true)
        .map_err(|e| Error::io("cannot allow broadcast (SO_BROADCAST)", e))?;
    let id = RequestId {
        nonce: fastrand::u64(..),
        seq: 0,
    };
    let mut request = Vec::new();
    emit_request(&mut request, id, SIZE);
    let sent_at = Instant::now();
    socket
        .send_to(&request, broadcast)
        .map_err(|e| Error::io(format!("cannot send to {broadcast}"), e))?;
    let waiting = |e| Error::io(format!("cannot wait for answers to {broadcast}"), e);
    socket.set_nonblocking(true).map_err(waiting)?;
    let mut poller = Poller::new(stop).map_err(waiting)?;
    poller.add(&socket, 0).map_err(waiting)?;
    // Answers are under 100 bytes; a longer datagram is cut short and fails to parse.
    let mut answers = RecvBatch::new(2048);
    let mut found: Vec<Found> = Vec::new();
    let deadline = sent_at + wait;
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero() && !stop.is_stopped())
    {
        if !poller.wait_one(left).map_err(waiting)? {
            continue;
        }
        let n = match answers.recv(&socket) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                return Err(Error::io(
                    format!("cannot receive answers to {broadcast}"),
                    e,
                ));
            }
        };
        let rtt = sent_at.elapsed();
        for i in 0..n {
            let (meta, data) = answers.get(i);
            let Some(from) = meta.source else { continue };
            let Some(reply) = parse_reply(data).filter(|r| r.len == SIZE) else {
                continue;
            };
            let verified = match reply.id {
                Some(got) if got == id => true,
                Some(_) => continue,
                None => false,
            };
            let from = addr::shown(from);
            match found.iter_mut().find(|f| f.address == from) {
                Some(known) if verified && !known.verified => {
                    known.verified = true;
                    known.rtt = rtt;
                    on_found(known);
                }
                Some(_) => {}
                None => {
                    let new = Found {
                        address: from,
                        rtt,
                        verified,
                    };
                    found.push(new);
                    on_found(&new);
                }
            }
        }
    }
    let elapsed = sent_at.elapsed();
    Ok(Report {
        broadcast,
        servers: found,
        wait,
        elapsed,
        stopped: stop.is_stopped() && elapsed < wait,
    })
}
