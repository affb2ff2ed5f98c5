//! Every long-running command stops within a second of SIGINT, SIGTERM or SIGHUP and
//! prints what it has; outputs that cannot be written are said before a run, not after.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

/// Sends `sig` to `proc`, then waits: it must end by itself within a second, successfully,
/// having printed a line containing `summary`.
fn stops_with_summary(mut proc: Running, sig: i32, summary: &str) {
    let sent = Instant::now();
    signal(&proc, sig);
    let lines = proc.lines_within(Duration::from_millis(1500));
    let (status, err) = proc.wait();
    assert!(
        sent.elapsed() < Duration::from_millis(2000),
        "took {:?}",
        sent.elapsed()
    );
    assert!(status.success(), "{status:?} {err} {lines:?}");
    assert!(lines.iter().any(|l| l.contains(summary)), "{lines:?} {err}");
}

fn sighup_ends_server_ping_and_relay_with_their_summaries() {
    let (server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let mut ping = Running::start(udpkit_to("ping", addr, &["-i", "0.05"]));
    assert!(ping.line().starts_with("PING "));
    assert!(ping.line().contains("seq=0"));
    stops_with_summary(ping, libc::SIGHUP, "udpkit ping statistics");
    let (relay, _) = udpkit_relay(addr, &[]);
    stops_with_summary(relay, libc::SIGHUP, "Summary:");
    stops_with_summary(server, libc::SIGHUP, "Summary after");
}

fn sigterm_ends_a_bench_waiting_a_day_for_replies_within_a_second() {
    // A silent server: every request waits out -W. Before the fix, bench ignored SIGTERM
    // for the whole wait.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let mut bench = Running::start(udpkit_to(
        "bench",
        addr,
        &["-W", "86400", "-d", "0.2", "--window", "4"],
    ));
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    signal(&bench, libc::SIGTERM);
    let lines = bench.lines_within(Duration::from_millis(1500));
    let (status, _) = bench.wait();
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(1), "no reply at all: exit 1");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("requests/s:") && l.contains("4 sent")),
        "{lines:?}"
    );
}

fn a_plot_that_cannot_be_written_is_refused_before_the_run() {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let started = Instant::now();
    let out = run(udpkit_to(
        "bench",
        addr,
        &["-d", "5", "--plot", "/no/such/dir/p.svg"],
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it ran the benchmark first"
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot write /no/such/dir/p.svg"), "{err}");
    assert!(err.contains("checked before starting"), "{err}");
}

fn a_stopped_bench_still_takes_the_replies_on_their_way() {
    // Replies take 200 ms through the relay; a stop gives them half a second. Before the
    // drain waited on the sockets, the stopped loop spun without reading and lost them all.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let (_relay, via) = udpkit_relay(addr, &["--delay", "200", "--direction", "down"]);
    let mut bench = Running::start(udpkit_to(
        "bench",
        via,
        &["-W", "5", "-d", "30", "--window", "8", "--json"],
    ));
    std::thread::sleep(Duration::from_millis(1000));
    signal(&bench, libc::SIGINT);
    let lines = bench.lines_within(Duration::from_millis(1500));
    let (status, err) = bench.wait();
    assert!(status.success(), "{status:?} {err} {lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines.concat()).unwrap();
    assert!(v["sent"].as_u64().unwrap() >= 16, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
}

udpkit_tests! {
    sighup_ends_server_ping_and_relay_with_their_summaries,
    sigterm_ends_a_bench_waiting_a_day_for_replies_within_a_second,
    a_plot_that_cannot_be_written_is_refused_before_the_run,
    a_stopped_bench_still_takes_the_replies_on_their_way,
}
