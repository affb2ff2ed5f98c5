//! `udpkit ping`: ping's output and figures, request IDs, and honest counts.

mod common;

use std::time::Duration;

use common::*;

fn against_udpkit_server_every_request_is_answered_and_matched_by_id() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let cmd = udpkit_to("ping", addr, &["-c", "5", "-i", "0.01"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("PING {addr}: 38 data bytes"));
    for seq in 0..5 {
        let prefix = format!("38 bytes from {addr}: seq={seq} time=");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.ends_with(" ms")),
            "{text}"
        );
    }
    assert!(
        text.contains("5 requests sent, 5 received, 0 duplicates, 0 late, 0% loss"),
        "{text}"
    );
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    assert!(text.contains("rtt p50/p90/p99 = "), "{text}");
}

fn json_has_the_promised_keys_and_counts_add_up() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to("ping", addr, &["-c", "20", "-i", "0"]);
    assert_eq!(code, Some(0));
    for key in [
        "target",
        "sent",
        "received",
        "duplicates",
        "late",
        "loss_percent",
    ] {
        assert!(v.get(key).is_some(), "no {key}: {v}");
    }
    for key in ["min", "avg", "max", "mdev", "p50", "p90", "p99"] {
        assert!(v["rtt_ms"][key].as_f64().is_some(), "no rtt_ms.{key}: {v}");
    }
    assert_eq!(v["target"], addr.to_string());
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(v["matching"], "ids");
    let (min, p50, max) = (
        v["rtt_ms"]["min"].as_f64().unwrap(),
        v["rtt_ms"]["p50"].as_f64().unwrap(),
        v["rtt_ms"]["max"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= p50 && p50 <= max * 1.001, "{v}");
}

fn loss_is_reported_when_the_server_drops() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--drop-rate", "0.5", "--seed", "9"]);
    let (code, v) = json_to("ping", addr, &["-c", "200", "-i", "0", "-W", "0.05"]);
    assert_eq!(code, Some(0));
    let (sent, received) = (v["sent"].as_u64().unwrap(), v["received"].as_u64().unwrap());
    assert_eq!(sent, 200);
    let loss = v["loss_percent"].as_f64().unwrap();
    assert!((35.0..=65.0).contains(&loss), "{v}");
    assert!(
        (loss - 100.0 * (sent - received) as f64 / sent as f64).abs() < 1e-9,
        "{v}"
    );
}

fn duplicated_replies_are_marked_dup_and_counted_once() {
    let server = Scripted::start(|socket, peer, request, _| {
        let reply = udpkit_reply(request);
        socket.send_to(&reply, peer).unwrap();
        socket.send_to(&reply, peer).unwrap();
    });
    let cmd = udpkit_to("ping", server.addr, &["-c", "3", "-i", "0.05"]);
    let out = run(cmd);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    // Like ping -c, it ends once the last request is answered: the last duplicate may
    // come too late to be seen; the earlier ones always come before the next request.
    for seq in [0, 1] {
        let dup = format!(": seq={seq} time=");
        assert!(
            text.lines()
                .any(|l| l.contains(&dup) && l.ends_with(" ms (DUP!)")),
            "{text}"
        );
    }
    assert!(text.contains("3 requests sent, 3 received, "), "{text}");
    let dups = text.lines().filter(|l| l.ends_with(" ms (DUP!)")).count();
    assert!(text.contains(&format!(", {dups} duplicates,")), "{text}");
}

