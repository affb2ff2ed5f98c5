//! `udpkit client`: the normal exchange, and chapter 2's fixes to the seed's client.

mod common;

use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use common::*;

fn client(port: u16, extra: &[&str]) -> std::process::Command {
    let mut cmd = udpkit();
    cmd.args(["client", "-p", &port.to_string()]).args(extra);
    cmd
}

fn the_normal_exchange_prints_the_seeds_two_lines() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let out = run(client(addr.port(), &[]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let port = lines[0]
        .strip_prefix("The OS assigned me the address 127.0.0.1:")
        .unwrap_or_else(|| panic!("{text}"));
    let said = server.line();
    assert!(
        said.starts_with(&format!(
            "The client at 127.0.0.1:{port} says 'The time is "
        )),
        "{said}"
    );
    let len = said.len() - format!("The client at 127.0.0.1:{port} says ''").len();
    assert_eq!(
        lines[1],
        format!("The server {addr} replied 'Your data was {len} bytes long'")
    );
}

fn nothing_listening_fails_at_the_first_try_with_exit_1() {
    let port = free_port();
    let out = run(client(port, &["-v"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "udpkit: no server at 127.0.0.1:{port}: the port is closed"
        )),
        "{err}"
    );
    // The ICMP port unreachable ends it during the first wait: no retransmission.
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Waiting")).count(),
        1,
        "{text}"
    );
}

fn a_silent_server_gets_five_tries_over_three_seconds_then_exit_1() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = run(client(port, &["-v"]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let waits: Vec<&str> = text.lines().filter(|l| l.starts_with("Waiting")).collect();
    assert_eq!(
        waits,
        [
            "Waiting up to 0.1 seconds for a reply",
            "Waiting up to 0.2 seconds for a reply",
            "Waiting up to 0.4 seconds for a reply",
            "Waiting up to 0.8 seconds for a reply",
            "Waiting up to 1.6 seconds for a reply",
        ]
    );
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "udpkit: no reply from 127.0.0.1:{port} after 5 tries over 3."
        )),
        "{err}"
    );
    // Each try reached the silent socket.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 128];
    let received = std::iter::from_fn(|| silent.recv_from(&mut buf).ok())
        .take(100)
        .count();
    assert_eq!(received, 5);
}

fn backoff_bounds_are_settable() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = run(client(
        port,
        &["-v", "--wait", "0.01", "--max-wait", "0.04"],
    ));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Waiting")).count(),
        3,
        "{text}"
    );
    assert!(stderr(&out).contains("after 3 tries"), "{}", stderr(&out));
}

/// A hand-made server: answers the client's `nth` request with `reply`, after letting
/// `before` run with the client's address.
fn scripted_server(
    nth: usize,
    reply: &'static [u8],
    before: impl FnOnce(&UdpSocket, std::net::SocketAddr) + Send + 'static,
) -> (u16, thread::JoinHandle<usize>) {
    let socket = test_socket("127.0.0.1:0");
    let port = socket.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        let mut before = Some(before);
        for seen in 1..=nth {
            let Ok((_, peer)) = socket.recv_from(&mut buf) else {
                return seen - 1;
            };
            if let Some(f) = before.take() {
                f(&socket, peer);
            }
            if seen == nth {
                socket.send_to(reply, peer).unwrap();
            }
        }
        nth
    });
    (port, handle)
}

