//! TWAMP-light (RFC 5357 Appendix I) and STAMP's answers to it (RFC 8762 §4.6), against a
//! peer written in the tests from RFC 5357's packet diagrams (`tests/helpers/
//! twamp_light.py`), not from udpkit's code: its 14-byte sender and its 41-byte reflector,
//! as routers and probes in the field speak them; and a reply's DSCP as RFC 8972's Class of
//! Service TLV asks for it.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn peer(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/helpers/twamp_light.py"
    ))
    .args(args);
    cmd
}

/// The peer's reflector on a port of its own; waits (bounded) for the port it took.
fn python_reflector() -> (Running, SocketAddr) {
    python_reflector_of(41)
}

/// The same, its replies cut to `len` bytes (38: twampy's responder).
fn python_reflector_of(len: usize) -> (Running, SocketAddr) {
    let ready = ready_path();
    let proc = Running::start(peer(&[
        "reflector",
        ready.to_str().unwrap(),
        &len.to_string(),
    ]));
    for _ in 0..200 {
        if let Ok(port) = std::fs::read_to_string(&ready) {
            let _ = std::fs::remove_file(&ready);
            return (
                proc,
                SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())),
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the TWAMP-light reflector did not start");
}

fn python_sender(to: SocketAddr, count: u32) -> serde_json::Value {
    let out = run_for(
        peer(&[
            "sender",
            "127.0.0.1",
            &to.port().to_string(),
            &count.to_string(),
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

fn udpkit_pings_a_41_byte_twamp_light_reflector() {
    let (_reflector, addr) = python_reflector();
    udpkit_pings_twamp_light(addr);
}

fn udpkit_pings_a_38_byte_reflector_as_twampys() {
    let (_reflector, addr) = python_reflector_of(38);
    udpkit_pings_twamp_light(addr);
}

fn udpkit_pings_twamp_light(addr: SocketAddr) {
    let (code, v) = json_to(
        "ping",
        addr,
        &["--protocol", "twamp-light", "-c", "10", "-i", "0.02"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(10), Some(10)),
        "{v}"
    );
    assert_eq!(v["bad"], 0, "{v}");
    // Nothing in TWAMP-light proves a reply genuine: said, not hidden.
    assert_eq!(v["matching"], "sequence", "{v}");
    assert_eq!(v["unverified"], 10, "{v}");
}

fn a_stamp_sender_takes_a_twamp_reflectors_shorter_replies() {
    // 72-byte STAMP requests, 41-byte replies: matched by sequence and timestamp.
    let (_reflector, addr) = python_reflector();
    let (code, v) = json_to(
        "ping",
        addr,
        &["--protocol", "stamp", "-c", "5", "-i", "0.02"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 5, "{v}");
    assert_eq!(v["bad"], 0, "{v}");
    assert_eq!(v["matching"], "sequence", "{v}");
}

fn a_twamp_light_sender_is_answered_by_udpkits_stamp_and_twamp_reflectors() {
    for (protocol, length) in [("stamp", 44), ("twamp-light", 41)] {
        let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", protocol]);
        let v = python_sender(addr, 10);
        assert_eq!(v["received"], 10, "{protocol}: {v}");
        assert_eq!(v["lengths"], serde_json::json!([length]), "{protocol}: {v}");
        assert_eq!(
            v["ttl"],
            serde_json::json!([64]),
            "{protocol}: the TTL it arrived with"
        );
    }
}

fn mtu_against_a_reflector_whose_replies_are_shorter_claims_only_a_floor() {
    // 41-byte replies to larger probes test the way there only: not proof both ways.
    let (_reflector, addr) = python_reflector();
    let (code, v) = json_to("mtu", addr, &["--protocol", "twamp-light", "-W", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["cut_to"], 41, "{v}");
    assert!(v["payload"].as_u64().unwrap() <= 41, "{v}");
}

fn udpkits_twamp_light_pair_measures_itself() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", "twamp-light"]);
    for size in ["14", "41", "200"] {
        let (code, v) = json_to(
            "ping",
            addr,
            &[
                "--protocol",
                "twamp-light",
                "-c",
                "5",
                "-i",
                "0.01",
                "-s",
                size,
            ],
        );
        assert_eq!(code, Some(0), "{size}: {v}");
        assert_eq!(v["received"], 5, "{size}: {v}");
    }
}

fn a_reflector_sends_its_reply_with_the_dscp_its_sender_asked_for() {
    reply_with_the_dscp_asked_for("127.0.0.1");
}

fn a_dual_stack_reflector_marks_its_ipv4_replies_too() {
    // Replies to v4-mapped addresses go out as IPv4: their TOS as IP_TOS, not TCLASS.
    reply_with_the_dscp_asked_for("::");
}

fn reply_with_the_dscp_asked_for(host: &str) {
    let (_server, addr) = udpkit_server(&[host, "-p", "0", "-q", "--protocol", "stamp"]);
    let out = run_for(
        peer(&["cos", "127.0.0.1", &addr.port().to_string(), "46"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["len"], 52, "{v}");
    // RFC 8972 §4.4: DSCP1 used for the reply (RP 0); the TLV's flags cleared (U was set).
    assert_eq!(v["tos"], 46 << 2, "{v}");
    assert_eq!(v["rp"], 0, "{v}");
    assert_eq!(v["dscp1"], 46, "{v}");
    assert_eq!(v["flags"], 0, "{v}");
}

udpkit_tests! {
    udpkit_pings_a_41_byte_twamp_light_reflector [Need::Tool("python3")],
    udpkit_pings_a_38_byte_reflector_as_twampys [Need::Tool("python3")],
    a_stamp_sender_takes_a_twamp_reflectors_shorter_replies [Need::Tool("python3")],
    a_twamp_light_sender_is_answered_by_udpkits_stamp_and_twamp_reflectors [Need::Tool("python3")],
    udpkits_twamp_light_pair_measures_itself,
    mtu_against_a_reflector_whose_replies_are_shorter_claims_only_a_floor [Need::Tool("python3")],
    a_reflector_sends_its_reply_with_the_dscp_its_sender_asked_for [Need::Tool("python3")],
    a_dual_stack_reflector_marks_its_ipv4_replies_too [Need::Tool("python3"), Need::Ipv6],
}
