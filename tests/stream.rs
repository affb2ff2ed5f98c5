//! `udpkit stream` against `udpkit server`: exact counts on a clean path, counts equal to
//! the relay's own under loss, duplication and reordering (both ways), and the bad cases:
//! strangers, forgeries, a server restarted mid-stream, a client that goes away.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use udpkit::wire::stream::{Message, Plan, QUERY_LEN};

fn stream_json(to: SocketAddr, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    json_to("stream", to, args)
}

fn a_clean_stream_arrives_whole_both_ways() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    // Both ways, and forward without segmentation offload (batches of single datagrams).
    for (reverse, no_gso) in [(false, false), (true, false), (false, true)] {
        let mut args = vec!["--pps", "20000", "-s", "1200", "-n", "10000", "-i", "0.2"];
        if reverse {
            args.push("--reverse");
        }
        if no_gso {
            args.push("--no-gso");
        }
        let (code, v) = stream_json(addr, &args);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["sent"], 10000, "{v}");
        assert_eq!(v["received"], 10000, "{v}");
        assert_eq!(v["lost"], 0, "{v}");
        assert_eq!(v["duplicates"], 0, "{v}");
        assert_eq!(v["complete"], true, "{v}");
        assert_eq!(v["bytes"], 10000 * 1200, "{v}");
        let intervals = v["intervals"].as_array().unwrap();
        assert!(intervals.len() >= 2, "{v}");
        let summed: u64 = intervals
            .iter()
            .map(|i| i["received"].as_u64().unwrap())
            .sum();
        assert_eq!(summed, 10000, "the intervals add up: {v}");
    }
}

fn a_fast_stream_is_never_refused_by_this_host() {
    // Fast enough that a turn has more datagrams due than one segmented send may carry
    // (46 of 1,400 bytes in 64 KiB): every send must still be one the kernel takes. (A
    // build that packed 64 into one send had every such send refused, `refused_here`.)
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    for extra in [&[][..], &["--no-gso"][..], &["-R"][..]] {
        let mut args = vec!["-b", "1G", "-s", "1400", "-d", "0.5"];
        args.extend_from_slice(extra);
        let (_, v) = stream_json(addr, &args);
        assert_eq!(v["refused_here"], 0, "{extra:?}: {v}");
        assert!(v["received"].as_u64().unwrap() > 1000, "{extra:?}: {v}");
    }
}

fn loss_duplicates_and_reordering_equal_what_the_relay_did_both_ways() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let mut exact = 0;
    for (seed, direction, reverse) in [("1", "up", false), ("2", "up", false), ("3", "down", true)]
    {
        // The impairments apply to the stream's data only (1,000 bytes), not to its small
        // start and queries, so that the relay's counts are the stream's alone.
        let (mut relay, via) = udpkit_relay(
            addr,
            &[
                "--drop",
                "0.01",
                "--duplicate",
                "0.005",
                "--reorder",
                "0.01",
                "--seed",
                seed,
                "--direction",
                direction,
                "--impair-from",
                "500",
                "--json",
            ],
        );
        let mut args = vec!["--pps", "8000", "-s", "1000", "-n", "16000"];
        if reverse {
            args.push("--reverse");
        }
        let (code, v) = stream_json(via, &args);
        assert_eq!(code, Some(0), "{v}");
        let r = json_summary(&mut relay);
        let leg = &r[direction];
        assert!(leg["dropped"].as_u64().unwrap() > 80, "{r}");
        // What the relay's kernel dropped before the relay read it (a loaded machine) is
        // lost too, and the relay counts it; the three figures are exact when it is none.
        let kernel = leg["kernel_drops"].as_u64().unwrap();
        let dropped = leg["dropped"].as_u64().unwrap();
        assert_eq!(
            v["lost"].as_u64(),
            Some(dropped + kernel),
            "seed {seed}: {v} / {r}"
        );
        if kernel == 0 {
            assert_eq!(v["duplicates"], leg["duplicated"], "seed {seed}: {v} / {r}");
            assert_eq!(v["reordered"], leg["reordered"], "seed {seed}: {v} / {r}");
            exact += 1;
        }
        assert_eq!(v["too_late"], 0, "{v}");
        // The relay holds one back until the next survivor passes: one place late, more
        // where the ones after it were dropped.
        let late = v["reorder_max"].as_u64().unwrap();
        assert!((1..=3).contains(&late), "{v}");
    }
    assert!(
        exact > 0,
        "the kernel dropped datagrams in every run: nothing was checked exactly"
    );
}