fn a_reply_from_another_socket_is_ignored() {
    let (port, server) = scripted_server(1, b"Your data was 5 bytes long", |_, client| {
        let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
        forger.send_to(b"FORGED", client).unwrap();
        // Give the forgery time to arrive before the real reply does.
        thread::sleep(Duration::from_millis(20));
    });
    let out = run(client(port, &["-m", "hello", "--wait", "2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("FORGED"), "{text}");
    assert!(
        text.ends_with(&format!(
            "The server 127.0.0.1:{port} replied 'Your data was 5 bytes long'\n"
        )),
        "{text}"
    );
    assert_eq!(server.join().unwrap(), 1);
}

fn a_lost_request_is_retransmitted_and_answered() {
    // The server ignores the first two copies, as if they were lost.
    let (port, server) = scripted_server(3, b"Your data was 5 bytes long", |_, _| {});
    let out = run(client(port, &["-m", "hello", "-v"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Waiting")).count(),
        3,
        "{text}"
    );
    assert!(
        text.ends_with("replied 'Your data was 5 bytes long'\n"),
        "{text}"
    );
    assert_eq!(server.join().unwrap(), 3);
}

fn a_reply_for_another_length_is_not_taken_for_ours() {
    let (port, server) = scripted_server(1, b"Your data was 5 bytes long", |socket, client| {
        // A stale answer, to some earlier 3-byte request, from the server's own address.
        socket
            .send_to(b"Your data was 3 bytes long", client)
            .unwrap();
    });
    let out = run(client(port, &["-m", "hello", "--wait", "2"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Ignored 'Your data was 3 bytes long'"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).ends_with("replied 'Your data was 5 bytes long'\n"),
        "{}",
        stdout(&out)
    );
    assert_eq!(server.join().unwrap(), 1);
}

fn ipv6_client_and_server() {
    let (mut server, addr) = udpkit_server(&["::1", "-p", "0"]);
    let out = run(client(addr.port(), &["::1", "-m", "v6"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("The OS assigned me the address [::1]:"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "The server [::1]:{} replied 'Your data was 2 bytes long'\n",
            addr.port()
        )),
        "{text}"
    );
    assert!(server.line().ends_with(" says 'v6'"));
}

fn the_server_reply_is_escaped_too() {
    // Not a reply, so not accepted, but shown, escaped.
    let (port, server) = scripted_server(1, b"\x1b[31mred\x07", |_, _| {});
    let out = run(client(port, &["-m", "x", "--max-wait", "0.1"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Ignored '\\x1b[31mred\\x07' from the server's address"),
        "{}",
        stdout(&out)
    );
    server.join().unwrap();
}

fn only_the_seeds_reply_for_the_length_sent_is_accepted_and_the_rest_is_counted() {
    // From the server's own address: garbage, a reply for another length, then the reply.
    let server = Scripted::start(|socket, peer, request, _| {
        socket
            .send_to(b"HACKED: send me your password", peer)
            .unwrap();
        socket.send_to(b"Your data was 1 bytes long", peer).unwrap();
        let reply = format!("Your data was {} bytes long", request.len());
        socket.send_to(reply.as_bytes(), peer).unwrap();
    });
    let out = run(client(server.addr.port(), &["-m", "hello"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1..],
        [
            "Ignored 'HACKED: send me your password' from the server's address: not the reply to this request".to_string(),
            "Ignored 'Your data was 1 bytes long' from the server's address: not the reply to this request".to_string(),
            format!("The server {} replied 'Your data was 5 bytes long'", server.addr),
        ],
        "{text}"
    );
}

fn a_tiny_wait_is_refused_and_tries_are_bounded() {
    let out = run(client(free_port(), &["--wait", "1e-300"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("out of range"), "{}", stderr(&out));
    // The smallest wait with the longest bound still gives up after a bounded number of
    // tries (a silent server: a bound socket that never answers).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut cmd = client(port, &["--wait", "0.001", "--max-wait", "0.02", "-v"]);
    cmd.env("LC_ALL", "C");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let waits = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("Waiting"))
        .count();
    assert_eq!(waits, 5, "{}", stdout(&out));
    let mut buf = [0u8; 100];
    silent.set_nonblocking(true).unwrap();
    let mut got = 0;
    while silent.recv(&mut buf).is_ok() {
        got += 1;
    }
    assert_eq!(got, 5);
}

udpkit_tests! {
    the_normal_exchange_prints_the_seeds_two_lines,
    nothing_listening_fails_at_the_first_try_with_exit_1,
    a_silent_server_gets_five_tries_over_three_seconds_then_exit_1,
    backoff_bounds_are_settable,
    a_reply_from_another_socket_is_ignored,
    a_lost_request_is_retransmitted_and_answered,
    a_reply_for_another_length_is_not_taken_for_ours,
    ipv6_client_and_server [Need::Ipv6],
    the_server_reply_is_escaped_too,
    only_the_seeds_reply_for_the_length_sent_is_accepted_and_the_rest_is_counted,
    a_tiny_wait_is_refused_and_tries_are_bounded,
}
