//! The library API as a Rust user drives it: a server on port 0 inside a test, a client.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udpkit::{Backoff, Client, Error, Observer, Server, Stop};

fn a_spawned_server_answers_and_stops_when_dropped() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .spawn();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let client = Client::connect(addr).unwrap();
    let reply = client
        .request(b"", &Backoff::default(), &Stop::new(), |_| {})
        .unwrap();
    assert_eq!(reply.data, b"Your data was 0 bytes long");
    assert_eq!(reply.attempts, 1);
    drop(server);
    // Nothing serves the port any more: the kernel answers with port unreachable.
    let err = client
        .request(b"again", &Backoff::default(), &Stop::new(), |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
}

/// Collects what the server saw, for the test to read once the server stops.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Datagram>>>);

type Datagram = (SocketAddr, Vec<u8>);

impl Observer for Seen {
    fn datagram(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        self.0.lock().unwrap().push((peer, data.to_vec()));
        Ok(())
    }
    fn send_failed(&mut self, _: SocketAddr, why: udpkit::Refusal) -> io::Result<()> {
        Err(io::Error::other(format!("unexpected send failure: {why}")))
    }
    fn recv_failed(&mut self, e: &io::Error) -> io::Result<()> {
        Err(io::Error::new(e.kind(), "unexpected receive failure"))
    }
}

fn an_observer_hears_every_datagram_and_stop_ends_run() {
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr();
    let stop = Stop::new();
    let seen = Seen::default();
    let runner = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || server.run(&stop, || seen.clone()).map(|()| server.stats()))
    };
    let client = Client::connect(addr).unwrap();
    for text in [&b"one"[..], b"two", b"\xff"] {
        client
            .request(text, &Backoff::default(), &Stop::new(), |_| {})
            .unwrap();
    }
    stop.stop();
    let stats = runner.join().unwrap().unwrap();
    let seen = seen.0.lock().unwrap();
    let data: Vec<&[u8]> = seen.iter().map(|(_, d)| d.as_slice()).collect();
    assert_eq!(data, [&b"one"[..], b"two", b"\xff"]);
    assert!(seen.iter().all(|(peer, _)| *peer == client.local_addr()));
    assert_eq!((stats.received, stats.replied, stats.bytes_in), (3, 3, 7));
    assert_eq!(
        stats.bytes_out,
        3 * "Your data was 3 bytes long".len() as u64
    );
}

fn attempts_are_reported_with_their_waits() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Client::connect(silent.local_addr().unwrap()).unwrap();
    let backoff = Backoff {
        first_wait: Duration::from_millis(5),
        max_wait: Duration::from_millis(20),
    };
    let mut attempts = Vec::new();
    let err = client
        .request(b"x", &backoff, &Stop::new(), |e| {
            if let udpkit::ClientEvent::Sent(a) = e {
                attempts.push((a.number, a.wait))
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::NoReply { tries: 3, .. }), "{err}");
    let ms = |n| Duration::from_millis(n);
    assert_eq!(attempts, [(1, ms(5)), (2, ms(10)), (3, ms(20))]);
}

udpkit_tests! {
    a_spawned_server_answers_and_stops_when_dropped,
    an_observer_hears_every_datagram_and_stop_ends_run,
    attempts_are_reported_with_their_waits,
}
