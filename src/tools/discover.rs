//! `udpkit discover`: one request to a broadcast address, and every server that answers
//! within the window, with its round-trip time (SO_BROADCAST, chapter 2 of the book).
//!
//! Promise: exactly one request is sent; only replies that repeat its request ID, or that
//! are the seed's reply for its length (servers that do not repeat IDs), are listed, each
//! server once, in the order they answered; those without the ID are marked unverified
//! (anyone who can guess the port and length could have sent them); a reply with the ID
//! from an address already listed as unverified makes it verified. A multicast address is
//! refused: a server cannot reply from one. The wait ends by itself.

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

/// A server that answered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Found {
    pub address: SocketAddr,
    pub rtt: Duration,
    /// The reply repeated the request's ID; false for the seed's sentence alone.
    pub verified: bool,
}

/// Sends one request to `broadcast` and collects the servers that answer within `wait`.
pub fn discover(broadcast: SocketAddr, wait: Duration) -> Result<Vec<Found>, Error> {
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
    let mut poller = Poller::new(&Stop::new()).map_err(waiting)?;
    poller.add(&socket, 0).map_err(waiting)?;
    // Answers are under 100 bytes; a longer datagram is cut short and fails to parse.
    let mut answers = RecvBatch::new(2048);
    let mut found: Vec<Found> = Vec::new();
    let deadline = sent_at + wait;
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
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
                }
                Some(_) => {}
                None => found.push(Found {
                    address: from,
                    rtt,
                    verified,
                }),
            }
        }
    }
    Ok(found)
}
