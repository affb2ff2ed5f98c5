//! GSO and GRO (issue 12): every datagram a segmented send carries is a request of its own
//! to the server, and every reply in a coalesced receive a reply of its own to bench,
//! whichever side batches; the counts on both sides agree; the rate limit weighs each one.

mod common;

use common::*;

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
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

#[test]
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

#[test]
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
