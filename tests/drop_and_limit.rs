//! The server's deliberate drops: `--drop-rate` (the book's "pretending to drop") and the
//! per-prefix response rate limit that keeps it from being an amplifier.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const SETTLE: Duration = Duration::from_millis(300);

#[test]
fn drop_rate_ignores_about_that_share_and_says_so() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "--drop-rate", "0.3", "--seed", "42"]);
    let socket = roomy_socket("127.0.0.1:0");
    let (replies, _) = flood(&socket, addr, b"x", 1000, SETTLE);
    let lines = server.lines_within(SETTLE);
    let port = socket.local_addr().unwrap().port();
    let pretended = lines
        .iter()
        .filter(|l| **l == format!("Pretending to drop packet from 127.0.0.1:{port}"))
        .count();
    let said = lines.iter().filter(|l| l.ends_with(" says 'x'")).count();
    assert_eq!(pretended + said, 1000, "every datagram has its line");
    assert_eq!(
        replies, said,
        "exactly the datagrams not dropped are answered"
    );
    // 30% of 1000: the binomial's standard deviation is 14.5; 5 of them either way.
    assert!(
        (228..=372).contains(&pretended),
        "dropped {pretended} of 1000"
    );
}

#[test]
fn the_same_seed_drops_the_same_datagrams() {
    let run = || {
        let (mut server, addr) = udpkit_server(&["-p", "0", "--drop-rate", "0.5", "--seed", "7"]);
        let socket = test_socket("127.0.0.1:0");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        (0..40)
            .map(|n| {
                socket.send_to(format!("{n}").as_bytes(), addr).unwrap();
                server.line().starts_with("Pretending")
            })
            .collect::<Vec<bool>>()
    };
    let first = run();
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
    assert_eq!(first, run());
}

#[test]
fn the_client_gets_through_a_lossy_server_thanks_to_backoff() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--drop-rate", "0.5", "--seed", "3"]);
    for _ in 0..5 {
        let mut cmd = udpkit();
        cmd.args([
            "client",
            "-p",
            &addr.port().to_string(),
            "-m",
            "hello",
            "--max-wait",
            "6.4",
        ]);
        let out = run(cmd);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).ends_with("replied 'Your data was 5 bytes long'\n"));
    }
}

fn replies_to_a_flood(server_args: &[&str], source: &str) -> (usize, usize) {
    let (_server, addr) = udpkit_server(server_args);
    let to = SocketAddr::new([127, 0, 0, 1].into(), addr.port());
    flood(&roomy_socket(source), to, b"x", 5000, SETTLE)
}

#[test]
fn beyond_loopback_one_source_gets_back_at_most_3x_what_it_sent() {
    // Bound to all interfaces, so the default limit applies.
    let (replies, bytes) = replies_to_a_flood(&["0.0.0.0", "-p", "0", "-q"], "127.0.0.1:0");
    assert!(
        bytes <= 3 * 5000,
        "{replies} replies, {bytes} bytes for 5000 sent"
    );
    assert!(replies >= 100, "the burst is served: {replies}");
}

#[test]
fn without_the_limit_the_same_flood_is_amplified() {
    // The counterpart of the test above: it can see amplification when there is some.
    let args = ["0.0.0.0", "-p", "0", "-q", "--rate-limit", "off"];
    let (replies, bytes) = replies_to_a_flood(&args, "127.0.0.1:0");
    assert!(bytes > 3 * 5000, "{replies} replies, {bytes} bytes");
}

#[test]
fn on_loopback_there_is_no_limit_by_default() {
    let (replies, _) = replies_to_a_flood(&["-p", "0", "-q"], "127.0.0.1:0");
    assert!(replies > 4000, "{replies} of 5000 answered");
}

#[test]
fn many_sources_each_have_their_own_budget_while_a_heavy_one_is_limited() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--rate-limit", "20", "--json"]);
    // A heavy source in 127.0.0.0/24 ...
    let (heavy, _) = flood(&roomy_socket("127.0.0.1:0"), addr, b"x", 2000, SETTLE);
    assert!(heavy < 100, "heavy source got {heavy} replies");
    // ... and 200 light ones, each in a /24 of its own, each within its burst of 20.
    for n in 0..200u32 {
        let source = format!("127.{}.{}.1:0", 1 + n / 250, n % 250);
        let socket = test_socket(&source);
        for _ in 0..3 {
            assert_eq!(
                ask(&socket, addr, b"hi"),
                b"Your data was 2 bytes long",
                "from {source}"
            );
        }
    }
    signal(&server, libc::SIGINT);
    let last = server
        .lines_within(Duration::from_secs(2))
        .pop()
        .expect("summary");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["received"], 2000 + 600);
    assert_eq!(v["replied"].as_u64().unwrap(), heavy as u64 + 600);
    assert_eq!(
        v["dropped_rate_limited"].as_u64().unwrap(),
        2000 - heavy as u64
    );
}
