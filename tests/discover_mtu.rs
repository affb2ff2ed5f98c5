//! `udpkit discover` and `udpkit mtu` on loopback (the tests across hosts are in netns.rs).

mod common;

use common::*;

fn discover_finds_a_wildcard_server_through_the_loopback_broadcast() {
    let (_server, addr) = udpkit_server(&["0.0.0.0", "-p", "0", "-q"]);
    let (code, v) = json_of(&[
        "discover",
        "127.255.255.255",
        "-p",
        &addr.port().to_string(),
        "-W",
        "0.3",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{v}");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{v}");
    assert_eq!(servers[0]["address"], format!("127.0.0.1:{}", addr.port()));
    assert!(servers[0]["rtt_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(servers[0]["verified"], true, "{v}");
    assert_eq!(v["unverified"], 0, "{v}");
}

fn discover_marks_answers_without_the_request_id_as_unverified() {
    // Answers with the seed's sentence for the right length, no ID: the seed's server, or
    // anyone who guessed the port and the length. Before the fix it was listed as a server
    // like any other.
    let anyone = Scripted::start(|socket, peer, request, _| {
        let reply = format!("Your data was {} bytes long", request.len());
        socket.send_to(reply.as_bytes(), peer).unwrap();
    });
    let port = anyone.addr.port().to_string();
    let args = ["discover", "127.0.0.1", "-p", &port, "-W", "0.3"];
    let (code, v) = json_of(&[&args[..], &["--json"]].concat());
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["servers"][0]["verified"], false, "{v}");
    assert_eq!(v["unverified"], 1, "{v}");
    let mut cmd = udpkit();
    cmd.args(args);
    let text = stdout(&run(cmd));
    assert!(text.contains("(unverified: no request ID)"), "{text}");
    assert!(text.contains("; 1 unverified"), "{text}");
}

fn discover_refuses_a_multicast_address() {
    for group in ["ff02::1", "224.0.0.1"] {
        let mut cmd = udpkit();
        cmd.args(["discover", group, "-W", "0.1"]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("is a multicast address"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

fn discover_with_no_answer_lists_none_and_exits_1() {
    let (code, v) = json_of(&[
        "discover",
        "127.255.255.255",
        "-p",
        &free_port().to_string(),
        "-W",
        "0.2",
        "--json",
    ]);
    assert_eq!(code, Some(1));
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(0), "{v}");
}

fn mtu_on_loopback_is_the_largest_udp_payload() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to("mtu", addr, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 65_507, "{v}");
    assert_eq!(v["path_mtu"], 65_535, "{v}");
}

fn mtu_against_a_closed_port_says_so() {
    let mut cmd = udpkit();
    cmd.args(["mtu", "127.0.0.1", "-p", &free_port().to_string()]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the port is closed"),
        "{}",
        stderr(&out)
    );
}

fn forged_replies_cannot_make_a_probe_size_pass() {
    // A server that repeats IDs and whose path carries at most 1200 bytes; a forger on the
    // path answers every larger probe with the seed's sentence for its length, no ID.
    // Before the fix each probe size trusted its first reply, and mtu reported 65507.
    let server = Scripted::start(|socket, peer, request, _| {
        if request.len() <= 1200 {
            socket.send_to(&udpkit_reply(request), peer).unwrap();
        } else {
            let forged = format!("Your data was {} bytes long", request.len());
            socket.send_to(forged.as_bytes(), peer).unwrap();
        }
    });
    let (code, v) = json_to("mtu", server.addr, &["-W", "0.02"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 1200, "{v}");
    assert_eq!(v["authenticated"], true, "{v}");
    assert!(v["forged"].as_u64().unwrap() > 0, "{v}");
}

fn a_server_that_never_repeats_ids_is_reported_unauthenticated() {
    // The seed's server, or a silent one with a forger who answers like it: the two cannot
    // be told apart, and the report says so.
    let (_server, addr) = seed_server();
    let (code, v) = json_to("mtu", addr, &["-W", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 65_507, "{v}");
    assert_eq!(v["authenticated"], false, "{v}");
    let out = run(udpkit_to("mtu", addr, &["-W", "0.05"]));
    assert!(
        stdout(&out).contains("its answers cannot be authenticated"),
        "{}",
        stdout(&out)
    );
}

udpkit_tests! {
    discover_finds_a_wildcard_server_through_the_loopback_broadcast,
    discover_marks_answers_without_the_request_id_as_unverified,
    discover_refuses_a_multicast_address [Need::Ipv6],
    discover_with_no_answer_lists_none_and_exits_1,
    mtu_on_loopback_is_the_largest_udp_payload,
    mtu_against_a_closed_port_says_so,
    forged_replies_cannot_make_a_probe_size_pass,
    a_server_that_never_repeats_ids_is_reported_unauthenticated [Need::Seed],
}
