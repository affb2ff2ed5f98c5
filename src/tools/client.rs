//! The seed's client with chapter 2's fixes: a connected socket (only the server's replies
//! count), retransmission with exponential backoff (never waiting forever), and a reply that
//! must answer this request.
//!
//! Promise: `request` returns the server's reply (only `Your data was N bytes long` naming
//! the length sent is one; anything else from the server's address is counted and passed
//! over), or within the backoff's total wait a [`Error::NoReply`], or at once
//! [`Error::Refused`] when the server's port is closed, or [`Error::Stopped`] as soon as the
//! caller's [`Stop`] is set (nothing more is sent once it is). It sends at most
//! [`MAX_TRIES`] times, and never waits less than [`MIN_WAIT`] between tries.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::Error;
use crate::Stop;
use crate::io::socket as net;
use crate::io::wait::Receiver;
use crate::wire::{RECV_BUFFER, parse_reply};

/// How long to wait for a reply before sending again: `first_wait`, doubling, until the
/// next wait would pass `max_wait`. The default is the book's `udp_remote.py`: 0.1 s up to
/// 2.0 s, that is five tries and about 3.1 s in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first try.
    pub first_wait: Duration,
    /// The longest wait between tries; the waits double up to it.
    pub max_wait: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(2),
        }
    }
}

/// The most transmissions of one request, whatever the backoff says.
pub const MAX_TRIES: usize = crate::limits::CLIENT_TRIES;

/// The shortest wait for a reply: a millisecond.
pub const MIN_WAIT: Duration = crate::limits::CLIENT_WAIT_MIN;

impl Backoff {
    /// The successive waits: `first_wait` (at least [`MIN_WAIT`]) doubling up to
    /// `max_wait`; always at least one, at most [`MAX_TRIES`].
    pub fn waits(&self) -> impl Iterator<Item = Duration> + use<> {
        let first = self.first_wait.max(MIN_WAIT);
        let max = self.max_wait.max(first);
        std::iter::successors(Some(first), move |w| {
            w.checked_mul(2).filter(|next| *next <= max)
        })
        .take(MAX_TRIES)
    }
}

/// One transmission of the request, told to the caller as it goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first transmission.
    pub number: u32,
    /// How long the client now waits for a reply.
    pub wait: Duration,
}

/// What happens during a request, told to the caller as it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A transmission just went out.
    Sent(Attempt),
    /// A datagram from the server's address that is not the reply to this request.
    Ignored(&'a [u8]),
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The reply, as it came.
    pub data: Vec<u8>,
    /// Where it came from (always the server: nothing else is taken).
    pub from: SocketAddr,
    /// How many transmissions it took.
    pub attempts: u32,
    /// Datagrams from the server's address that were not the reply to this request (not
    /// the seed's sentence, or naming another length), passed over.
    pub ignored: u32,
}

/// A client socket connected to one server.
#[derive(Debug)]
pub struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
}

impl Client {
    /// Opens a socket connected to `server`; the OS picks the client's port.
    pub fn connect(server: SocketAddr) -> Result<Self, Error> {
        let socket = net::connect(server)?;
        let local = net::local_addr(&socket)?;
        Ok(Client {
            socket,
            server,
            local,
        })
    }

