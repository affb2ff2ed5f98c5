//! `udpkit relay`: forwarding, per-client sessions, and each impairment, measured with
//! udpkit's own client and ping through it.

mod common;

use std::time::Duration;

use common::*;

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
    let v = json_summary(&mut relay);
    assert_eq!(v["sessions_opened"], 2);
    assert_eq!(
        (
            v["up"]["forwarded"].as_u64(),
            v["down"]["forwarded"].as_u64()
        ),
        (Some(3), Some(3))
    );
}

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

fn drop_both_ways_loses_about_51_percent() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--drop", "0.3", "--seed", "2"]);
    let v = json_to("ping", addr, &["-c", "200", "-i", "0", "-W", "0.05"]).1;
    let loss = v["loss_percent"].as_f64().unwrap();
    // 1 - 0.7 * 0.7 = 0.51.
    assert!((41.0..=61.0).contains(&loss), "{v}");
}

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

fn delay_adds_to_the_round_trip() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, addr) = udpkit_relay(target, &["--delay", "20"]);
    let v = json_to("ping", addr, &["-c", "5", "-i", "0"]).1;
    // 20 ms each way: the round trip cannot be shorter than 40 ms.
    assert!(v["rtt_ms"]["min"].as_f64().unwrap() >= 40.0, "{v}");
    assert_eq!(v["received"], 5);
}

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
    let r = json_summary(&mut relay);
    assert!(r["down"]["reordered"].as_u64().unwrap() > 100, "{r}");
}

fn idle_sessions_expire() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, addr) = udpkit_relay(target, &["--idle", "0.2", "--json"]);
    let socket = test_socket("127.0.0.1:0");
    ask(&socket, addr, b"x");
    // Sessions are swept once a second; after two sweeps this one is gone.
    std::thread::sleep(Duration::from_millis(2100));
    let v = json_summary(&mut relay);
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
    let v = json_summary(&mut relay);
    assert_accounted(&v);
    assert!(
        v["up"]["duplicated"].as_u64().unwrap() > 0 && v["up"]["reordered"].as_u64().unwrap() > 0,
        "{v}"
    );
}

/// `udpkit relay --listen LISTEN --to TO ARGS` with the port clients send to.
fn relay_on(listen: &str, to: std::net::SocketAddr, args: &[&str]) -> (Running, u16) {
    let mut cmd = udpkit();
    cmd.args(["relay", "--listen", listen, "--to", &to.to_string()])
        .args(args);
    let (relay, addr) = start_ready(cmd);
    (relay, addr.port())
}

/// The port the server saw a request from: "The client at 127.0.0.1:PORT says 'TEXT'".
fn upstream_port_of(server: &mut Running, text: &str) -> String {
    let deadline = std::time::Instant::now() + STEP;
    while std::time::Instant::now() < deadline {
        for line in server.lines_within(Duration::from_millis(100)) {
            if line.ends_with(&format!(" says '{text}'")) {
                return line.split(" says ").next().unwrap().to_string();
            }
        }
    }
    panic!("the server never saw '{text}'");
}

fn more_sources_than_open_files_neither_end_the_relay_nor_evict_a_real_client() {
    // At `ulimit -n 128`, 400 one-datagram sources: before the fix the relay exited when it
    // ran out of files (no summary), and could lock real clients out.
    let (mut server, target) = udpkit_server(&["-p", "0"]);
    // `--ready-file FILE` (added by start_ready) comes in as "$@".
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 128 && exec {} relay --listen 127.0.0.1:0 --to {target} --json \"$@\"",
            env!("CARGO_BIN_EXE_udpkit")
        ))
        .arg("relay");
    let (mut relay, addr) = start_ready(cmd);
    // A real client, established before the flood (two datagrams).
    let real = test_socket("127.0.0.1:0");
    assert_eq!(ask(&real, addr, b"real-1"), b"Your data was 6 bytes long");
    assert_eq!(ask(&real, addr, b"real-2"), b"Your data was 6 bytes long");
    let before = upstream_port_of(&mut server, "real-2");
    let sources: Vec<_> = (0..400).map(|_| test_socket("127.0.0.1:0")).collect();
    for s in &sources {
        s.send_to(b"flood", addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    // Under the flood the relay or the kernel may drop one: asked again, not failed.
    assert_eq!(
        ask_again(&real, addr, b"real-3"),
        b"Your data was 6 bytes long"
    );
    assert_eq!(
        upstream_port_of(&mut server, "real-3"),
        before,
        "same session"
    );
    let v = json_summary(&mut relay);
    let max = v["max_sessions"].as_u64().unwrap();
    println!("at ulimit -n 128: at most {max} sessions; {v}");
    assert!(max < 128, "{v}");
    assert!(v["sessions_evicted"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["up"]["received"], 403, "{v}");
}

fn beyond_loopback_the_relay_limits_what_it_sends_to_each_client_prefix() {
    // A source (forged, as far as the relay can tell) floods the relay; everything it
    // forwards comes back to that source from a loopback server with no limit. Before the
    // fix, all 25,000 came back, 26x the bytes.
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, port) = relay_on("0.0.0.0:0", target, &["--json"]);
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let started = std::time::Instant::now();
    let (replies, _) = flood(
        &roomy_socket("127.0.0.1:0"),
        to,
        b"x",
        5000,
        Duration::from_millis(300),
    );
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        replies as f64 <= 100.0 + 100.0 * seconds,
        "{replies} replies in {seconds:.2} s"
    );
    let v = json_summary(&mut relay);
    assert!(v["down"]["rate_limited"].as_u64().unwrap() > 0, "{v}");
}