/// The stream protocol by hand: a start, the cookie, the start again.
fn start(socket: &UdpSocket, server: SocketAddr, id: u64, plan: Plan) -> u64 {
    let mut buf = vec![0u8; 512];
    let mut cookie = 0;
    for _ in 0..2 {
        let n = Message::Start { id, cookie, plan }.emit(&mut buf, 0);
        socket.send_to(&buf[..n], server).unwrap();
        let (got, _) = socket.recv_from(&mut buf).expect("an answer to the start");
        match Message::parse(&buf[..got]) {
            // A reverse stream's first data may overtake the accept.
            Some(Message::Data { .. }) if cookie != 0 => return cookie,
            Some(Message::Accept {
                cookie: c, started, ..
            }) => {
                if started {
                    return c;
                }
                cookie = c;
            }
            other => panic!("not an accept: {other:?}"),
        }
    }
    panic!("the stream did not start");
}

fn strangers_get_no_state_and_forgeries_change_nothing() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json"]);
    let stranger = test_socket("127.0.0.1:0");
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 512];
    // Data and a query for a stream nobody started: no answer.
    let n = Message::Data {
        id: 7,
        seq: 0,
        sent_ns: 0,
    }
    .emit(&mut buf, 100);
    stranger.send_to(&buf[..n], addr).unwrap();
    let n = Message::Query {
        id: 7,
        cookie: 1,
        sent: 0,
        serial: 1,
    }
    .emit(&mut buf, QUERY_LEN);
    stranger.send_to(&buf[..n], addr).unwrap();
    // A start with a made-up cookie: a cookie back, no stream.
    let plan = Plan {
        reverse: true,
        milli_pps: 1_000_000,
        size: 1000,
        count: 1000,
        duration_ms: 0,
    };
    let n = Message::Start {
        id: 8,
        cookie: 12345,
        plan,
    }
    .emit(&mut buf, 0);
    stranger.send_to(&buf[..n], addr).unwrap();
    let (got, _) = stranger.recv_from(&mut buf).expect("a cookie");
    assert!(
        matches!(
            Message::parse(&buf[..got]),
            Some(Message::Accept { started: false, .. })
        ),
        "a forged cookie started a stream"
    );
    // Garbage behind the magic, every kind: ignored.
    for kind in 0..=255u8 {
        let mut junk = b"UDPKSTRM\x01".to_vec();
        junk.push(kind);
        junk.extend_from_slice(&[0xee; 30]);
        stranger.send_to(&junk, addr).unwrap();
    }
    assert!(
        stranger.recv_from(&mut buf).is_err(),
        "nothing answers data, strangers' queries or junk"
    );
    // Meanwhile a real stream is exact.
    let (code, v) = stream_json(addr, &["--pps", "10000", "-s", "500", "-n", "3000"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (v["received"].as_u64(), v["lost"].as_u64()),
        (Some(3000), Some(0)),
        "{v}"
    );
    let s = json_summary(&mut server);
    assert_eq!(s["malformed"], 0, "{s}");
}

fn a_reverse_stream_stops_soon_after_its_client_goes_silent() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let client = test_socket("127.0.0.1:0");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let plan = Plan {
        reverse: true,
        milli_pps: 2_000_000, // 2,000 a second
        size: 100,
        count: 0,
        duration_ms: 60_000,
    };
    let _cookie = start(&client, addr, 9, plan);
    // Data flows; the client never queries: the server must stop within its keepalive.
    let started = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut last_data = started;
    let mut got = 0;
    while started.elapsed() < Duration::from_secs(8) {
        match client.recv_from(&mut buf) {
            Ok((n, _)) => {
                if matches!(Message::parse(&buf[..n]), Some(Message::Data { .. })) {
                    got += 1;
                    last_data = Instant::now();
                }
            }
            Err(_) => break, // two seconds of silence
        }
    }
    assert!(got > 1000, "the stream never flowed: {got}");
    let flowed = last_data.duration_since(started);
    assert!(
        flowed < Duration::from_secs(5),
        "a reverse stream kept sending {flowed:?} without a query"
    );
}

