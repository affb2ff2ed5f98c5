//! Echo (RFC 862) and STAMP (RFC 8762/8972) against peers udpkit did not write: a Python
//! echo server, socat's, and the `stamp-suite` crate's Session-Sender and
//! Session-Reflector, in both directions; and udpkit's own echo server and reflector
//! against bad input and the book's lossy peer.
//!
//! A peer that is not installed makes the harness report its test ignored, saying so,
//! except under CI (`CI=true`), whose `.ci/run` installs them all: there it fails.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

/// socat echoing through a pipe (`socat UDP-LISTEN:PORT,fork PIPE`), as a user would.
fn socat_echo() -> (Running, SocketAddr) {
    let socat = harness::tool("socat").expect("Need::Tool(\"socat\")");
    let port = free_port();
    let mut cmd = Command::new(socat);
    cmd.args([
        "-b",
        "65536",
        &format!("UDP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
        "PIPE",
    ]);
    let proc = Running::start(cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Ready once it echoes.
    let socket = test_socket("127.0.0.1:0");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    for _ in 0..100 {
        let _ = socket.send_to(b"ready?", addr);
        let mut buf = [0u8; 16];
        if socket.recv_from(&mut buf).is_ok() {
            return (proc, addr);
        }
    }
    panic!("socat did not start echoing on {addr}");
}

fn ping_bench_mtu_speak_echo(addr: SocketAddr, window: &str) {
    let (code, v) = json_to(
        "ping",
        addr,
        &["--protocol", "echo", "-c", "5", "-i", "0.02"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 5, "{v}");
    assert_eq!(v["authenticated"], true, "an echo repeats the ID: {v}");
    let (code, v) = json_to(
        "bench",
        addr,
        &["--protocol", "echo", "-n", "300", "--window", window],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 300, "{v}");
    assert_eq!(
        (v["bad"].as_u64(), v["forged"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    let (code, v) = json_to("mtu", addr, &["--protocol", "echo", "-W", "0.2"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        v["payload"], 65507,
        "loopback carries the largest datagram: {v}"
    );
}

fn ping_bench_and_mtu_speak_echo_to_a_python_echo_server() {
    let (_server, addr) = python_echo();
    ping_bench_mtu_speak_echo(addr, "16");
    // The seed's protocol against an echo server: every reply is bad, none is credited.
    let (code, v) = json_to("ping", addr, &["-c", "2", "-i", "0.02", "-W", "0.2"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["received"], 0, "{v}");
    assert_eq!(v["bad"], 2, "{v}");
}

fn ping_bench_and_mtu_speak_echo_to_socat() {
    let (_server, addr) = socat_echo();
    // socat echoes through a byte pipe, which joins datagrams that wait in it together:
    // one request at a time.
    ping_bench_mtu_speak_echo(addr, "1");
}

fn mtu_against_an_echo_server_that_cuts_its_replies_says_so() {
    // xinetd's echo answers at most 2,048 bytes: the search must not call that the path.
    let (_echo, addr) = python_echo_cutting_at(2048);
    let (code, v) = json_to("mtu", addr, &["--protocol", "echo", "-W", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 2048, "{v}");
    assert!(v["cut_to"].as_u64().is_some_and(|c| c >= 2048), "{v}");
    let out = run(udpkit_to(
        "mtu",
        addr,
        &["--protocol", "echo", "-W", "0.05"],
    ));
    let text = stdout(&out);
    assert!(
        text.contains("came back shorter than their probes"),
        "{text}"
    );
    assert!(text.contains("path MTU is at least 2076 bytes"), "{text}");
}

/// A key file readable by its owner alone, in `dir`, holding `hex`.
fn key_file(dir: &std::path::Path, name: &str, hex: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, hex).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn stamp_suites_malformed_tlvs_come_back_as_rfc_8972_says() {
    // Its diagnostic senders: reserved flag bits set (cleared in the reply), a length that
    // overruns the packet (M set, U clear: the type is known, processing stops there).
    let stamp_suite = harness::tool("stamp-suite").expect("Need::Tool");
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp"]);
    for (kind, malformed) in [("bad-flags", 0), ("bad-length", 5)] {
        let mut cmd = Command::new(&stamp_suite);
        cmd.args(["-r", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-c", "5", "-d", "5", "-L", "2", "--output-format", "json"])
            .args(["--ssid", "7", "--cos", "--malformed", kind]);
        let out = run_for(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "{}", stderr(&out));
        let v = stamp_suite_summary(&out);
        assert_eq!(v["packets_received"], 5, "{kind}: {v}");
        let t = &v["measurements"]["tlv_validation"];
        assert_eq!(t["evaluated_replies"], 5, "{kind}: {t}");
        assert_eq!(t["rejected_replies"], 0, "{kind}: {t}");
        assert_eq!(t["flags"]["unrecognized"], 0, "{kind}: {t}");
        assert_eq!(t["flags"]["malformed"], malformed, "{kind}: {t}");
    }
}

fn authenticated_stamp_both_ways_with_stamp_suite() {
    let stamp_suite = harness::tool("stamp-suite").expect("Need::Tool");
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let key = key.to_str().unwrap();
    // Its authenticated sender against udpkit's reflector.
    let (mut server, addr) = udpkit_server(&[
        "-p",
        "0",
        "-q",
        "--json",
        "--protocol",
        "stamp",
        "--key-file",
        key,
    ]);
    let mut cmd = Command::new(&stamp_suite);
    cmd.args(["-r", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-c", "10", "-d", "5", "-L", "2", "--output-format", "json"])
        .args(["-A", "A", "--hmac-key-file", key]);
    let out = run_for(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", stderr(&out));
    let v = stamp_suite_summary(&out);
    assert_eq!(v["packets_received"], 10, "{v}");
    let s = json_summary(&mut server);
    assert_eq!(
        (s["replied"].as_u64(), s["malformed"].as_u64()),
        (Some(10), Some(0)),
        "{s}"
    );
    // udpkit's authenticated sender against its reflector; with another key, nothing.
    let port = free_port();
    let mut cmd = Command::new(&stamp_suite);
    cmd.args(["-i", "-S", "127.0.0.1", "-o", &port.to_string()])
        .args(["-A", "A", "--hmac-key-file", key]);
    let _reflector = Running::start(cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut v = serde_json::Value::Null;
    for _ in 0..50 {
        let (_, got) = json_to(
            "ping",
            addr,
            &[
                "--protocol",
                "stamp",
                "--key-file",
                key,
                "-c",
                "1",
                "-W",
                "0.1",
            ],
        );
        v = got;
        if v["received"] == 1 {
            break;
        }
    }
    assert_eq!(
        v["received"], 1,
        "stamp-suite's reflector never answered: {v}"
    );
    let (code, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "--key-file",
            key,
            "-c",
            "10",
            "-i",
            "0.01",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 10, "{v}");
    assert_eq!(
        (v["forged"].as_u64(), v["matching"].as_str()),
        (Some(0), Some("ids")),
        "{v}"
    );
    assert_eq!(v["authenticated"], true, "{v}");
    let other = key_file(dir.path(), "other", &KEY.replace('0', "1"));
    let (code, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "--key-file",
            other.to_str().unwrap(),
            "-c",
            "3",
            "-i",
            "0.01",
            "-W",
            "0.2",
        ],
    );
    assert_eq!((code, v["received"].as_u64()), (Some(1), Some(0)), "{v}");
}

fn an_authenticated_reply_cannot_be_forged_even_by_one_who_sees_the_requests() {
    // The forger sees each request (it is the path) and answers first with everything
    // right but the HMAC, which it cannot make without the key.
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let forger = "import socket, struct, sys\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1', 0))\n\
         print(s.getsockname()[1], flush=True)\n\
         while True:\n\
         \x20   d, peer = s.recvfrom(2048)\n\
         \x20   r = bytearray(112)\n\
         \x20   r[0:4] = d[0:4]; r[16:24] = d[16:24]; r[26:28] = d[26:28]\n\
         \x20   r[32:40] = d[16:24]; r[48:52] = d[0:4]; r[64:72] = d[16:24]; r[80] = 64\n\
         \x20   r[96:112] = d[96:112]\n\
         \x20   s.sendto(bytes(r), peer)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-u", "-c", forger]);
    let mut proc = Running::start(cmd);
    let port: u16 = proc.line().trim().parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (code, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "--key-file",
            key.to_str().unwrap(),
            "-c",
            "5",
            "-i",
            "0.01",
            "-W",
            "0.2",
        ],
    );
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        (v["received"].as_u64(), v["forged"].as_u64()),
        (Some(0), Some(5)),
        "{v}"
    );
    let out = run(udpkit_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "--key-file",
            key.to_str().unwrap(),
            "-c",
            "2",
            "-i",
            "0.01",
            "-W",
            "0.2",
        ],
    ));
    assert!(
        stdout(&out).contains("failed their HMAC"),
        "{}",
        stdout(&out)
    );
}

fn an_authenticated_mtu_proves_no_size_its_hmac_does_not_cover() {
    // The HMAC covers 96 of 112 bytes: one on the path could cut a larger probe and pad its
    // reply back unseen, so sizes over 112 bytes pass unauthenticated, and say so.
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let k = key.to_str().unwrap();
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp", "--key-file", k]);
    let (code, v) = json_to(
        "mtu",
        addr,
        &["--protocol", "stamp", "--key-file", k, "-W", "0.1"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 65507, "{v}");
    assert_eq!(v["authenticated"], false, "{v}");
}

fn a_key_file_others_can_read_or_without_stamp_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let k = key.to_str().unwrap();
    let out = run(udpkit_to(
        "ping",
        "127.0.0.1:9".parse().unwrap(),
        &["--protocol", "stamp", "--key-file", k],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(udpkit_to(
        "ping",
        "127.0.0.1:9".parse().unwrap(),
        &["--protocol", "echo", "--key-file", k],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("add --protocol stamp"),
        "{}",
        stderr(&out)
    );
    let plus = key_file(dir.path(), "plus", &"+a".repeat(16));
    let out = run(udpkit_to(
        "ping",
        "127.0.0.1:9".parse().unwrap(),
        &["--protocol", "stamp", "--key-file", plus.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("digits 0-9 and a-f only"),
        "{}",
        stderr(&out)
    );
    let short = key_file(dir.path(), "short", "0011");
    let out = run(udpkit_to(
        "ping",
        "127.0.0.1:9".parse().unwrap(),
        &["--protocol", "stamp", "--key-file", short.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("16 to 64 bytes"), "{}", stderr(&out));
}

fn stamp_against_an_echo_server_is_told_to_try_another_protocol() {
    // An echo of a STAMP request reads as a test packet that copies no request.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", "echo"]);
    let out = run(udpkit_to(
        "ping",
        addr,
        &["--protocol", "stamp", "-c", "3", "-i", "0.02", "-W", "0.2"],
    ));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("a server of another protocol (--protocol"),
        "{text}"
    );
}

fn udpkit_echoes_every_datagram_unchanged_and_counts_it() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json", "--protocol", "echo"]);
    let socket = test_socket("127.0.0.1:0");
    for data in [&b""[..], b"x", b"The time is now", &[0u8, 255, 10, 13][..]] {
        assert_eq!(ask(&socket, addr, data), data);
    }
    let (code, v) = json_to(
        "bench",
        addr,
        &[
            "--protocol",
            "echo",
            "-n",
            "5000",
            "--window",
            "64",
            "-s",
            "1000",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 5000, "{v}");
    assert_eq!(v["authenticated"], true, "{v}");
    let s = json_summary(&mut server);
    assert_eq!(s["replied"], s["received"], "{s}");
    assert_eq!(
        s["bytes_out"], s["bytes_in"],
        "an echo is never longer: {s}"
    );
}

/// stamp-suite's last line of JSON output: its summary.
fn stamp_suite_summary(out: &std::process::Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("\"type\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary from stamp-suite: {text}; {}", stderr(out)));
    serde_json::from_str(line).unwrap()
}

fn stamp_suites_sender_measures_udpkits_reflector_and_both_agree() {
    let stamp_suite = harness::tool("stamp-suite").expect("Need::Tool");
    for stateful in [false, true] {
        let mut args = vec![
            "127.0.0.1",
            "-p",
            "0",
            "-q",
            "--json",
            "--protocol",
            "stamp",
        ];
        if stateful {
            args.push("--stateful");
        }
        let (mut server, addr) = udpkit_server(&args);
        let mut cmd = Command::new(&stamp_suite);
        cmd.args(["-r", "127.0.0.1", "-p", &addr.port().to_string()])
            .args(["-c", "20", "-d", "5", "-L", "2", "--output-format", "json"])
            .args(["--ssid", "77", "--cos", "--dscp", "10"]);
        let out = run_for(cmd, Duration::from_secs(30));
        assert!(out.status.success(), "{}", stderr(&out));
        let v = stamp_suite_summary(&out);
        assert_eq!(v["packets_sent"], 20, "{v}");
        assert_eq!(v["packets_received"], 20, "{v}");
        let m = &v["measurements"];
        // Stateless: the sender's own numbers back (0..19 either way); stateful: ours.
        assert_eq!(m["last_reflector_sequence"], 19, "{v}");
        assert_eq!(m["tlv_validation"]["rejected_replies"], 0, "{v}");
        assert_eq!(m["tlv_validation"]["flags"]["unrecognized"], 0, "{v}");
        // One host, one clock: the one-way delays are real, so never negative.
        assert!(v["owd"]["forward_min_ms"].as_f64().unwrap() >= 0.0, "{v}");
        assert!(v["owd"]["reverse_min_ms"].as_f64().unwrap() >= 0.0, "{v}");
        let s = json_summary(&mut server);
        assert_eq!(s["received"], 20, "{s}");
        assert_eq!(s["replied"], 20, "both sides count the same 20: {s}");
        assert_eq!(
            s["bytes_out"], s["bytes_in"],
            "never longer than the request: {s}"
        );
    }
}

fn udpkit_pings_stamp_suites_reflector_and_both_agree() {
    let stamp_suite = harness::tool("stamp-suite").expect("Need::Tool");
    let port = free_port();
    let mut cmd = Command::new(&stamp_suite);
    cmd.args([
        "-i",
        "-S",
        "127.0.0.1",
        "-o",
        &port.to_string(),
        "--stateful-reflector",
    ]);
    let mut reflector = Running::start(cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Ready once it reflects.
    let mut ready = false;
    for _ in 0..50 {
        let (_, v) = json_to(
            "ping",
            addr,
            &["--protocol", "stamp", "-c", "1", "-W", "0.1"],
        );
        if v["received"] == 1 {
            ready = true;
            break;
        }
    }
    assert!(ready, "stamp-suite's reflector never answered");
    let (code, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "-c",
            "20",
            "-i",
            "0.01",
            "--ttl",
            "33",
            "--dscp",
            "10",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 20, "{v}");
    // stamp-suite echoes TLVs: udpkit's nonce came back, every reply is authenticated.
    assert_eq!(v["authenticated"], true, "{v}");
    let s = &v["stamp"];
    assert_eq!(s["ttl_sent"], 33, "{v}");
    assert_eq!(s["ttl_seen"]["min"], 33, "the reflector saw our TTL: {v}");
    assert_eq!(s["cos_seen"]["dscp"], 10, "the reflector saw our DSCP: {v}");
    assert_eq!(s["cos_seen"]["ecn"], 0, "{v}");
    assert_eq!(s["remarked"], false, "{v}");
    assert_eq!(s["one_way"], "exact", "{v}");
    assert_eq!(s["loss_forward"], 0, "{v}");
    assert!(s["forward_ms"]["min"].as_f64().unwrap() >= 0.0, "{v}");
    signal(&reflector, libc::SIGINT);
    let (_, err) = reflector.wait();
    let said = reflector
        .lines_within(Duration::from_millis(200))
        .join("\n")
        + &err;
    // Its count and ours: the readiness probes and the 20.
    let reflected = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("Total packets reflected: "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count from the reflector: {said}"));
    // The one readiness probe it answered, then the 20, every one of which udpkit received.
    assert_eq!(reflected, 21, "{said}");
}

fn a_stateful_reflector_splits_the_books_lossy_peer_by_direction() {
    // Requests dropped before the reflector sees them (--drop-rate, udp_remote.py's
    // habit) are lost on the way there; replies dropped by a relay on the way back are
    // lost on the way back. udpkit's sender tells them apart.
    let (_server, addr) = udpkit_server(&[
        "-p",
        "0",
        "-q",
        "--protocol",
        "stamp",
        "--stateful",
        "--drop-rate",
        "0.3",
        "--seed",
        "5",
    ]);
    let (code, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "-c",
            "60",
            "-i",
            "0.005",
            "-W",
            "0.3",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    let lost = v["sent"].as_u64().unwrap() - v["received"].as_u64().unwrap();
    assert!(lost > 5, "{v}");
    let s = &v["stamp"];
    let (fwd, back, unknown) = (
        s["loss_forward"].as_u64().unwrap(),
        s["loss_backward"].as_u64().unwrap(),
        s["loss_unknown_direction"].as_u64().unwrap(),
    );
    assert_eq!(back, 0, "nothing was lost on the way back: {v}");
    assert_eq!(fwd + unknown, lost, "{v}");

    // Both at once, against the counts of those who dropped them: the server's and the
    // relay's. Requests after the last reply the reflector counted are of unknown way.
    let (mut server, addr) = udpkit_server(&[
        "-p",
        "0",
        "-q",
        "--json",
        "--protocol",
        "stamp",
        "--stateful",
        "--drop-rate",
        "0.3",
        "--seed",
        "7",
    ]);
    let (mut relay, via) = udpkit_relay(
        addr,
        &[
            "--drop",
            "0.3",
            "--direction",
            "down",
            "--seed",
            "9",
            "--json",
        ],
    );
    let (_, v) = json_to(
        "ping",
        via,
        &[
            "--protocol",
            "stamp",
            "-c",
            "80",
            "-i",
            "0.005",
            "-W",
            "0.3",
        ],
    );
    let lost = v["sent"].as_u64().unwrap() - v["received"].as_u64().unwrap();
    let s = &v["stamp"];
    let (fwd, back, unknown) = (
        s["loss_forward"].as_u64().expect("a split"),
        s["loss_backward"].as_u64().unwrap(),
        s["loss_unknown_direction"].as_u64().unwrap(),
    );
    assert_eq!(fwd + back + unknown, lost, "{v}");
    let dropped_there = json_summary(&mut server)["dropped_simulated"]
        .as_u64()
        .unwrap();
    let r = json_summary(&mut relay);
    let dropped_back = r["down"]["dropped"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        fwd <= dropped_there && dropped_there <= fwd + unknown,
        "{dropped_there}: {v}"
    );
    assert!(
        back <= dropped_back && dropped_back <= back + unknown,
        "{dropped_back}: {v}"
    );
}

fn a_stateless_reflector_does_not_pretend_to_know_which_way() {
    let (_server, addr) = udpkit_server(&[
        "-p",
        "0",
        "-q",
        "--protocol",
        "stamp",
        "--drop-rate",
        "0.3",
        "--seed",
        "5",
    ]);
    let (_, v) = json_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "-c",
            "40",
            "-i",
            "0.005",
            "-W",
            "0.3",
        ],
    );
    assert!(v["received"].as_u64().unwrap() < 40, "{v}");
    assert!(v["stamp"]["loss_forward"].is_null(), "{v}");
    assert!(v["stamp"]["loss_direction_unknown_why"].is_string(), "{v}");
}

fn packets_too_short_to_be_test_packets_are_counted_never_answered_and_the_reflector_goes_on() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json", "--protocol", "stamp"]);
    let socket = test_socket("127.0.0.1:0");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    for bad in [&b""[..], b"x", &[0u8; 13][..]] {
        socket.send_to(bad, addr).unwrap();
    }
    let mut buf = [0u8; 100];
    assert!(
        socket.recv_from(&mut buf).is_err(),
        "a packet too short for a sender's fields was answered"
    );
    // 14 to 43 bytes: a TWAMP-light sender's packet, answered with the base packet.
    let mut short = [0u8; 43];
    short[..4].copy_from_slice(&[0, 0, 0, 9]);
    let reply = ask(&socket, addr, &short);
    assert_eq!(reply.len(), 44);
    assert_eq!(
        &reply[24..28],
        &[0, 0, 0, 9],
        "the sender's sequence number"
    );
    // Garbage of 44 bytes and more is a test packet (RFC 8762 reads any bytes): answered,
    // same length, with malformed TLVs flagged.
    let mut garbage = vec![0xffu8; 60];
    garbage[..4].copy_from_slice(&[0, 0, 0, 1]);
    assert_eq!(ask(&socket, addr, &garbage).len(), 60);
    let (code, v) = json_to(
        "ping",
        addr,
        &["--protocol", "stamp", "-c", "3", "-i", "0.01"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 3, "{v}");
    let s = json_summary(&mut server);
    assert_eq!(s["malformed"], 3, "{s}");
    assert_eq!(s["replied"], 5, "{s}");
}

fn forged_stamp_replies_are_never_counted() {
    // A forger answers every request first, with the right sequence number, SSID and even
    // udpkit's nonce, but not the request's exact timestamp; the genuine reply follows.
    let server = Scripted::start(|socket, peer, request, _| {
        let mut forged = request.to_vec();
        forged[4..12].fill(0); // a guessed timestamp
        let arrival = udpkit::wire::stamp::Arrival::default();
        let e = udpkit::wire::stamp::ErrorEstimate::for_error(1e-6, true);
        let now = udpkit::wire::stamp::NtpTime::now();
        let as_arrived = udpkit::wire::stamp::CosPolicy::AsArrived;
        udpkit::wire::stamp::reflect(&mut forged, &arrival, None, now, e, as_arrived);
        socket.send_to(&forged, peer).unwrap();
        let mut genuine = request.to_vec();
        udpkit::wire::stamp::reflect(&mut genuine, &arrival, None, now, e, as_arrived);
        std::thread::sleep(Duration::from_millis(5));
        socket.send_to(&genuine, peer).unwrap();
    });
    let (code, v) = json_to(
        "ping",
        server.addr,
        &["--protocol", "stamp", "-c", "5", "-i", "0.02"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 5, "{v}");
    assert_eq!(v["forged"], 5, "{v}");
    assert_eq!(v["authenticated"], true, "{v}");
    assert!(
        v["rtt_ms"]["min"].as_f64().unwrap() >= 4.0,
        "a forged reply's time counted: {v}"
    );
}

fn a_stamp_request_too_small_for_the_protocol_is_refused_before_sending() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let out = run(udpkit_to(
        "ping",
        addr,
        &["--protocol", "stamp", "-s", "40", "-c", "1"],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at least 44 bytes"),
        "{}",
        stderr(&out)
    );
    let out = run({
        let mut cmd = udpkit();
        cmd.args(["server", "-p", "0", "--stateful"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--protocol stamp"),
        "{}",
        stderr(&out)
    );
}

fn stamp_over_ipv6_reports_the_hop_limit_and_traffic_class_that_arrived() {
    for host in ["::1", "::"] {
        let (_server, addr) = udpkit_server(&[host, "-p", "0", "-q", "--protocol", "stamp"]);
        let to = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()));
        let (code, v) = json_to(
            "ping",
            to,
            &[
                "--protocol",
                "stamp",
                "-c",
                "3",
                "-i",
                "0.01",
                "--hop-limit",
                "7",
                "--tos",
                "41",
            ],
        );
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["received"], 3, "{v}");
        assert_eq!(v["authenticated"], true, "{v}");
        let s = &v["stamp"];
        assert_eq!(s["ttl_seen"]["min"], 7, "bound to {host}: {v}");
        // TOS 41: DSCP 10, ECN 1 (ECT(1)).
        assert_eq!(s["cos_seen"]["dscp"], 10, "bound to {host}: {v}");
        assert_eq!(s["cos_seen"]["ecn"], 1, "bound to {host}: {v}");
        assert_eq!(s["one_way"], "exact", "{v}");
    }
}

fn mtu_and_bench_speak_stamp_without_a_single_false_forgery() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp", "--stateful"]);
    let (code, v) = json_to("mtu", addr, &["--protocol", "stamp", "-W", "0.2"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 65507, "{v}");
    assert_eq!(
        v["forged"], 0,
        "probes too small for the nonce are not forgeries: {v}"
    );
    assert_eq!(v["authenticated"], true, "{v}");
    let (code, v) = json_to(
        "bench",
        addr,
        &[
            "--protocol",
            "stamp",
            "-n",
            "4000",
            "--flows",
            "4",
            "--threads",
            "2",
            "--window",
            "16",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 4000, "{v}");
    assert_eq!(
        (v["forged"].as_u64(), v["bad"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(v["stamp"]["loss_forward"], 0, "{v}");
    assert_eq!(v["stamp"]["one_way"], "exact", "{v}");
}

fn an_echo_or_stamp_server_over_its_rate_limit_reflects_nothing_more() {
    // The seed's slip (one in two refused requests answered when the reply is no longer)
    // would bounce half of a spoofed flood off an echo or a reflector, whose replies are
    // as long as the requests: they never slip.
    for protocol in ["echo", "stamp"] {
        let (mut server, addr) = udpkit_server(&[
            "-p",
            "0",
            "-q",
            "--json",
            "--protocol",
            protocol,
            "--rate-limit",
            "20",
        ]);
        let (replies, bytes) = flood(
            &roomy_socket("127.0.0.1:0"),
            addr,
            &[0u8; 100],
            2000,
            Duration::from_millis(300),
        );
        // A burst of 20, and 20 a second for as long as the flood lasted (well under 2 s).
        assert!(replies <= 60, "{protocol}: {replies} replies");
        assert!(bytes <= 60 * 100, "{protocol}: {bytes} bytes");
        let s = json_summary(&mut server);
        assert_eq!(s["slipped"], 0, "{protocol}: {s}");
        assert_eq!(
            s["replied"].as_u64(),
            Some(replies as u64),
            "{protocol}: {s}"
        );
    }
}

udpkit_tests! {
    authenticated_stamp_both_ways_with_stamp_suite [Need::Tool("stamp-suite")],
    stamp_suites_malformed_tlvs_come_back_as_rfc_8972_says [Need::Tool("stamp-suite")],
    an_authenticated_reply_cannot_be_forged_even_by_one_who_sees_the_requests [Need::Tool("python3")],
    a_key_file_others_can_read_or_without_stamp_is_refused,
    an_authenticated_mtu_proves_no_size_its_hmac_does_not_cover,
    stamp_against_an_echo_server_is_told_to_try_another_protocol,
    mtu_against_an_echo_server_that_cuts_its_replies_says_so [Need::Tool("python3")],
    ping_bench_and_mtu_speak_echo_to_a_python_echo_server,
    ping_bench_and_mtu_speak_echo_to_socat [Need::Tool("socat")],
    udpkit_echoes_every_datagram_unchanged_and_counts_it,
    stamp_suites_sender_measures_udpkits_reflector_and_both_agree [Need::Tool("stamp-suite")],
    udpkit_pings_stamp_suites_reflector_and_both_agree [Need::Tool("stamp-suite")],
    a_stateful_reflector_splits_the_books_lossy_peer_by_direction,
    a_stateless_reflector_does_not_pretend_to_know_which_way,
    packets_too_short_to_be_test_packets_are_counted_never_answered_and_the_reflector_goes_on,
    forged_stamp_replies_are_never_counted,
    a_stamp_request_too_small_for_the_protocol_is_refused_before_sending,
    stamp_over_ipv6_reports_the_hop_limit_and_traffic_class_that_arrived [Need::Ipv6],
    mtu_and_bench_speak_stamp_without_a_single_false_forgery,
    an_echo_or_stamp_server_over_its_rate_limit_reflects_nothing_more,
}
