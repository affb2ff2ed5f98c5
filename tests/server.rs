//! `udpkit server`: the seed's replies for any datagram, escaped lines, clear errors.

mod common;

use common::*;

/// Sends `data` and checks both the reply and the server's line about it.
fn check(server: &mut Running, addr: std::net::SocketAddr, data: &[u8], shown: &str) {
    let socket = test_socket("127.0.0.1:0");
    let reply = ask(&socket, addr, data);
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("Your data was {} bytes long", data.len())
    );
    let port = socket.local_addr().unwrap().port();
    assert_eq!(
        server.line(),
        format!("The client at 127.0.0.1:{port} says {shown}")
    );
}

fn every_kind_of_datagram_gets_the_seeds_reply_and_an_escaped_line() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    check(&mut server, addr, b"", "''");
    check(&mut server, addr, b"x", "'x'");
    check(&mut server, addr, b"\xff\xfe", r"'\xff\xfe'");
    check(
        &mut server,
        addr,
        b"\x1b[2J\x1b]0;title\x07\r\n\x00\x7f",
        r"'\x1b[2J\x1b]0;title\x07\r\n\x00\x7f'",
    );
    check(
        &mut server,
        addr,
        "it's \u{202e}é".as_bytes(),
        "\"it's \\u202eé\"",
    );
    let big = vec![b'a'; 65_507];
    check(
        &mut server,
        addr,
        &big,
        &format!("'{}'", "a".repeat(65_507)),
    );
    // Still serving after all of that.
    check(&mut server, addr, b"The time is now", "'The time is now'");
}

fn random_bytes_never_put_a_control_character_on_the_terminal() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let socket = test_socket("127.0.0.1:0");
    // A fixed xorshift sequence: every byte value, in varied lengths, reproducibly.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 2, 3, 7, 64, 255, 1024, 4096] {
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let reply = ask(&socket, addr, &data);
        assert_eq!(reply, format!("Your data was {len} bytes long").as_bytes());
        let line = server.line();
        assert!(
            !line.chars().any(char::is_control),
            "raw control character in {line:?}"
        );
    }
}

fn ipv6_loopback_is_served() {
    let (mut server, addr) = udpkit_server(&["::1", "-p", "0"]);
    assert!(addr.is_ipv6(), "{addr}");
    let socket = test_socket("[::1]:0");
    assert_eq!(ask(&socket, addr, b"hello"), b"Your data was 5 bytes long");
    let port = socket.local_addr().unwrap().port();
    assert_eq!(
        server.line(),
        format!("The client at [::1]:{port} says 'hello'")
    );
}

fn all_interfaces_listen_on_loopback_too() {
    let (mut server, addr) = udpkit_server(&["0.0.0.0", "-p", "0"]);
    assert_eq!(addr.ip().to_string(), "0.0.0.0");
    let socket = test_socket("127.0.0.1:0");
    let to = std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port());
    assert_eq!(ask(&socket, to, b"hi"), b"Your data was 2 bytes long");
    assert!(server.line().ends_with(" says 'hi'"));
}

fn a_port_in_use_is_a_one_line_error() {
    let (_first, addr) = udpkit_server(&["-p", "0"]);
    let mut cmd = udpkit();
    cmd.args(["server", "-p", &addr.port().to_string()]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "udpkit: cannot bind {addr}: address already in use;"
        )),
        "{err}"
    );
}

fn an_address_not_on_this_host_is_a_one_line_error() {
    // 192.0.2.1 is TEST-NET-1 (RFC 5737): never assigned here; binding sends nothing.
    let mut cmd = udpkit();
    cmd.args(["server", "192.0.2.1", "-p", "0"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot bind 192.0.2.1:0: cannot assign requested address"),
        "{err}"
    );
}

fn an_unresolvable_host_is_a_one_line_error() {
    let mut cmd = udpkit();
    cmd.args(["server", "no-such-host.invalid"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("udpkit: cannot resolve host 'no-such-host.invalid'"),
        "{err}"
    );
}

fn a_closed_output_pipe_ends_the_server_quietly() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    server.close_stdout();
    let socket = test_socket("127.0.0.1:0");
    // The first lines may still fit in the pipe, or reach our reader before it lets go;
    // a later write meets the broken pipe. Keep sending until the server has gone.
    for _ in 0..200 {
        if server.has_exited() {
            break;
        }
        let _ = socket.send_to(b"x", addr);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, err) = server.wait();
    assert!(status.success(), "exit {status}, stderr: {err}");
    assert!(err.is_empty(), "stderr: {err}");
}

udpkit_tests! {
    every_kind_of_datagram_gets_the_seeds_reply_and_an_escaped_line,
    random_bytes_never_put_a_control_character_on_the_terminal,
    ipv6_loopback_is_served [Need::Ipv6],
    all_interfaces_listen_on_loopback_too,
    a_port_in_use_is_a_one_line_error,
    an_address_not_on_this_host_is_a_one_line_error,
    an_unresolvable_host_is_a_one_line_error,
    a_closed_output_pipe_ends_the_server_quietly,
}