fn a_server_restarted_mid_stream_ends_the_client_in_bounded_time_with_what_it_knows() {
    for reverse in [false, true] {
        let (mut server, addr) = udpkit_server(&["-p", "0", "-q"]);
        let mut cmd = udpkit_to(
            "stream",
            addr,
            &[
                "--pps",
                "2000",
                "-s",
                "200",
                "-d",
                "3",
                "-i",
                "0.2",
                "--json-lines",
            ],
        );
        if reverse {
            cmd.arg("--reverse");
        }
        let started = Instant::now();
        let mut client = Running::start(cmd);
        // Once a report has come, the server goes; another takes its port, knowing nothing.
        let first: serde_json::Value = serde_json::from_str(&client.line()).unwrap();
        assert_eq!(first["event"], "interval", "{first}");
        server.stop_and_stderr();
        let _again = udpkit_server(&["127.0.0.1", "-p", &addr.port().to_string(), "-q"]);
        let (status, err) = client.wait();
        let took = started.elapsed();
        let lines = client.lines_within(Duration::from_millis(500));
        let last = lines.last().unwrap_or_else(|| panic!("no summary: {err}"));
        assert_eq!(status.code(), Some(1), "{last} {err}");
        let v: serde_json::Value =
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
        assert_eq!(v["event"], "summary", "{v}");
        assert_eq!(v["complete"], false, "{v}");
        assert!(v["incomplete"].is_string(), "{v}");
        assert!(
            v["received"].as_u64().unwrap() > 0,
            "what it knew is kept: {v}"
        );
        assert!(took < Duration::from_secs(12), "took {took:?}");
    }
}

fn a_stream_shares_the_port_with_every_protocol_and_leaves_its_answers_alone() {
    for protocol in ["seed", "echo", "stamp"] {
        let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", protocol]);
        let (code, v) = stream_json(addr, &["--pps", "5000", "-s", "300", "-n", "2000"]);
        assert_eq!(code, Some(0), "{protocol}: {v}");
        assert_eq!(v["received"], 2000, "{protocol}: {v}");
        // The protocol still answers as before, on the same port.
        let (code, p) = json_to(
            "ping",
            addr,
            &["--protocol", protocol, "-c", "2", "-i", "0.01"],
        );
        assert_eq!(code, Some(0), "{protocol}: {p}");
        assert_eq!(p["received"], 2, "{protocol}: {p}");
    }
}

fn a_server_that_is_not_udpkits_is_named_as_such() {
    // An echo server answers the start with the start itself: an answer, not udpkit's.
    let (_echo, addr) = python_echo();
    let out = run(udpkit_to("stream", addr, &["-n", "10"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not as a udpkit server"),
        "{}",
        stderr(&out)
    );
}

fn a_sender_that_cannot_keep_the_rate_stops_at_its_end() {
    // Asked for far more than this host can send (100 million datagrams of 65,507 bytes a
    // second): the build before sent its catch-up bursts through the whole grace (5.5 s
    // for -d 0.5) and said "sent N of the 18446744073709551615 datagrams asked".
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let started = std::time::Instant::now();
    let (_, v) = stream_json(addr, &["--pps", "1e8", "-s", "65507", "-d", "0.5"]);
    let took = started.elapsed();
    println!("{took:?}: {v}");
    assert!(
        v["seconds"].as_f64().unwrap() < 1.5,
        "sent until {}: {v}",
        v["seconds"]
    );
    assert!(v["skipped"].as_u64().unwrap() > 0, "{v}");
    assert!(
        !v["incomplete"].to_string().contains("18446744073709551615"),
        "{v}"
    );
}

udpkit_tests! {
    a_sender_that_cannot_keep_the_rate_stops_at_its_end,
    a_clean_stream_arrives_whole_both_ways,
    a_fast_stream_is_never_refused_by_this_host,
    loss_duplicates_and_reordering_equal_what_the_relay_did_both_ways,
    strangers_get_no_state_and_forgeries_change_nothing,
    a_reverse_stream_stops_soon_after_its_client_goes_silent,
    a_server_restarted_mid_stream_ends_the_client_in_bounded_time_with_what_it_knows,
    a_stream_shares_the_port_with_every_protocol_and_leaves_its_answers_alone,
    a_server_that_is_not_udpkits_is_named_as_such,
}
