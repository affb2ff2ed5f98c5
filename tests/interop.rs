//! udpkit and the seed's `udp_local.py` speak the same protocol, both ways.

mod common;

use common::*;

fn seed_client_gets_its_answer_from_udpkit_server() {
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let mut cmd = seed();
    cmd.args(["client", "-p", &addr.port().to_string()]);
    let out = run(cmd);
    assert!(out.status.success(), "seed client failed: {}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("The OS assigned me the address ('0.0.0.0', "),
        "{text}"
    );

    // The seed sends "The time is <now>": 38 bytes, or 31 when the microsecond is 0.
    let said = server.line();
    let sent = said
        .split_once(" says '")
        .and_then(|(_, rest)| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("unexpected server line: {said}"));
    assert!(said.starts_with("The client at 127.0.0.1:"), "{said}");
    assert!(sent.starts_with("The time is "), "{said}");
    assert_eq!(
        lines[1],
        format!(
            "The server ('127.0.0.1', {}) replied 'Your data was {} bytes long'",
            addr.port(),
            sent.len()
        )
    );
}

fn udpkit_client_gets_its_answer_from_seed_server() {
    let (mut server, addr) = seed_server();
    let port = addr.port();

    let mut cmd = udpkit();
    cmd.args(["client", "-p", &port.to_string()]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "udpkit client failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let assigned = lines[0]
        .strip_prefix("The OS assigned me the address 127.0.0.1:")
        .unwrap_or_else(|| panic!("{text}"));

    let said = server.line();
    let prefix = format!("The client at ('127.0.0.1', {assigned}) says 'The time is ");
    assert!(said.starts_with(&prefix), "seed server saw: {said}");
    // What the seed prints between the quotes is exactly what we sent.
    let sent_len = said.len() - "The client at ('127.0.0.1', ) says ''".len() - assigned.len();
    assert_eq!(
        lines[1],
        format!("The server 127.0.0.1:{port} replied 'Your data was {sent_len} bytes long'")
    );
}

fn udpkit_client_message_reaches_seed_server_unchanged() {
    let (mut server, addr) = seed_server();
    let port = addr.port();

    let mut cmd = udpkit();
    cmd.args(["client", "-p", &port.to_string(), "-m", "hello, seed"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.line().ends_with(" says 'hello, seed'"));
    assert!(stdout(&out).ends_with("replied 'Your data was 11 bytes long'\n"));
}

udpkit_tests! {
    seed_client_gets_its_answer_from_udpkit_server [Need::Seed],
    udpkit_client_gets_its_answer_from_seed_server [Need::Seed],
    udpkit_client_message_reaches_seed_server_unchanged [Need::Seed],
}
