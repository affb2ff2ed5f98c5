//! A server bound to a wildcard address replies from the address each request was sent
//! to, or a connected client (which accepts only its server's address) would drop it.
//! Loopback gives every test a host with many addresses: all of 127.0.0.0/8.

mod common;

use common::*;

fn client_to(host: &str, port: u16) -> std::process::Output {
    let mut cmd = udpkit();
    cmd.args([
        "client",
        host,
        "-p",
        &port.to_string(),
        "-m",
        "hi",
        "--max-wait",
        "0.4",
    ]);
    run(cmd)
}

fn a_server_on_all_ipv4_addresses_answers_from_each_one_asked() {
    let (_server, addr) = udpkit_server(&["0.0.0.0", "-p", "0", "-q"]);
    for host in ["127.0.0.1", "127.0.0.2", "127.1.2.3"] {
        let out = client_to(host, addr.port());
        assert!(out.status.success(), "{host}: {}", stderr(&out));
        let expected = format!(
            "The server {host}:{} replied 'Your data was 2 bytes long'\n",
            addr.port()
        );
        assert!(stdout(&out).ends_with(&expected), "{}", stdout(&out));
    }
}

fn a_dual_stack_server_answers_ipv4_and_ipv6_from_the_address_asked() {
    let (_server, addr) = udpkit_server(&["::", "-p", "0", "-q"]);
    for host in ["::1", "127.0.0.2"] {
        let out = client_to(host, addr.port());
        assert!(out.status.success(), "{host}: {}", stderr(&out));
    }
}

fn the_reply_really_comes_from_the_address_asked() {
    // The same check without udpkit's client: an unconnected socket sees the source.
    let (_server, addr) = udpkit_server(&["0.0.0.0", "-p", "0", "-q"]);
    let socket = test_socket("127.0.0.1:0");
    let asked = std::net::SocketAddr::from(([127, 0, 0, 9], addr.port()));
    socket.send_to(b"x", asked).unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from, asked);
}

fn a_relay_on_all_addresses_answers_from_the_address_asked() {
    // Before the fix the relay answered from the host's main address, and a connected
    // client (which accepts only the address it sent to) dropped every reply.
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let mut cmd = udpkit();
    cmd.args([
        "relay",
        "--listen",
        "0.0.0.0:0",
        "--to",
        &target.to_string(),
    ]);
    let mut relay = Running::start(cmd);
    let first = relay.line();
    let port: u16 = first
        .split(" -> ")
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let socket = test_socket("127.0.0.1:0");
    let asked = std::net::SocketAddr::from(([127, 0, 0, 9], port));
    socket.send_to(b"x", asked).unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from, asked);
    let out = client_to("127.0.0.9", port);
    assert!(out.status.success(), "{}", stderr(&out));
}

udpkit_tests! {
    a_server_on_all_ipv4_addresses_answers_from_each_one_asked,
    a_dual_stack_server_answers_ipv4_and_ipv6_from_the_address_asked [Need::Ipv6],
    the_reply_really_comes_from_the_address_asked,
    a_relay_on_all_addresses_answers_from_the_address_asked,
}
