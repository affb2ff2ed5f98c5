//! `udpkit server` as an operator runs it: signals and the summary, `--stats`, `--json`,
//! `-q`, `--threads`, and the kernel's own drops.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// The JSON summary a server prints after SIGINT.
fn summary_json(server: &mut Running) -> serde_json::Value {
    signal(server, libc::SIGINT);
    let lines = server.lines_within(Duration::from_secs(2));
    let (status, err) = server.wait();
    assert!(status.success(), "exit {status}; stderr: {err}");
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no summary; stderr: {err}"));
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{last}: {e}"));
    assert_eq!(v["event"], "summary", "{v}");
    v
}

fn ask_n(addr: SocketAddr, n: usize) {
    let socket = test_socket("127.0.0.1:0");
    for _ in 0..n {
        ask(&socket, addr, b"hello");
    }
}

fn sigint_prints_the_summary_and_exits_0() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q"]);
    ask_n(addr, 3);
    signal(&server, libc::SIGINT);
    let lines = server.lines_within(Duration::from_secs(2));
    let (status, err) = server.wait();
    assert!(status.success(), "exit {status}; stderr: {err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("Summary after "), "{lines:?}");
    assert!(
        lines[0].ends_with(
            ": 3 received (15 bytes), 3 replied (78 bytes), 0 dropped on purpose \
             (0 simulated, 0 rate-limited), 0 slipped past the limit, 0 failed sends, \
             0 dropped by the kernel"
        ),
        "{lines:?}"
    );
}

fn sigterm_prints_the_json_summary_with_every_counter() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json"]);
    ask_n(addr, 2);
    signal(&server, libc::SIGTERM);
    let lines = server.lines_within(Duration::from_secs(2));
    let (status, _) = server.wait();
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(lines.last().expect("summary")).unwrap();
    assert_eq!(v["event"], "summary");
    assert_eq!(v["received"], 2);
    assert_eq!(v["replied"], 2);
    assert_eq!(v["bytes_in"], 10);
    assert_eq!(v["bytes_out"], 52);
    for key in [
        "dropped",
        "dropped_simulated",
        "dropped_rate_limited",
        "send_failed",
        "kernel_drops",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
}

fn stats_are_printed_every_period() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--stats", "0.2", "--json"]);
    ask_n(addr, 4);
    let first: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    let second: serde_json::Value = serde_json::from_str(&server.line()).unwrap();
    assert_eq!(first["event"], "stats");
    assert_eq!(second["event"], "stats");
    assert!(second["seconds"].as_f64() > first["seconds"].as_f64());
    assert_eq!(second["received"], 4);
}

fn quiet_prints_no_line_per_datagram() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q"]);
    ask_n(addr, 5);
    assert_eq!(
        server.lines_within(Duration::from_millis(300)),
        Vec::<String>::new()
    );
}

fn lines_to_a_pipe_arrive_as_they_happen() {
    // Buffered per batch, not until exit: each request's line shows up before the next.
    let (mut server, addr) = udpkit_server(&["-p", "0"]);
    let socket = test_socket("127.0.0.1:0");
    for n in 0..3 {
        ask(&socket, addr, format!("request {n}").as_bytes());
        assert!(server.line().ends_with(&format!("says 'request {n}'")));
    }
}

fn threads_share_the_port_and_the_summary_adds_them_up() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--threads", "2", "--json"]);
    let sockets: Vec<_> = (0..32).map(|_| test_socket("127.0.0.1:0")).collect();
    for s in &sockets {
        assert_eq!(ask(s, addr, b"x"), b"Your data was 1 bytes long");
    }
    let v = summary_json(&mut server);
    assert_eq!(v["received"], 32);
    assert_eq!(v["replied"], 32);
}

fn the_kernels_drops_are_counted_and_serving_goes_on() {
    let (mut server, addr) = udpkit_server(&["-p", "0", "-q", "--json"]);
    // Freeze the server so its receive buffer fills, flood it, then let it go on.
    signal(&server, libc::SIGSTOP);
    let socket = test_socket("127.0.0.1:0");
    let sent = 60_000;
    for _ in 0..sent {
        socket.send_to(b"flood", addr).expect("send");
    }
    signal(&server, libc::SIGCONT);
    // It still answers; the first tries may meet a buffer that is still full.
    let client = udpkit::Client::connect(addr).unwrap();
    let reply = client
        .request(
            b"after",
            &udpkit::Backoff::default(),
            &udpkit::Stop::new(),
            |_| {},
        )
        .unwrap();
    assert_eq!(reply.data, b"Your data was 5 bytes long");
    let v = summary_json(&mut server);
    let received = v["received"].as_u64().unwrap();
    let dropped = v["kernel_drops"].as_u64().unwrap();
    assert!(dropped > 0, "{v}");
    // Every datagram was either received or dropped by the kernel.
    assert_eq!(received + dropped, sent + u64::from(reply.attempts), "{v}");
}

udpkit_tests! {
    sigint_prints_the_summary_and_exits_0,
    sigterm_prints_the_json_summary_with_every_counter,
    stats_are_printed_every_period,
    quiet_prints_no_line_per_datagram,
    lines_to_a_pipe_arrive_as_they_happen,
    threads_share_the_port_and_the_summary_adds_them_up,
    the_kernels_drops_are_counted_and_serving_goes_on,
}
