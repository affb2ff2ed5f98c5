//! The library API as a Rust user drives it: a server on port 0 inside a test, and every
//! tool against it (client, ping, bench, stream both ways, mtu, discover, relay, merge of
//! bench's interval logs), each checked on its report's figures; and for each tool that
//! runs until told, a `Stop` set from another thread that ends it promptly. Every address
//! is on loopback; every run is bounded even if a stop were not heard.

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use udpkit::{
    Backoff, Client, Error, Observer, RunningServer, Server, Stop, bench, discover, merge, mtu,
    ping, relay, stream,
};
use udpkit::{Offload, Requests};

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

/// Long enough that a run that ends by itself is not mistaken for one a stop ended.
const LONG: Duration = Duration::from_secs(20);

/// How soon after its stop a tool must have returned.
const PROMPTLY: Duration = Duration::from_secs(2);

/// When the stops of the tests below are set.
const STOP_AFTER: Duration = Duration::from_millis(200);

fn loopback_server() -> RunningServer {
    Server::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .spawn()
}

/// A socket that reads nothing and answers nothing: no reply, and no ICMP error either.
fn silent_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sets `stop` from another thread after `after`.
fn stop_after(stop: &Stop, after: Duration) -> JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        stop.stop();
    })
}

/// Runs `run` with a stop set from another thread after [`STOP_AFTER`], and checks that it
/// returned within [`PROMPTLY`] of the stop; its result.
fn stopped_promptly<T>(what: &str, run: impl FnOnce(&Stop) -> T) -> T {
    let stop = Stop::new();
    let started = Instant::now();
    let stopper = stop_after(&stop, STOP_AFTER);
    let result = run(&stop);
    let took = started.elapsed();
    stopper.join().unwrap();
    assert!(
        took >= STOP_AFTER && took < STOP_AFTER + PROMPTLY,
        "{what} took {took:?} with a stop after {STOP_AFTER:?}"
    );
    result
}