fn the_delay_queue_is_bounded_in_bytes() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, addr) = udpkit_relay(
        target,
        &[
            "--delay",
            "2000",
            "--direction",
            "up",
            "--queue-limit",
            "1",
            "--json",
        ],
    );
    let socket = test_socket("127.0.0.1:0");
    for _ in 0..100 {
        socket.send_to(&[b'x'; 60_000], addr).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let v = json_summary(&mut relay);
    let peak = v["queue_peak_bytes"].as_u64().unwrap();
    assert!(peak <= 1 << 20, "{v}");
    let full = v["up"]["queue_full"].as_u64().unwrap();
    let queued = v["queued_at_exit"].as_u64().unwrap();
    assert_eq!(
        full + queued + v["up"]["kernel_drops"].as_u64().unwrap(),
        100,
        "{v}"
    );
    assert_eq!(queued, 17, "{v}"); // 17 x 60,000 bytes fit in a MiB
}

fn what_the_kernel_drops_before_the_relay_reads_it_is_counted() {
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let (mut relay, addr) = udpkit_relay(target, &["--json"]);
    // Frozen, the relay reads nothing; its receive buffer overflows.
    signal(&relay, libc::SIGSTOP);
    let sent = 30_000u64;
    let socket = test_socket("127.0.0.1:0");
    for _ in 0..sent {
        socket.send_to(b"burst", addr).unwrap();
    }
    signal(&relay, libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(500));
    let v = json_summary(&mut relay);
    let (received, dropped) = (
        v["up"]["received"].as_u64().unwrap(),
        v["up"]["kernel_drops"].as_u64().unwrap(),
    );
    assert!(dropped > 0, "{v}");
    assert_eq!(
        received + dropped,
        sent,
        "every datagram accounted for: {v}"
    );
}

fn a_relay_that_would_forward_to_itself_is_refused() {
    let port = free_port();
    for (listen, to) in [
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}")),
        (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")),
    ] {
        let mut cmd = udpkit();
        cmd.args(["relay", "--listen", &listen, "--to", &to]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(2), "{listen} -> {to}");
        let err = stderr(&out);
        assert!(err.contains("would forward to itself"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

fn forged_icmp_errors_neither_end_the_relay_nor_stop_it_forwarding() {
    let (mut server, target) = udpkit_server(&["-p", "0"]);
    let (mut relay, addr) = udpkit_relay(target, &["--json"]);
    let client = test_socket("127.0.0.1:0");
    assert_eq!(ask(&client, addr, b"first"), b"Your data was 5 bytes long");
    let upstream = upstream_port_of(&mut server, "first");
    let upstream = upstream.strip_prefix("The client at ").unwrap();
    for code in ["2", "4", "10", "13"] {
        forge_icmp(upstream.parse().unwrap(), target, code);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(!relay.has_exited(), "the relay died");
    assert_eq!(ask(&client, addr, b"after"), b"Your data was 5 bytes long");
    let v = json_summary(&mut relay);
    assert_eq!(v["down"]["icmp_errors"], 4, "{v}");
}

udpkit_tests! {
    a_clean_relay_forwards_both_ways_and_keeps_clients_apart,
    the_client_gets_through_half_the_datagrams_dropped,
    drop_upward_only_loses_about_that_share,
    drop_both_ways_loses_about_51_percent,
    duplicates_show_as_dup,
    the_same_seed_gives_the_same_run,
    delay_adds_to_the_round_trip,
    reordering_is_counted_and_every_datagram_still_arrives,
    idle_sessions_expire,
    every_datagram_is_accounted_for_under_all_impairments_at_once,
    more_sources_than_open_files_neither_end_the_relay_nor_evict_a_real_client,
    beyond_loopback_the_relay_limits_what_it_sends_to_each_client_prefix,
    the_delay_queue_is_bounded_in_bytes,
    what_the_kernel_drops_before_the_relay_reads_it_is_counted,
    a_relay_that_would_forward_to_itself_is_refused,
    forged_icmp_errors_neither_end_the_relay_nor_stop_it_forwarding [Need::Root],
}
