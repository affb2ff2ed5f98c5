//! Fuzz target for the server's side of `udpkit stream`: any sequence of datagrams from a
//! few sources, with the harness completing the cookie handshake whenever a start asks for
//! one (so that data, queries and malformed datagrams reach real streams). The promise
//! checked: no panic and no overflow whatever the numbers (sequence numbers, times, plans),
//! every answer written over its request and no longer, and the table bounded.
#![no_main]

use std::net::{SocketAddr, UdpSocket};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use udpkit::Stop;
use udpkit::fuzzing::Streams;
use udpkit::wire::stream::Message;

fn socket() -> &'static UdpSocket {
    static SOCKET: OnceLock<UdpSocket> = OnceLock::new();
    SOCKET.get_or_init(|| UdpSocket::bind("127.0.0.1:0").expect("a socket"))
}

fuzz_target!(|data: &[u8]| {
    let mut streams = Streams::new();
    let stop = Stop::new();
    let start = Instant::now();
    // Datagrams of the input: a length byte, a source byte, the bytes.
    let mut rest = data;
    let mut step = 0u64;
    while rest.len() >= 2 {
        let (len, from) = (rest[0] as usize, rest[1]);
        rest = &rest[2..];
        let take = len.min(rest.len());
        let mut datagram = rest[..take].to_vec();
        rest = &rest[take..];
        step += 1;
        let peer = SocketAddr::from(([127, 0, from % 4, 1], 4000 + u16::from(from % 3)));
        let now = start + Duration::from_millis(step * 37);
        // No reverse streams: they would start sending threads.
        if let Some(Message::Start { id, cookie: 0, mut plan }) = Message::parse(&datagram) {
            plan.reverse = false;
            let mut ask = vec![0u8; 200];
            let n = Message::Start { id, cookie: 0, plan }.emit(&mut ask, 0);
            let answer = streams.handle(peer, &mut ask[..n], now, step, socket(), &stop);
            if let Some(Message::Accept { cookie, .. }) = answer.and_then(|a| Message::parse(&ask[..a])) {
                let n = Message::Start { id, cookie, plan }.emit(&mut ask, 0);
                let _ = streams.handle(peer, &mut ask[..n], now, step, socket(), &stop);
            }
            continue;
        }
        let before = datagram.len();
        if let Some(answer) = streams.handle(peer, &mut datagram, now, step * 1_000_003, socket(), &stop) {
            assert!(answer <= before, "an answer longer than its request");
        }
        assert!(streams.len() <= udpkit::limits::STREAMS_PER_THREAD);
    }
});
