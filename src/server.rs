//! The seed's server: answers every datagram with `Your data was N bytes long`.
//!
//! Promise: no datagram and no failed reply stops the server; it stops only when told to
//! (a [`Stop`] handle) or when its [`Observer`] fails, and it reports every datagram and
//! every failure to that observer. Library users can run one on port 0 in their own tests.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::protocol::{MAX_REPLY, RECV_BUFFER, emit_reply};
use crate::{Error, net};

/// How often a blocked server looks at its [`Stop`] handle: the longest a stop waits.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Hears what the server does, as it does it. The CLI prints the seed's lines; a library
/// user may count, collect or ignore (`()` ignores everything).
pub trait Observer {
    /// A datagram arrived from `peer`; its reply is sent next.
    fn datagram(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()>;
    /// The reply to `peer` could not be sent; the server goes on.
    fn send_failed(&mut self, peer: SocketAddr, error: &io::Error) -> io::Result<()>;
    /// Receiving failed; the server goes on.
    fn recv_failed(&mut self, error: &io::Error) -> io::Result<()>;
}

impl Observer for () {
    fn datagram(&mut self, _: SocketAddr, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn send_failed(&mut self, _: SocketAddr, _: &io::Error) -> io::Result<()> {
        Ok(())
    }
    fn recv_failed(&mut self, _: &io::Error) -> io::Result<()> {
        Ok(())
    }
}

/// Tells a running server to stop; clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the server to stop; it returns from `run` within about 0.1 s.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A bound server socket, ready to run.
#[derive(Debug)]
pub struct Server {
    socket: UdpSocket,
    local: SocketAddr,
}

impl Server {
    /// Binds `addr`; port 0 picks a free port, which [`Server::local_addr`] tells.
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let socket = net::bind(addr)?;
        socket
            .set_read_timeout(Some(STOP_POLL))
            .map_err(|e| Error::io("cannot set the socket's timeout", e))?;
        let local = net::local_addr(&socket)?;
        Ok(Server { socket, local })
    }

    /// The address actually bound (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `stop` is set or `observer` returns an error (then `Error::Output`).
    pub fn run<O: Observer>(&self, stop: &Stop, observer: &mut O) -> Result<(), Error> {
        let output = |source| Error::Output { source };
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut reply = [0u8; MAX_REPLY];
        while !stop.is_stopped() {
            let (len, peer) = match self.socket.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    observer.recv_failed(&e).map_err(output)?;
                    continue;
                }
            };
            observer.datagram(peer, &buf[..len]).map_err(output)?;
            let n = emit_reply(&mut reply, len);
            if let Err(e) = self.socket.send_to(&reply[..n], peer) {
                observer.send_failed(peer, &e).map_err(output)?;
            }
        }
        Ok(())
    }

    /// Runs the server, silent, on a thread of its own until the handle is dropped.
    ///
    /// ```
    /// let server = udpkit::Server::bind("127.0.0.1:0".parse().unwrap()).unwrap().spawn();
    /// let client = udpkit::Client::connect(server.local_addr()).unwrap();
    /// let reply = client.request(b"hello", &udpkit::Backoff::default(), |_| {}).unwrap();
    /// assert_eq!(reply.data, b"Your data was 5 bytes long");
    /// ```
    pub fn spawn(self) -> RunningServer {
        let stop = Stop::new();
        let local = self.local;
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || self.run(&stop, &mut ()))
        };
        RunningServer {
            local,
            stop,
            thread: Some(thread),
        }
    }
}

/// A server running on its own thread; dropping it stops the server and waits for it.
#[derive(Debug)]
pub struct RunningServer {
    local: SocketAddr,
    stop: Stop,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
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
