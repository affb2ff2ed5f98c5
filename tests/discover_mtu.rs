//! `udpkit discover` and `udpkit mtu` on loopback (the tests across hosts are in netns.rs).

mod common;

use common::*;

#[test]
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
}

#[test]
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

#[test]
fn mtu_on_loopback_is_the_largest_udp_payload() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to("mtu", addr, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["payload"], 65_507, "{v}");
    assert_eq!(v["path_mtu"], 65_535, "{v}");
}

#[test]
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
