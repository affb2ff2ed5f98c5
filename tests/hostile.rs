//! Adversarial input and faults, bounded in count and time: hostile datagrams at every size
//! class, forged replies, a server that dies mid-run, many sources, closed pipes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// A fixed xorshift stream: reproducible "random" bytes.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as u8
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn hostile_datagrams_of_every_size_class_are_answered_and_shown_safely() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let socket = roomy_socket("127.0.0.1:0");
    let mut bytes = Bytes(0x2545_f491_4f6c_dd1d);
    let id = "#0123456789abcdef0000000000000001";
    let mut cases: Vec<Vec<u8>> = [0usize, 1, 2, 32, 33, 34, 100, 548, 1472, 9000, 65_507]
        .into_iter()
        .map(|n| bytes.take(n))
        .collect();
    cases.extend([
        b"\x1b[2J\x1b[H\x1b]0;owned\x07\x1bP+q\x1b\\".to_vec(),
        "\u{202e}\u{200b}\u{feff}\u{9b}31m".as_bytes().to_vec(),
        b"#".to_vec(),
        b"#0123456789abcdef".to_vec(),
        id.as_bytes()[..32].to_vec(),
        format!("{id}X").into_bytes(),
        id.to_uppercase().into_bytes(),
        [id.as_bytes(), b" \x00\xff"].concat(),
        id.as_bytes().to_vec(),
    ]);
    for data in &cases {
        let reply = ask(&socket, addr, data);
        let parsed = udpkit::wire::parse_reply(&reply)
            .unwrap_or_else(|| panic!("not a reply: {:?}", String::from_utf8_lossy(&reply)));
        assert_eq!(parsed.len, data.len());
        assert_eq!(
            parsed.id,
            udpkit::wire::request_id(data),
            "{:?}",
            String::from_utf8_lossy(data)
        );
        let line = server.line();
        assert!(
            !line.chars().any(char::is_control),
            "raw control character in {line:?}"
        );
    }
    // The ID is repeated only for a well-formed one.
    assert!(udpkit::wire::request_id(&[id.as_bytes(), b" \x00\xff"].concat()).is_some());
    assert!(udpkit::wire::request_id(format!("{id}X").as_bytes()).is_none());
    // And after all that, the seed's exchange still works.
    assert_eq!(
        ask(&socket, addr, b"The time is now"),
        b"Your data was 15 bytes long"
    );
}

fn a_thousand_random_datagrams_leave_the_server_serving() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--json"]);
    let socket = roomy_socket("127.0.0.1:0");
    let mut bytes = Bytes(7);
    let mut sizes = Bytes(11);
    let mut sent = 0;
    for _ in 0..1000 {
        let n = usize::from(sizes.next()) * usize::from(sizes.next()) % 9000;
        socket.send_to(&bytes.take(n), addr).unwrap();
        sent += 1;
    }
    let (replies, _) = flood(&socket, addr, b"", 0, Duration::from_millis(300));
    assert_eq!(replies, sent);
    assert_eq!(
        ask(&socket, addr, b"still there?"),
        b"Your data was 12 bytes long"
    );
}

fn a_restarted_server_is_reported_as_a_gap_and_ping_recovers() {
    let (server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let port = addr.port().to_string();
    let mut cmd = udpkit();
    cmd.args(["ping", "127.0.0.1", "-p", &port, "-i", "0.02", "-W", "0.2"]);
    let mut ping = Running::start(cmd);
    ping.line();
    assert!(ping.line().contains("seq=0"));
    drop(server);
    let gap = ping.lines_within(Duration::from_millis(300));
    assert!(
        gap.iter().any(|l| l.contains("port unreachable")),
        "{gap:?}"
    );
    let (_again, _) = udpkit_server(&["-p", &port, "-q"]);
    let after = ping.lines_within(Duration::from_millis(400));
    assert!(
        after.iter().any(|l| l.contains(" bytes from ")),
        "{after:?}"
    );
    signal(&ping, libc::SIGINT);
    let summary = ping.lines_within(Duration::from_secs(1));
    let (status, _) = ping.wait();
    assert!(status.success());
    let text = summary.join("\n");
    assert!(
        text.contains("unreachable") && text.contains("loss"),
        "{text}"
    );
}

fn bench_against_a_port_that_closes_counts_unreachable_and_ends() {
    let (server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let port = addr.port().to_string();
    let mut cmd = udpkit();
    cmd.args([
        "bench",
        "127.0.0.1",
        "-p",
        &port,
        "--window",
        "8",
        "-d",
        "1",
        "-W",
        "0.1",
        "--json",
    ]);
    let mut bench = Running::start(cmd);
    std::thread::sleep(Duration::from_millis(300));
    drop(server);
    let (status, err) = bench.wait();
    assert!(status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&bench.line()).unwrap();
    assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    assert!(v["unreachable"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        v["sent"].as_u64(),
        Some(v["received"].as_u64().unwrap() + v["lost"].as_u64().unwrap())
    );
}

fn many_sources_leave_the_server_small() {
    // 20,000 sources in 20,000 /24 prefixes, under the rate limiter: its table is fixed.
    let (server, addr) = udpkit_server(&["-p", "0", "-q", "--rate-limit", "10"]);
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = rss();
    for n in 0..20_000u32 {
        let source = SocketAddr::from(([127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8], 0));
        let socket = std::net::UdpSocket::bind(SocketAddr::new(source.ip(), 0)).unwrap();
        socket.send_to(b"x", addr).unwrap();
    }
    // Answered or not, the server is still there and still small.
    let probe = test_socket("127.0.0.2:0");
    assert_eq!(ask(&probe, addr, b"ok"), b"Your data was 2 bytes long");
    let after = rss();
    assert!(after < 16 * 1024, "resident {after} KiB");
    assert!(
        after < before + 4 * 1024,
        "grew from {before} to {after} KiB"
    );
}

fn ping_and_bench_end_quietly_on_a_closed_pipe() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let port = addr.port().to_string();
    let mut cmd = udpkit();
    cmd.args(["ping", "127.0.0.1", "-p", &port, "-i", "0.01", "-c", "500"]);
    let mut ping = Running::start(cmd);
    ping.line();
    ping.close_stdout();
    let (status, err) = ping.wait();
    assert!(status.success(), "exit {status}: {err}");
    assert!(err.is_empty(), "{err}");
}

fn printing_every_largest_datagram_keeps_the_server_small() {
    // Without -q, each 65,507-byte datagram is a line of up to four times that (escaped).
    // Before the fix, a batch's lines were gathered whole: about 20 MiB a thread.
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let pid = server.pid();
    let rss = move || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    let socket = roomy_socket("127.0.0.1:0");
    let big = vec![0xffu8; 65_507]; // escaped as \xff: four bytes a byte
    let mut peak = 0;
    for _ in 0..5 {
        for _ in 0..64 {
            socket.send_to(&big, addr).unwrap();
        }
        let lines = server.lines_within(Duration::from_millis(300));
        assert!(!lines.is_empty());
        peak = peak.max(rss());
    }
    println!("peak resident {peak} KiB");
    assert!(peak < 14 * 1024, "resident {peak} KiB");
}

udpkit_tests! {
    hostile_datagrams_of_every_size_class_are_answered_and_shown_safely,
    a_thousand_random_datagrams_leave_the_server_serving,
    a_restarted_server_is_reported_as_a_gap_and_ping_recovers,
    bench_against_a_port_that_closes_counts_unreachable_and_ends,
    many_sources_leave_the_server_small,
    ping_and_bench_end_quietly_on_a_closed_pipe,
    printing_every_largest_datagram_keeps_the_server_small,
}