    /// The address the OS assigned to this client.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server this client asks.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `data` and waits for the reply, retransmitting per `backoff`, until the reply
    /// comes, the tries run out or `stop` is set (then [`Error::Stopped`], at once, and
    /// nothing more is sent); `on_event` hears of each transmission just after it is sent,
    /// and of each datagram passed over.
    ///
    /// Only the seed's reply naming `data`'s length is taken; anything else is counted in
    /// [`Reply::ignored`] and passed over.
    ///
    /// ```
    /// use udpkit::{Backoff, Client, Error, Stop};
    ///
    /// // Nobody answers here; another thread gives up on the request after 50 ms.
    /// let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let client = Client::connect(silent.local_addr()?)?;
    /// let stop = Stop::new();
    /// let giving_up = {
    ///     let stop = stop.clone();
    ///     std::thread::spawn(move || {
    ///         std::thread::sleep(std::time::Duration::from_millis(50));
    ///         stop.stop();
    ///     })
    /// };
    /// let err = client.request(b"hello", &Backoff::default(), &stop, |_| {}).unwrap_err();
    /// assert!(matches!(err, Error::Stopped { .. }), "{err}");
    /// giving_up.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(
        &self,
        data: &[u8],
        backoff: &Backoff,
        stop: &Stop,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<Reply, Error> {
        let mut buf = vec![0u8; RECV_BUFFER];
        // Its waits end by themselves, or at once when the stop is set.
        let mut rx = Receiver::new(&self.socket, stop).map_err(|e| self.failed(e))?;
        let started = Instant::now();
        let mut tries = 0;
        let mut ignored = 0;
        for wait in backoff.waits() {
            if stop.is_stopped() {
                return Err(self.stopped());
            }
            tries += 1;
            match self.socket.send(data) {
                // A full send buffer: this try did not go; the next one will.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => {
                    other.map_err(|e| self.failed(e))?;
                }
            }
            on_event(Event::Sent(Attempt {
                number: tries,
                wait,
            }));
            let deadline = Instant::now() + wait;
            if let Some(len) = self.receive_until(
                &mut rx,
                deadline,
                &mut buf,
                data.len(),
                &mut ignored,
                &mut on_event,
            )? {
                return Ok(Reply {
                    data: buf[..len].to_vec(),
                    from: self.server,
                    attempts: tries,
                    ignored,
                });
            }
        }
        if stop.is_stopped() {
            return Err(self.stopped());
        }
        Err(Error::NoReply {
            server: self.server,
            tries,
            waited: started.elapsed(),
            spoke: None,
        })
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            what: format!("the request to {}", self.server),
        }
    }

    /// Waits until `deadline` for a reply that answers a request of `sent` bytes.
    fn receive_until(
        &self,
        rx: &mut Receiver<'_>,
        deadline: Instant,
        buf: &mut [u8],
        sent: usize,
        ignored: &mut u32,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<Option<usize>, Error> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match rx.recv(buf, left) {
                Ok(None) => return Ok(None),
                Ok(Some(len)) => match parse_reply(&buf[..len]) {
                    Some(reply) if reply.len == sent => return Ok(Some(len)),
                    _ => {
                        *ignored += 1;
                        on_event(Event::Ignored(&buf[..len]));
                    }
                },
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    fn failed(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            Error::Refused {
                server: self.server,
            }
        } else {
            Error::io(format!("cannot exchange datagrams with {}", self.server), e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(waits: impl Iterator<Item = Duration>) -> Vec<f64> {
        waits.map(|w| w.as_secs_f64()).collect()
    }

    #[test]
    fn default_backoff_is_the_books_five_waits() {
        assert_eq!(secs(Backoff::default().waits()), [0.1, 0.2, 0.4, 0.8, 1.6]);
    }

    #[test]
    fn backoff_always_tries_once() {
        let b = Backoff {
            first_wait: Duration::from_secs(3),
            max_wait: Duration::from_secs(1),
        };
        assert_eq!(secs(b.waits()), [3.0]);
    }

    #[test]
    fn waits_are_bounded_below_and_in_number() {
        let b = Backoff {
            first_wait: Duration::from_secs_f64(1e-300),
            max_wait: Duration::from_secs(86_400),
        };
        let waits: Vec<Duration> = b.waits().collect();
        assert_eq!(waits.len(), MAX_TRIES);
        assert_eq!(waits[0], MIN_WAIT);
    }

    #[test]
    fn a_wait_equal_to_the_bound_is_still_taken() {
        let b = Backoff {
            first_wait: Duration::from_millis(500),
            max_wait: Duration::from_secs(2),
        };
        assert_eq!(secs(b.waits()), [0.5, 1.0, 2.0]);
    }
}