fn a_request_ends_with_stopped_when_the_stop_is_set() {
    let silent = silent_socket();
    let client = Client::connect(silent.local_addr().unwrap()).unwrap();
    // Alone, the request would wait 20 s for its one try.
    let backoff = Backoff {
        first_wait: LONG,
        max_wait: LONG,
    };
    let mut tries = 0;
    let err = stopped_promptly("a request", |stop| {
        client
            .request(b"x", &backoff, stop, |_| tries += 1)
            .unwrap_err()
    });
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("stopped before the request to 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(tries, 1);
}

fn a_request_with_its_stop_already_set_sends_nothing() {
    let silent = silent_socket();
    silent.set_nonblocking(true).unwrap();
    let client = Client::connect(silent.local_addr().unwrap()).unwrap();
    let stop = Stop::new();
    stop.stop();
    let err = client
        .request(b"x", &Backoff::default(), &stop, |_| {
            panic!("nothing is sent")
        })
        .unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    let mut buf = [0u8; 16];
    let nothing = silent.recv(&mut buf).unwrap_err();
    assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
}

fn ping_config(target: SocketAddr, count: Option<u64>, interval: Duration) -> ping::Config {
    ping::Config {
        target,
        count,
        interval,
        size: 64,
        timeout: Duration::from_secs(1),
        requests: Requests::default(),
    }
}

fn a_ping_of_three_requests_gets_three_replies() {
    let server = loopback_server();
    let config = ping_config(server.local_addr(), Some(3), Duration::ZERO);
    let mut replies = Vec::new();
    let report = ping::ping(&config, &Stop::new(), |event| {
        if let ping::Event::Reply { seq, verified, .. } = *event {
            replies.push((seq, verified));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!((report.tally.sent, report.tally.received), (3, 3));
    assert_eq!(report.tally.lost(), 0);
    assert_eq!(report.latency.count(), 3);
    assert_eq!(replies, [(0, true), (1, true), (2, true)]);
    assert_eq!(report.matching, udpkit::Matching::Ids);
    assert_eq!(server.stop().replied, 3);
}

fn a_ping_ends_promptly_when_stopped() {
    let server = loopback_server();
    // Alone: 1000 requests 20 ms apart, 20 s.
    let config = ping_config(server.local_addr(), Some(1000), Duration::from_millis(20));
    let report = stopped_promptly("ping", |stop| {
        ping::ping(&config, stop, |_| Ok(())).unwrap()
    });
    let t = &report.tally;
    assert!(t.sent >= 2 && t.sent < 1000, "{t:?}");
    assert_eq!(t.received, t.sent, "{t:?}");
}

fn bench_config(target: SocketAddr) -> bench::Config {
    bench::Config {
        target,
        flows: 2,
        window: 8,
        duration: None,
        count: None,
        rate: None,
        size: 64,
        timeout: Duration::from_secs(1),
        offload: Offload::default(),
        threads: 1,
        requests: Requests::default(),
        segment: None,
        start_at: None,
        intervals: false,
    }
}

fn a_bench_of_a_count_gets_every_reply() {
    let server = loopback_server();
    let config = bench::Config {
        count: Some(2000),
        ..bench_config(server.local_addr())
    };
    let report = bench::bench(&config, &Stop::new(), |_| {}).unwrap();
    let t = &report.tally;
    assert_eq!((t.sent, t.received, t.lost()), (2000, 2000, 0), "{t:?}");
    assert_eq!(report.latency.count(), 2000);
    assert!(report.requests_per_second() > 0.0);
    assert_eq!(server.stop().replied, 2000);
}

fn a_bench_ends_promptly_when_stopped() {
    let server = loopback_server();
    let config = bench::Config {
        duration: Some(LONG),
        ..bench_config(server.local_addr())
    };
    let report = stopped_promptly("bench", |stop| bench::bench(&config, stop, |_| {}).unwrap());
    let t = &report.tally;
    assert!(t.received > 0, "{t:?}");
    assert_eq!(t.received, t.sent, "{t:?}");
}

fn stream_config(target: SocketAddr, reverse: bool) -> stream::Config {
    stream::Config {
        target,
        pps: 2000.0,
        size: 200,
        duration: None,
        count: Some(200),
        reverse,
        interval: Duration::from_millis(100),
        tos: None,
        offload: false,
    }
}

fn a_stream_both_ways_receives_what_was_sent() {
    let server = loopback_server();
    for reverse in [false, true] {
        let config = stream_config(server.local_addr(), reverse);
        let mut intervals = 0;
        let report = stream::stream(&config, &Stop::new(), |_| intervals += 1).unwrap();
        let t = &report.total;
        assert_eq!(
            (t.sent, t.received, t.lost),
            (200, 200, 0),
            "{reverse}: {t:?}"
        );
        assert_eq!(t.bytes, 200 * 200, "{reverse}: {t:?}");
        assert!(report.complete, "{reverse}: {:?}", report.incomplete);
        assert!(!report.stopped);
        assert_eq!(intervals, report.intervals.len());
    }
}

fn a_stream_ends_promptly_when_stopped() {
    let server = loopback_server();
    for reverse in [false, true] {
        let config = stream::Config {
            count: None,
            duration: Some(LONG),
            pps: 1000.0,
            ..stream_config(server.local_addr(), reverse)
        };
        let report = stopped_promptly("stream", |stop| {
            stream::stream(&config, stop, |_| {}).unwrap()
        });
        assert!(report.stopped, "{reverse}");
        let t = &report.total;
        assert!(t.sent > 0 && t.sent < 20_000, "{reverse}: {t:?}");
    }
}

fn mtu_on_loopback_finds_the_largest_datagram() {
    let server = loopback_server();
    let mut tried = Vec::new();
    let config = mtu::Config::new(server.local_addr());
    let report = mtu::mtu(&config, &Stop::new(), |t| tried.push(*t)).unwrap();
    assert_eq!((report.payload, report.path_mtu), (65_507, 65_535));
    assert!(report.authenticated);
    assert_eq!((report.forged, report.icmp_errors), (0, 0));
    // On loopback every size passes at its first try: a binary search up to the largest.
    assert!(
        tried.iter().all(|t| t.answered() && t.tries == 1),
        "{tried:?}"
    );
    assert_eq!(tried.last().unwrap().size, 65_507, "{tried:?}");
    assert!(tried.windows(2).all(|w| w[0].size < w[1].size), "{tried:?}");
    let tries: u32 = tried.iter().map(|t| t.tries).sum();
    assert_eq!(tries, report.probes);
}

fn mtu_ends_with_stopped_when_stopped() {
    // Nobody answers: alone, the first size's ten tries would take 20 s.
    let silent = silent_socket();
    let config = mtu::Config {
        wait: Duration::from_secs(2),
        ..mtu::Config::new(silent.local_addr().unwrap())
    };
    let mut tried = 0;
    let err = stopped_promptly("mtu", |stop| {
        mtu::mtu(&config, stop, |_| tried += 1).unwrap_err()
    });
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("stopped before the search for the path MTU to "),
        "{err}"
    );
    assert_eq!(tried, 0);
}

fn discover_finds_the_server() {
    // A broadcast reaches only servers bound to the wildcard address; this one listens on
    // 127.0.0.1 alone, and is asked at its own address (tests/discover_mtu.rs broadcasts
    // to 127.255.255.255 through the binary).
    let server = loopback_server();
    let config = discover::Config {
        wait: Duration::from_millis(300),
        ..discover::Config::new(server.local_addr())
    };
    assert_eq!(
        discover::Config::new(server.local_addr()).wait,
        Duration::from_secs(1)
    );
    let mut heard = Vec::new();
    let report = discover::discover(&config, &Stop::new(), |f| heard.push(*f)).unwrap();
    assert_eq!(report.servers.len(), 1, "{report:?}");
    let found = report.servers[0];
    assert_eq!(found.address, server.local_addr());
    assert!(found.verified);
    assert!(found.rtt > Duration::ZERO && found.rtt < config.wait);
    assert_eq!(heard, report.servers);
    assert_eq!(report.unverified(), 0);
    assert_eq!(report.broadcast, server.local_addr());
    assert!(!report.stopped);
    assert!(report.elapsed >= config.wait, "{report:?}");
}

fn discover_ends_promptly_when_stopped() {
    let server = loopback_server();
    let config = discover::Config {
        wait: LONG,
        ..discover::Config::new(server.local_addr())
    };
    let report = stopped_promptly("discover", |stop| {
        discover::discover(&config, stop, |_| {}).unwrap()
    });
    assert!(report.stopped);
    assert!(report.elapsed < config.wait);
    // The answer came long before the stop.
    assert_eq!(report.servers.len(), 1, "{report:?}");
}

fn a_relay_carries_requests_and_ends_promptly_when_stopped() {
    let server = loopback_server();
    let config = relay::Config::new("127.0.0.1:0".parse().unwrap(), server.local_addr());
    let relay = relay::Relay::bind(config).unwrap();
    let through = relay.local_addr();
    assert_ne!(through.port(), 0);
    let stop = Stop::new();
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || relay.run(&stop))
    };
    let client = Client::connect(through).unwrap();
    for text in [&b"one"[..], b"two", b"three"] {
        let reply = client
            .request(text, &Backoff::default(), &Stop::new(), |_| {})
            .unwrap();
        let expected = format!("Your data was {} bytes long", text.len());
        assert_eq!(reply.data, expected.as_bytes());
        assert_eq!(reply.from, through);
    }
    let stopped_at = Instant::now();
    stop.stop();
    let counters = running.join().unwrap().unwrap();
    assert!(
        stopped_at.elapsed() < PROMPTLY,
        "{:?}",
        stopped_at.elapsed()
    );
    assert_eq!((counters.up.received, counters.up.forwarded), (3, 3));
    assert_eq!((counters.down.received, counters.down.forwarded), (3, 3));
    assert_eq!(counters.sessions_opened, 1);
    assert_eq!(server.stop().replied, 3);
}

fn merge_adds_up_two_agents_interval_logs() {
    let server = loopback_server();
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut sent = 0;
    for agent in 1..=2 {
        let config = bench::Config {
            count: Some(1000),
            segment: Some((agent, 2)),
            intervals: true,
            ..bench_config(server.local_addr())
        };
        let report = bench::bench(&config, &Stop::new(), |_| {}).unwrap();
        assert_eq!(report.tally.received, 500);
        sent += report.tally.sent;
        let path = dir.path().join(format!("agent-{agent}.hlog"));
        let mut file = std::fs::File::create(&path).unwrap();
        report.write_interval_log(&mut file, "run").unwrap();
        files.push(path);
    }
    let report = merge::merge_files(&files).unwrap();
    assert_eq!(report.agents.len(), 2);
    assert!(report.complete, "{:?}", report.notes);
    let t = &report.totals;
    assert_eq!((t.sent, t.received, t.lost), (sent, 1000, 0), "{t:?}");
    assert_eq!(report.latency.count(), 1000);
    assert_eq!(
        report.per_second.iter().map(|s| s.replies).sum::<u64>(),
        1000
    );
}

fn a_monitor_counts_a_target_reloads_and_stops_promptly() {
    use udpkit::monitor::{Config, Monitor, Target};
    let server = loopback_server();
    let target = |count| Target {
        address: server.local_addr(),
        name: "server".into(),
        requests: udpkit::Requests::default(),
        size: 64,
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(500),
        count,
    };
    let stop = Stop::new();
    let monitor = Monitor::start(
        &Config {
            targets: vec![target(Some(20))],
            probe: None,
        },
        &stop,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = |m: &Monitor| {
        m.snapshot()
            .targets
            .first()
            .is_some_and(|(_, c)| c.tally.received + c.lost == 20)
    };
    while !settled(&monitor) {
        assert!(Instant::now() < deadline, "20 probes not settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let snapshot = monitor.snapshot();
    let (_, counts) = &snapshot.targets[0];
    assert_eq!(
        (counts.tally.sent, counts.tally.received, counts.lost),
        (20, 20, 0)
    );
    assert_eq!(counts.rtt.count(), 20);
    // The same target stays with its counters; another is refused whole.
    let mut bad = target(None);
    bad.interval = Duration::ZERO;
    let change = monitor
        .reload(&Config {
            targets: vec![target(Some(20)), bad],
            probe: None,
        })
        .unwrap_err();
    assert!(change.to_string().contains("interval"), "{change}");
    let change = monitor
        .reload(&Config {
            targets: vec![target(Some(20))],
            probe: None,
        })
        .unwrap();
    assert_eq!((change.added, change.removed, change.kept), (0, 0, 1));
    let stopped_at = Instant::now();
    stop.stop();
    monitor.stop().unwrap();
    assert!(
        stopped_at.elapsed() < PROMPTLY,
        "{:?}",
        stopped_at.elapsed()
    );
}

udpkit_tests! {
    a_monitor_counts_a_target_reloads_and_stops_promptly,
    a_spawned_server_answers_and_stops_when_dropped,
    an_observer_hears_every_datagram_and_stop_ends_run,
    attempts_are_reported_with_their_waits,
    a_request_ends_with_stopped_when_the_stop_is_set,
    a_request_with_its_stop_already_set_sends_nothing,
    a_ping_of_three_requests_gets_three_replies,
    a_ping_ends_promptly_when_stopped,
    a_bench_of_a_count_gets_every_reply,
    a_bench_ends_promptly_when_stopped,
    a_stream_both_ways_receives_what_was_sent,
    a_stream_ends_promptly_when_stopped,
    mtu_on_loopback_finds_the_largest_datagram,
    mtu_ends_with_stopped_when_stopped,
    discover_finds_the_server,
    discover_ends_promptly_when_stopped,
    a_relay_carries_requests_and_ends_promptly_when_stopped,
    merge_adds_up_two_agents_interval_logs,
}
