//! `udpkit bench`: counts that add up, loss, duplicates, forgeries, JSON, files, exit codes.

mod common;

use common::*;
use std::time::Duration;

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn closed_loop_against_udpkit_server_counts_add_up() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to(
        "bench",
        addr,
        &["--flows", "4", "--window", "8", "-n", "4000"],
    );
    assert_eq!(code, Some(0));
    for key in [
        "requests_per_second",
        "sent",
        "received",
        "lost",
        "duplicates",
        "bad",
    ] {
        assert!(v.get(key).is_some(), "no {key}: {v}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            v["latency_us"][key].as_f64().is_some(),
            "no latency_us.{key}: {v}"
        );
    }
    assert_eq!(count(&v, "sent"), 4000);
    assert_eq!(count(&v, "sent"), count(&v, "received") + count(&v, "lost"));
    assert_eq!(
        count(&v, "bad") + count(&v, "duplicates") + count(&v, "forged"),
        0,
        "{v}"
    );
    assert_eq!(v["matching"], "ids");
    assert!(v["requests_per_second"].as_f64().unwrap() > 0.0);
}

fn against_the_seeds_server_replies_match_by_length_and_are_unauthenticated() {
    let (_server, addr) = seed_server();
    let (code, v) = json_to("bench", addr, &["--window", "4", "-n", "400"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["matching"], "length");
    assert_eq!(v["authenticated"], false, "{v}");
    assert_eq!(count(&v, "sent"), count(&v, "received") + count(&v, "lost"));
    assert_eq!(count(&v, "unverified"), count(&v, "received"), "{v}");
    assert_eq!(count(&v, "bad"), 0, "{v}");
    assert!(count(&v, "received") > 0, "{v}");
}

fn a_forged_reply_without_id_that_wins_the_race_never_switches_ids_off() {
    // The first request is answered twice from the server's own address: first by a
    // forger (the seed's sentence, right length, no ID), then by the server (with the ID).
    // Every later reply is the server's. Before the fix, the forgery switched the whole
    // run to matching by order, and genuine replies were counted as bad.
    let server = Scripted::start(|socket, peer, request, n| {
        if n == 0 {
            let forged = format!("Your data was {} bytes long", request.len());
            socket.send_to(forged.as_bytes(), peer).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (code, v) = json_to("bench", server.addr, &["--window", "1", "-n", "200"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["matching"], "ids", "{v}");
    assert_eq!(v["authenticated"], true, "{v}");
    assert_eq!(count(&v, "received"), 200, "{v}");
    assert_eq!(count(&v, "forged"), 1, "{v}");
    assert_eq!(count(&v, "bad") + count(&v, "unverified"), 0, "{v}");
}

fn loss_is_reported_when_the_server_drops() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q", "--drop-rate", "0.2", "--seed", "5"]);
    let (code, v) = json_to(
        "bench",
        addr,
        &["--window", "16", "-n", "2000", "-W", "0.2"],
    );
    assert_eq!(code, Some(0));
    let (sent, lost) = (count(&v, "sent"), count(&v, "lost"));
    assert_eq!(sent, count(&v, "received") + lost);
    // 20% of 2000: 400, with a standard deviation under 18.
    assert!((310..=490).contains(&lost), "{v}");
}

fn duplicated_replies_are_counted_as_duplicates() {
    let server = Scripted::start(|socket, peer, request, _| {
        let reply = udpkit_reply(request);
        socket.send_to(&reply, peer).unwrap();
        socket.send_to(&reply, peer).unwrap();
    });
    let (_, v) = json_to("bench", server.addr, &["--window", "1", "-n", "50"]);
    assert_eq!(count(&v, "received"), 50);
    // Each request's duplicate arrives right behind its reply, before the next request's
    // reply; only the last one may come after the run has ended.
    assert!((49..=50).contains(&count(&v, "duplicates")), "{v}");
}

fn forged_replies_are_rejected_and_counted() {
    let server = Scripted::start(|socket, peer, request, _| {
        socket.send_to(&udpkit_reply(request), peer).unwrap();
        socket
            .send_to(
                format!("Your data was {} bytes long", request.len()).as_bytes(),
                peer,
            )
            .unwrap();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (_, v) = json_to("bench", server.addr, &["--window", "1", "-n", "50"]);
    assert_eq!(count(&v, "received"), 50);
    assert_eq!(count(&v, "duplicates"), 0, "{v}");
    // The ID-less ones from the server's own address are forgeries; those from another
    // socket are foreign. The last request's may come after the run has ended.
    assert!((49..=50).contains(&count(&v, "forged")), "{v}");
    assert!((49..=50).contains(&count(&v, "foreign")), "{v}");
}

fn open_loop_sends_at_the_rate_asked() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to(
        "bench",
        addr,
        &["--flows", "2", "--rate", "2000", "-d", "1"],
    );
    assert_eq!(code, Some(0));
    // 2000 a second for one second, give or take the last tick.
    let sent = count(&v, "sent");
    assert!((1990..=2000).contains(&sent), "{v}");
    assert_eq!(sent, count(&v, "received") + count(&v, "lost"));
}

fn histogram_and_plot_files_are_written() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let dir = tempfile::tempdir().unwrap();
    let (hist, plot) = (
        dir.path().join("latency.hgrm"),
        dir.path().join("latency.svg"),
    );
    let (code, v) = json_to(
        "bench",
        addr,
        &[
            "-n",
            "500",
            "--histogram",
            hist.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    let text = std::fs::read_to_string(&hist).unwrap();
    assert!(
        text.contains("Percentile") && text.contains("Total count    =          500]"),
        "{text}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}

fn no_server_means_exit_1_with_everything_lost() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (code, v) = json_to("bench", addr, &["-n", "20", "--window", "4", "-W", "0.1"]);
    assert_eq!(code, Some(1));
    assert_eq!(count(&v, "received"), 0);
    assert_eq!(count(&v, "lost"), count(&v, "sent"));
    assert!(count(&v, "unreachable") > 0, "{v}");
}

fn text_output_names_the_figures() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let cmd = udpkit_to("bench", addr, &["-n", "100"]);
    let out = run(cmd);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("requests/s: 100 sent, 100 received, 0 lost"),
        "{text}"
    );
    assert!(text.contains("latency (µs): min "), "{text}");
    assert!(
        stderr(&out).is_empty(),
        "no progress bar off a terminal: {}",
        stderr(&out)
    );
}

fn a_forged_icmp_error_is_counted_and_the_run_ends_with_its_report() {
    let server = Scripted::start(|socket, peer, request, n| {
        if n == 10 {
            forge_icmp(peer, socket.local_addr().unwrap(), "13");
            std::thread::sleep(Duration::from_millis(30));
        }
        socket.send_to(&udpkit_reply(request), peer).unwrap();
    });
    let (code, v) = json_to("bench", server.addr, &["--window", "1", "-n", "100"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(count(&v, "received"), 100, "{v}");
    assert_eq!(count(&v, "unreachable"), 1, "{v}");
    assert_eq!(v["icmp"]["host_unreachable"], 1, "{v}");
}

fn loss_that_looks_like_a_rate_limit_is_explained() {
    let (_server, addr) = udpkit_server(&["0.0.0.0", "-p", "0", "-q"]);
    let to = std::net::SocketAddr::new([127, 0, 0, 1].into(), addr.port());
    let out = run(udpkit_to(
        "bench",
        to,
        &["--window", "8", "-n", "1000", "-W", "0.2"],
    ));
    let text = stdout(&out);
    assert!(text.contains("--rate-limit off"), "{text}");
}

fn threads_share_out_flows_and_count_and_their_figures_add_up() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    // Three threads need three flows: one more than asked; 1,000 requests shared out.
    let (code, v) = json_to(
        "bench",
        addr,
        &[
            "--threads",
            "3",
            "--flows",
            "2",
            "--window",
            "4",
            "-n",
            "1000",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["flows"], 3, "{v}");
    assert_eq!(count(&v, "sent"), 1000, "{v}");
    assert_eq!(count(&v, "received"), 1000, "{v}");
    assert_eq!(v["matching"], "ids", "{v}");
    // One histogram per thread, merged: every reply's round trip is in it.
    assert!(v["latency_us"]["max"].as_f64().unwrap() > 0.0, "{v}");
    // An open loop's rate is shared out too: what was sent adds up to what was asked.
    let (_, v) = json_to(
        "bench",
        addr,
        &["--threads", "2", "--rate", "4000", "-d", "0.5"],
    );
    let sent = count(&v, "sent");
    assert!((1900..=2000).contains(&sent), "{v}");
    assert_eq!(count(&v, "received"), sent, "{v}");
}

fn replies_that_cannot_be_told_apart_are_said_never_guessed() {
    // The seed's server repeats no IDs; 200 ms on the way back keeps some 1,600 requests
    // in flight, more than the 1,024 lengths that tell them apart.
    let (_server, addr) = seed_server();
    let (_relay, via) = udpkit_relay(addr, &["--delay", "200", "--direction", "down"]);
    let args = ["--rate", "8000", "-d", "1", "-W", "2"];
    let (_, v) = json_to("bench", via, &args);
    assert!(count(&v, "unmatched") > 0, "{v}");
    assert!(count(&v, "bad") >= count(&v, "unmatched"), "{v}");
    assert_eq!(
        count(&v, "sent"),
        count(&v, "received") + count(&v, "lost"),
        "{v}"
    );
    let out = run(udpkit_to("bench", via, &args));
    assert!(
        stdout(&out).contains("replies could not be told apart"),
        "{}",
        stdout(&out)
    );
}

fn many_flows_never_share_a_port_nor_take_each_others_replies() {
    // A port-0 bind with SO_REUSEPORT could hand two flows one port: connected to one
    // server, they took each other's replies, counted as forged (and their own as lost):
    // 120 "forged" of 466,936 at 1,024 flows in the build before.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (code, v) = json_to(
        "bench",
        addr,
        &["--flows", "1024", "--window", "4", "-n", "60000", "-W", "2"],
    );
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["forged"], 0, "{v}");
    assert_eq!(v["bad"], 0, "{v}");
}

udpkit_tests! {
    many_flows_never_share_a_port_nor_take_each_others_replies,
    closed_loop_against_udpkit_server_counts_add_up,
    against_the_seeds_server_replies_match_by_length_and_are_unauthenticated [Need::Seed],
    a_forged_reply_without_id_that_wins_the_race_never_switches_ids_off,
    loss_is_reported_when_the_server_drops,
    duplicated_replies_are_counted_as_duplicates,
    forged_replies_are_rejected_and_counted,
    open_loop_sends_at_the_rate_asked,
    histogram_and_plot_files_are_written,
    no_server_means_exit_1_with_everything_lost,
    text_output_names_the_figures,
    a_forged_icmp_error_is_counted_and_the_run_ends_with_its_report [Need::Root],
    loss_that_looks_like_a_rate_limit_is_explained,
    threads_share_out_flows_and_count_and_their_figures_add_up,
    replies_that_cannot_be_told_apart_are_said_never_guessed [Need::Seed],
}
