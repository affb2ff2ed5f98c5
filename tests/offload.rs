//! GSO and GRO (issue 12): every datagram a segmented send carries is a request of its own
//! to the server, and every reply in a coalesced receive a reply of its own to bench,
//! whichever side batches; the counts on both sides agree; the rate limit weighs each one.

mod common;

use common::*;

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn every_request_and_reply_counts_whichever_side_batches() {
    // (bench's flags, server's flags)
    let cases: [(&[&str], &[&str]); 4] = [
        (&[], &[]),
        (&[], &["--no-gro"]),
        (&["--no-gro"], &["--no-gso"]),
        (&["--no-gso", "--no-gro"], &[]),
    ];
    for (bench_flags, server_flags) in cases {
        let (mut server, addr) =
            udpkit_server(&[&["-p", "0", "-q", "--json"][..], server_flags].concat());
        let args = [
            &["--window", "64", "--flows", "2", "-n", "20000"][..],
            bench_flags,
        ]
        .concat();
        let (code, v) = json_to("bench", addr, &args);
        assert_eq!(code, Some(0), "{v}");
        let what = format!("bench {bench_flags:?}, server {server_flags:?}: {v}");
        assert_eq!(count(&v, "sent"), 20000, "{what}");
        assert_eq!(count(&v, "received"), 20000, "{what}");
        assert_eq!(count(&v, "bad") + count(&v, "duplicates"), 0, "{what}");
        assert_eq!(v["matching"], "ids", "{what}");
        let s = json_summary(&mut server);
        assert_eq!(count(&s, "received"), 20000, "{what} / {s}");
        assert_eq!(count(&s, "replied"), 20000, "{what} / {s}");
    }
}

fn the_rate_limit_weighs_each_datagram_of_a_coalesced_receive() {
    // A GSO flood from one client: a 20-a-second limit still answers only about its burst
    // plus its rate, whatever the batching.
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--rate-limit", "20", "--json"]);
    let (_, v) = json_to(
        "bench",
        addr,
        &["--window", "64", "-d", "0.5", "-W", "0.005"],
    );
    let s = json_summary(&mut server);
    let received = count(&s, "received");
    let replied = count(&s, "replied");
    assert!(received > 1000, "the flood was too small to tell: {s}");
    // The burst (20), half a second at 20/s, the slips (one in two of the refused at
    // most, answered only while the prefix is not flooding), and the drain: far below
    // what came in.
    assert!(
        replied <= 60 + received / 50,
        "{replied} of {received} answered: {s}"
    );
    assert!(count(&v, "received") <= replied, "{v} / {s}");
}

fn the_open_loop_reports_its_send_lag_and_says_when_it_fell_behind() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    // A rate this loop can keep: every request is stamped, the lag is measured.
    let (code, v) = json_to("bench", addr, &["--rate", "2000", "-d", "0.3"]);
    assert_eq!(code, Some(0), "{v}");
    let lag = &v["send_lag_us"];
    for key in ["p50", "p99", "max"] {
        assert!(lag[key].as_f64().is_some(), "no send_lag_us.{key}: {v}");
    }
    assert!(count(&v, "sent") >= 590, "{v}");
    // A closed loop has no schedule, hence no lag.
    let (_, v) = json_to("bench", addr, &["--window", "8", "-n", "100"]);
    assert!(v["send_lag_us"].is_null(), "{v}");
    assert_eq!(v["generator_fell_behind"], false, "{v}");
    // A rate no single loop can send: said, in JSON and in words.
    let args = ["--rate", "50000000", "-d", "0.3", "-W", "0.2"];
    let (_, v) = json_to("bench", addr, &args);
    assert_eq!(v["generator_fell_behind"], true, "{v}");
    assert!(v["sent_per_second"].as_f64().unwrap() < 0.99 * 50e6, "{v}");
    let out = run(udpkit_to("bench", addr, &args));
    assert!(
        stdout(&out).contains("the load generator fell behind its schedule"),
        "{}",
        stdout(&out)
    );
}

fn a_flood_of_the_largest_segmented_sends_of_one_byte_datagrams_leaves_the_server_serving() {
    // The attacker's best GRO move: every send the kernel's cap of one-byte datagrams (128
    // on this kernel), as fast as it goes, so that one batch of receives holds as many
    // requests as can be. (The server indexed past its reply table here and died.)
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json"]);
    let flood = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1)  # SOL_UDP, UDP_SEGMENT: datagrams of one byte
s.connect(("127.0.0.1", int(sys.argv[1])))
for n in (128, 64):  # the cap since Linux 6.x, then the one before
    try:
        for _ in range(200):
            s.send(b"x" * n)
        print(n)
        break
    except OSError:
        pass
"#;
    let out = run_for(
        {
            let mut cmd = std::process::Command::new("python3");
            cmd.args(["-c", flood, &addr.port().to_string()]);
            cmd
        },
        std::time::Duration::from_secs(20),
    );
    let per_send: u64 = stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the flood did not run: {} {}", stdout(&out), stderr(&out)));
    let socket = test_socket("127.0.0.1:0");
    assert_eq!(
        ask(&socket, addr, b"still there?"),
        b"Your data was 12 bytes long"
    );
    let s = json_summary(&mut server);
    assert_eq!(count(&s, "received"), 200 * per_send + 1, "{s}");
    assert_eq!(count(&s, "replied"), 200 * per_send + 1, "{s}");
}

udpkit_tests! {
    every_request_and_reply_counts_whichever_side_batches,
    the_rate_limit_weighs_each_datagram_of_a_coalesced_receive,
    the_open_loop_reports_its_send_lag_and_says_when_it_fell_behind,
    a_flood_of_the_largest_segmented_sends_of_one_byte_datagrams_leaves_the_server_serving [Need::Tool("python3")],
}
