//! `udpkit relay`: forwarding, per-client sessions, and each impairment, measured with
//! udpkit's own client and ping through it.

mod common;

use std::time::Duration;

use common::*;

fn relay_summary(relay: &mut Running) -> serde_json::Value {
    signal(relay, libc::SIGINT);
    let last = relay
        .lines_within(Duration::from_secs(2))
        .pop()
        .expect("a summary line");
    let (status, err) = relay.wait();
    assert!(status.success(), "{err}");
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{last}: {e}"))
}

#[test]
fn a_clean_relay_forwards_both_ways_and_keeps_clients_apart() {
    let (mut server, target) = udpkit_server(&["-p", "0"]);
    let (mut relay, addr) = udpkit_relay(target, &["--json"]);
    let (a, b) = (test_socket("127.0.0.1:0"), test_socket("127.0.0.1:0"));
    assert_eq!(ask(&a, addr, b"from a"), b"Your data was 6 bytes long");
    assert_eq!(ask(&b, addr, b"from b!"), b"Your data was 7 bytes long");
    assert_eq!(ask(&a, addr, b"a again"), b"Your data was 7 bytes long");
    // The server sees two clients: the relay's two upstream sockets, one per source.
    let ports: std::collections::HashSet<String> = (0..3)
        .map(|_| server.line().split(" says ").next().unwrap().to_string())
        .collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    let v = relay_summary(&mut relay);
    assert_eq!(v["sessions_opened"], 2);
    assert_eq!(
        (
            v["up"]["forwarded"].as_u64(),
            v["down"]["forwarded"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

#[test]
fn the_client_gets_through_half_the_datagrams_dropped() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--drop", "0.5", "--seed", "11"]);
    let mut cmd = udpkit();
    cmd.args([
        "client",
        "-p",
        &addr.port().to_string(),
        "-m",
        "hello",
        "--wait",
        "0.05",
        "--max-wait",
        "3.2",
        "-v",
    ]);
    let out = run(cmd);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).ends_with("replied 'Your data was 5 bytes long'\n"));
}

#[test]
fn drop_upward_only_loses_about_that_share() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(
        target,
        &["--drop", "0.3", "--direction", "up", "--seed", "1"],
    );
    let v = json_to("ping", addr, &["-c", "200", "-i", "0", "-W", "0.05"]).1;
    let loss = v["loss_percent"].as_f64().unwrap();
    assert!((20.0..=40.0).contains(&loss), "{v}");
}

#[test]
fn drop_both_ways_loses_about_51_percent() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--drop", "0.3", "--seed", "2"]);
    let v = json_to("ping", addr, &["-c", "200", "-i", "0", "-W", "0.05"]).1;
    let loss = v["loss_percent"].as_f64().unwrap();
    // 1 - 0.7 * 0.7 = 0.51.
    assert!((41.0..=61.0).contains(&loss), "{v}");
}

#[test]
fn duplicates_show_as_dup() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--duplicate", "1", "--direction", "down"]);
    let cmd = udpkit_to("ping", addr, &["-c", "3", "-i", "0.05"]);
    let text = stdout(&run(cmd));
    assert!(
        text.lines().filter(|l| l.ends_with("(DUP!)")).count() >= 2,
        "{text}"
    );
    assert!(text.contains("3 requests sent, 3 received"), "{text}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let answered = |seed: &str| {
        let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
        let (_relay, addr) = udpkit_relay(target, &["--drop", "0.4", "--seed", seed]);
        let cmd = udpkit_to("ping", addr, &["-c", "60", "-i", "0", "-W", "0.05"]);
        let text = stdout(&run(cmd));
        text.lines()
            .filter_map(|l| {
                l.split(" seq=")
                    .nth(1)?
                    .split(' ')
                    .next()
                    .map(str::to_string)
            })
            .collect::<Vec<_>>()
    };
    let first = answered("7");
    assert!(!first.is_empty() && first.len() < 60, "{first:?}");
    assert_eq!(first, answered("7"));
    assert_ne!(first, answered("8"));
}

#[test]
fn delay_adds_to_the_round_trip() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--delay", "20"]);
    let v = json_to("ping", addr, &["-c", "5", "-i", "0"]).1;
    // 20 ms each way: the round trip cannot be shorter than 40 ms.
    assert!(v["rtt_ms"]["min"].as_f64().unwrap() >= 40.0, "{v}");
    assert_eq!(v["received"], 5);
}

#[test]
fn reordering_is_counted_and_every_datagram_still_arrives() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, addr) = udpkit_relay(
        target,
        &[
            "--reorder",
            "0.5",
            "--direction",
            "down",
            "--seed",
            "3",
            "--json",
        ],
    );
    let (code, v) = json_to("bench", addr, &["--window", "8", "-n", "400"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["received"], 400, "{v}");
    let r = relay_summary(&mut relay);
    assert!(r["down"]["reordered"].as_u64().unwrap() > 100, "{r}");
}

#[test]
fn idle_sessions_expire() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, addr) = udpkit_relay(target, &["--idle", "0.2", "--json"]);
    let socket = test_socket("127.0.0.1:0");
    ask(&socket, addr, b"x");
    // Sessions are swept once a second; after two sweeps this one is gone.
    std::thread::sleep(Duration::from_millis(2100));
    let v = relay_summary(&mut relay);
    assert_eq!(
        (
            v["sessions_opened"].as_u64(),
            v["sessions_expired"].as_u64()
        ),
        (Some(1), Some(1)),
        "{v}"
    );
}

/// Every datagram a direction received is forwarded, dropped, failed or still queued; a
/// duplicated one counts twice on the way out.
fn assert_accounted(v: &serde_json::Value) {
    let n = |dir: &str, key: &str| v[dir][key].as_u64().unwrap();
    for dir in ["up", "down"] {
        let out = n(dir, "forwarded") + n(dir, "failed");
        let expected = n(dir, "received") - n(dir, "dropped") + n(dir, "duplicated");
        let queued = v["queued_at_exit"].as_u64().unwrap();
        assert!(out <= expected && expected <= out + queued, "{dir}: {v}");
    }
}

#[test]
fn every_datagram_is_accounted_for_under_all_impairments_at_once() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let args = [
        "--drop",
        "0.2",
        "--duplicate",
        "0.2",
        "--reorder",
        "0.2",
        "--jitter",
        "2",
        "--seed",
        "9",
        "--json",
    ];
    let (mut relay, addr) = udpkit_relay(target, &args);
    let (code, _) = json_to("bench", addr, &["--window", "8", "-n", "1000", "-W", "0.1"]);
    assert_eq!(code, Some(0));
    let v = relay_summary(&mut relay);
    assert_accounted(&v);
    assert!(
        v["up"]["duplicated"].as_u64().unwrap() > 0 && v["up"]["reordered"].as_u64().unwrap() > 0,
        "{v}"
    );
}