fn replies_without_the_right_id_are_rejected_as_forged() {
    // The server answers properly, then sends, from its own address and port, what an
    // off-path forger would: the seed's sentence with no ID, and one with a made-up ID.
    let server = Scripted::start(|socket, peer, request, _| {
        socket.send_to(&udpkit_reply(request), peer).unwrap();
        let forged_id = udpkit_reply(b"#00000000000000000000000000000000 xxxx");
        socket.send_to(&forged_id, peer).unwrap();
        socket
            .send_to(
                format!("Your data was {} bytes long", request.len()).as_bytes(),
                peer,
            )
            .unwrap();
    });
    let (code, v) = json_to("ping", server.addr, &["-c", "3", "-i", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 3);
    assert_eq!(v["duplicates"], 0);
    // Two forgeries per request; those after the last answer may come after ping ends.
    let forged = v["forged"].as_u64().unwrap();
    assert!((4..=6).contains(&forged), "{v}");
}

fn replies_from_another_socket_are_never_accepted_and_counted_as_foreign() {
    let server = Scripted::start(|socket, peer, request, _| {
        let forger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        forger.send_to(&udpkit_reply(request), peer).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (_, v) = json_to("ping", server.addr, &["-c", "3", "-i", "0"]);
    assert_eq!(
        (
            v["received"].as_u64(),
            v["duplicates"].as_u64(),
            v["forged"].as_u64()
        ),
        (Some(3), Some(0), Some(0)),
        "{v}"
    );
    // Each forgery came before its real reply, so all three were seen, and set apart.
    assert_eq!(v["foreign"].as_u64(), Some(3), "{v}");
}

fn the_seeds_server_is_matched_by_length_and_said_so_once() {
    let (mut server, addr) = seed_server();
    let cmd = udpkit_to("ping", addr, &["-c", "4", "-i", "0.02"]);
    let out = run(cmd);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert_eq!(
        text.matches("does not repeat request IDs").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("4 requests sent, 4 received, 0 duplicates, 0 late, 0% loss"),
        "{text}"
    );
    assert!(text.contains("cannot be authenticated"), "{text}");
    assert_eq!(text.matches("(unverified)").count(), 4, "{text}");
    // The seed's server survived our requests (they are ASCII) and printed each.
    assert_eq!(server.lines_within(Duration::from_millis(200)).len(), 4);
}

fn nothing_listening_is_reported_as_unreachable_and_exit_1() {
    let p = free_port();
    let mut cmd = udpkit();
    cmd.args([
        "ping",
        "127.0.0.1",
        "-p",
        &p.to_string(),
        "-c",
        "3",
        "-i",
        "0.05",
        "-W",
        "0.1",
    ]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("port unreachable"), "{text}");
    assert!(text.contains("3 requests sent, 0 received"), "{text}");
    assert!(text.contains("100% loss"), "{text}");
}

fn sigint_ends_an_endless_ping_with_the_summary() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let cmd = udpkit_to("ping", addr, &["-i", "0.05"]);
    let mut ping = Running::start(cmd);
    assert!(ping.line().starts_with("PING "));
    assert!(ping.line().contains("seq=0"));
    signal(&ping, libc::SIGINT);
    let lines = ping.lines_within(Duration::from_millis(500));
    let (status, _) = ping.wait();
    assert!(status.success());
    assert!(
        lines.iter().any(|l| l.contains("udpkit ping statistics")),
        "{lines:?}"
    );
}

/// `(seq, milliseconds)` of each reply line `ping` printed.
fn reply_times(text: &str) -> Vec<(u64, f64)> {
    text.lines()
        .filter(|l| l.contains(" bytes from ") && l.contains("seq="))
        .map(|l| {
            let seq = l.split("seq=").nth(1).unwrap().split(' ').next().unwrap();
            let ms = l.split("time=").nth(1).unwrap().split(' ').next().unwrap();
            (seq.parse().unwrap(), ms.parse().unwrap())
        })
        .collect()
}

fn a_server_that_drops_half_never_gets_a_reply_credited_to_an_older_request() {
    // The book's udp_remote.py: every other request is dropped, the others answered at
    // once with the seed's sentence (no request ID). Before the fix, a reply after a drop
    // was credited to the older, dropped request: 50 ms and more on a 0.05 ms path.
    let server = Scripted::start(|socket, peer, request, n| {
        if n % 2 == 1 {
            let reply = format!("Your data was {} bytes long", request.len());
            socket.send_to(reply.as_bytes(), peer).unwrap();
        }
    });
    let out = run(udpkit_to(
        "ping",
        server.addr,
        &["-c", "12", "-i", "0.05", "-W", "0.3"],
    ));
    let text = stdout(&out);
    let replies = reply_times(&text);
    assert_eq!(replies.len(), 6, "{text}");
    for (seq, ms) in replies {
        assert_eq!(seq % 2, 1, "only odd requests were answered: {text}");
        assert!(
            ms < 25.0,
            "an RTT longer than the interval was invented: {text}"
        );
    }
    assert!(text.contains("12 requests sent, 6 received"), "{text}");
}

fn forged_replies_without_id_that_arrive_first_are_never_counted() {
    // Each request is answered first by a forger who fakes the server's address (the
    // seed's sentence for the right length, no ID), 20 ms later by the server with the ID.
    let server = Scripted::start(|socket, peer, request, _| {
        let forged = format!("Your data was {} bytes long", request.len());
        socket.send_to(forged.as_bytes(), peer).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (code, v) = json_to("ping", server.addr, &["-c", "5", "-i", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 5, "{v}");
    assert_eq!(v["forged"], 5, "{v}");
    assert_eq!(v["unverified"], 0, "{v}");
    assert_eq!(v["matching"], "ids", "{v}");
    assert_eq!(v["authenticated"], true, "{v}");
    assert!(
        v["rtt_ms"]["min"].as_f64().unwrap() >= 19.0,
        "a forged reply's time was counted: {v}"
    );
}

fn forged_icmp_errors_of_every_kind_are_counted_and_the_run_goes_on() {
    // Protocol unreachable (2), fragmentation needed (4), host prohibited (10), filtered
    // (13), each forged about the client's own requests, once the server has its address.
    // Before the fix, the first of them ended ping with an error and no summary.
    let server = Scripted::start(|socket, peer, request, n| {
        if n == 1 {
            for code in ["2", "4", "10", "13"] {
                forge_icmp(peer, socket.local_addr().unwrap(), code);
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    // The forging runs a Python process per error (a second or more on a loaded machine),
    // and the server answers nothing meanwhile: the replies may take that long.
    let (code, v) = json_to("ping", server.addr, &["-c", "6", "-i", "0.05", "-W", "10"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 6, "{v}");
    assert_eq!(v["unreachable"], 4, "{v}");
    assert_eq!(v["icmp"]["protocol_unreachable"], 1, "{v}");
    assert_eq!(v["icmp"]["too_big"], 1, "{v}");
    assert_eq!(v["icmp"]["host_unreachable"], 2, "{v}");
}

fn another_user_cannot_bind_the_port_ping_listens_on() {
    // As user nobody, with every reuse option set, try to join ping's port. Before the fix
    // (SO_REUSEADDR on ping's socket) this worked and read 7 of 8 replies.
    let attempt = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = attempt.clone();
    let server = Scripted::start(move |socket, peer, request, n| {
        if n == 0 {
            let code = format!(
                "import socket\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n\
                 try:\n    s.bind(('0.0.0.0', {}))\n    print('bound')\n\
                 except OSError as e:\n    print('refused', e.errno)\n",
                peer.port()
            );
            let mut cmd = std::process::Command::new("setpriv");
            // The system's python3: user nobody may not read a python under /root.
            cmd.args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
            ])
            .arg(code);
            *seen.lock().unwrap() = Some(stdout(&run(cmd)).trim().to_string());
        }
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (code, v) = json_to("ping", server.addr, &["-c", "3", "-i", "0.05"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["received"], 3, "{v}");
    let said = attempt.lock().unwrap().clone();
    assert_eq!(
        said.as_deref(),
        Some("refused 98"),
        "the other user: {said:?}"
    );
}

udpkit_tests! {
    against_udpkit_server_every_request_is_answered_and_matched_by_id,
    json_has_the_promised_keys_and_counts_add_up,
    loss_is_reported_when_the_server_drops,
    duplicated_replies_are_marked_dup_and_counted_once,
    replies_without_the_right_id_are_rejected_as_forged,
    replies_from_another_socket_are_never_accepted_and_counted_as_foreign,
    the_seeds_server_is_matched_by_length_and_said_so_once [Need::Seed],
    nothing_listening_is_reported_as_unreachable_and_exit_1,
    sigint_ends_an_endless_ping_with_the_summary,
    a_server_that_drops_half_never_gets_a_reply_credited_to_an_older_request,
    forged_replies_without_id_that_arrive_first_are_never_counted,
    forged_icmp_errors_of_every_kind_are_counted_and_the_run_goes_on [Need::Root],
    another_user_cannot_bind_the_port_ping_listens_on [Need::Root, Need::Tool("setpriv")],
}
