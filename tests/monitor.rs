//! `udpkit monitor` and the metrics endpoints, tested with the real thing: Debian's
//! `prometheus` scraping a monitor that probes a `udpkit server` through a `udpkit relay
//! --drop`, its query API asked what it saw; `promtool check metrics` on every exposition;
//! reloads by SIGHUP, good and bad; ten thousand targets; `/probe` off by default and held
//! to its allow list.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::harness::{Need, tool};
use common::*;

/// `GET path` from `addr`: the status and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    (status, body.to_string())
}

/// `promtool check metrics` on `text`: it must find nothing to say.
fn promtool_clean(text: &str) {
    let mut child = Command::new(tool("promtool").expect("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A monitor with `args`, its metrics endpoint's address.
fn monitor(args: &[&str]) -> (Running, SocketAddr) {
    let path = ready_path();
    let mut cmd = udpkit();
    cmd.arg("monitor")
        .args(["--metrics", "127.0.0.1:0", "--ready-file"])
        .arg(&path)
        .args(args);
    let mut proc = Running::start(cmd);
    let event = ready_event(&mut proc, &path);
    let metrics = event["metrics"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {event}"));
    (proc, metrics)
}

/// Polls `what` (bounded: 20 s) until it gives a value.
fn within<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TCP ports `pid` listens on (its sockets in /proc, matched to /proc/net/tcp).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]))
                .then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok())
                .flatten()
        })
        .collect()
}

/// Debian's Prometheus on a free loopback port, scraping `targets` every second; its
/// address (found among the ports it listens on). Its data go in `dir`.
fn prometheus(dir: &Path, targets: &[SocketAddr]) -> (Running, SocketAddr) {
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: udpkit\n    static_configs:\n      \
             - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(tool("prometheus").expect("prometheus"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--log.level=warn");
    let proc = Running::start(cmd);
    let pid = proc.pid();
    let port = within("prometheus listening", || {
        listening_ports(pid).into_iter().find(|&p| {
            let addr: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
            TcpStream::connect(addr).is_ok() && http_get(addr, "/-/ready").0 == 200
        })
    });
    (proc, format!("127.0.0.1:{port}").parse().unwrap())
}

/// Prometheus's answer to an instant `query`: the first result's value, if any.
fn query(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let q: String = form_urlencoded::byte_serialize(query.as_bytes()).collect();
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={q}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
}

fn prometheus_counts_what_the_relay_did() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp", "--stateful"]);
    let (mut relay, path) = udpkit_relay(server, &["--drop", "0.2", "--seed", "7", "--json"]);
    let count = 300;
    let (mut mon, metrics) = monitor(&[
        &path.to_string(),
        "--protocol",
        "stamp",
        "-i",
        "0.01",
        "-W",
        "0.5",
        "-c",
        &count.to_string(),
    ]);
    let (_prom, prom) = prometheus(dir.path(), &[metrics]);
    // Every probe sent and settled, as Prometheus last scraped them.
    let settled = format!("udpkit_probe_replies_total + udpkit_probe_lost_total == {count}");
    within("all probes settled in Prometheus", || query(prom, &settled));
    let replies = query(prom, "udpkit_probe_replies_total").unwrap();
    let lost = query(prom, "udpkit_probe_lost_total").unwrap();
    let forward = query(
        prom,
        "udpkit_probe_lost_by_direction{direction=\"forward\"}",
    );
    let backward = query(
        prom,
        "udpkit_probe_lost_by_direction{direction=\"backward\"}",
    );
    let unknown = query(
        prom,
        "udpkit_probe_lost_by_direction{direction=\"unknown\"}",
    );
    let quantile = query(
        prom,
        "histogram_quantile(0.5, sum by (le) (udpkit_probe_rtt_seconds_bucket{matched=\"id\"}))",
    )
    .unwrap();
    // The same path, measured by ping.
    let (code, ping) = json_to(
        "ping",
        path,
        &[
            "--protocol",
            "stamp",
            "-c",
            "100",
            "-i",
            "0.005",
            "-W",
            "0.5",
        ],
    );
    assert!(code.is_some(), "{ping}");
    let summary = json_summary(&mut relay);
    let (up, down) = (&summary["up"], &summary["down"]);
    // Ping's own requests went through the relay too: take them out.
    let ping_sent = ping["sent"].as_f64().unwrap();
    let ping_received = ping["received"].as_f64().unwrap();
    let dropped = up["dropped"].as_f64().unwrap() + down["dropped"].as_f64().unwrap();
    assert_eq!(
        lost + (ping_sent - ping_received),
        dropped,
        "lost {lost}, ping lost {}, relay {summary}",
        ping_sent - ping_received
    );
    assert_eq!(
        replies + ping_received,
        down["forwarded"].as_f64().unwrap(),
        "{summary}"
    );
    assert!(
        lost > 20.0 && lost < 200.0,
        "{lost} of {count} at 20% each way"
    );
    // A stateful reflector's count splits the monitor's loss: each way within what the
    // relay dropped that way (ping's losses are in the relay's figures too).
    let (f, b, u) = (forward.unwrap(), backward.unwrap(), unknown.unwrap());
    assert_eq!(f + b + u, lost);
    assert!(f <= up["dropped"].as_f64().unwrap() && b <= down["dropped"].as_f64().unwrap());
    assert!(f > 0.0 && b > 0.0, "{f} {b} {u}");
    // Prometheus's median from the buckets is within a bucket of ping's.
    let p50 = ping["rtt_ms"]["p50"].as_f64().unwrap() / 1e3;
    assert!(
        quantile / p50 < 4.0 && p50 / quantile < 4.0,
        "histogram_quantile {quantile} s against ping's median {p50} s"
    );
    let (_, text) = http_get(metrics, "/metrics");
    promtool_clean(&text);
    mon.close_stdout();
}

fn every_exposition_is_clean_for_promtool() {
    let (_stamp, stamp) =
        udpkit_server(&["-p", "0", "-q", "--protocol", "stamp", "--metrics", "0"]);
    let (_seed, seed) = udpkit_server(&["-p", "0", "-q"]);
    // The seed's Python server sends no IDs: its replies are matched by length.
    let (_py, py) = seed_server();
    let (_relay, through) = udpkit_relay(seed, &["--metrics", "0"]);
    let (_twamp, twamp) = udpkit_server(&["-p", "0", "-q", "--protocol", "twamp-light"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.toml");
    write(
        &file,
        &format!(
            "[defaults]\ninterval = 0.05\n\n[[target]]\naddress = \"{stamp}\"\n\
             protocol = \"stamp\"\ndscp = 46\n\n[[target]]\naddress = \"{through}\"\n\n\
             [[target]]\naddress = \"{py}\"\nname = \"the seed's \\\"server\\\"\"\n\n\
             [[target]]\naddress = \"{twamp}\"\nprotocol = \"twamp-light\"\nname = \"né\\\\\"\n"
        ),
    );
    let (_mon, metrics) = monitor(&["--config", file.to_str().unwrap()]);
    let text = within("replies from every target", || {
        let (_, text) = http_get(metrics, "/metrics");
        let all = [stamp, through, py, twamp].iter().all(|t| {
            sample(
                &text,
                "udpkit_probe_replies_total",
                &[&format!("target=\"{t}\"")],
            )
            .is_some_and(|n| n > 0.0)
        });
        all.then_some(text)
    });
    promtool_clean(&text);
    assert!(
        sample(
            &text,
            "udpkit_probe_rtt_seconds_count",
            &[&format!("target=\"{py}\""), "matched=\"length\""]
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "udpkit_monitor_targets", &[]), Some(4.0));
    // Names as written, escaped by the encoder: a quote, a backslash, UTF-8.
    assert!(text.contains(r#"name="the seed's \"server\"""#), "{text}");
    assert!(text.contains(r#"name="né\\""#), "{text}");
}

fn a_server_and_a_relay_show_their_counters() {
    let path = ready_path();
    let mut cmd = udpkit();
    cmd.args([
        "server",
        "-p",
        "0",
        "-q",
        "--protocol",
        "stamp",
        "--stateful",
        "--metrics",
        "0",
        "--ready-file",
    ])
    .arg(&path);
    let mut server = Running::start(cmd);
    let event = ready_event(&mut server, &path);
    let addr: SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
    let metrics: SocketAddr = event["metrics"].as_str().unwrap().parse().unwrap();
    assert!(metrics.ip().is_loopback(), "{event}");
    let (code, _) = json_to(
        "ping",
        addr,
        &["--protocol", "stamp", "-c", "20", "-i", "0.01"],
    );
    assert_eq!(code, Some(0));
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    promtool_clean(&text);
    assert_eq!(
        sample(&text, "udpkit_server_received_datagrams_total", &[]),
        Some(20.0)
    );
    assert_eq!(
        sample(&text, "udpkit_server_replies_total", &[]),
        Some(20.0)
    );
    assert_eq!(sample(&text, "udpkit_server_sessions", &[]), Some(1.0));
    assert_eq!(http_get(metrics, "/nothing").0, 404);

    let (_relay, relay_path) = {
        let path = ready_path();
        let mut cmd = udpkit();
        cmd.args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &addr.to_string(),
            "--metrics",
            "0",
            "--drop",
            "1",
            "--direction",
            "up",
            "--ready-file",
        ])
        .arg(&path);
        let mut relay = Running::start(cmd);
        let event = ready_event(&mut relay, &path);
        let metrics: SocketAddr = event["metrics"].as_str().unwrap().parse().unwrap();
        let through: SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
        (relay, (through, metrics))
    };
    let (through, relay_metrics) = relay_path;
    let (code, _) = json_to(
        "ping",
        through,
        &["--protocol", "stamp", "-c", "10", "-i", "0.01", "-W", "0.2"],
    );
    assert_eq!(code, Some(1), "nothing gets through");
    // Published once a second.
    let text = within("the relay's counters", || {
        let (_, text) = http_get(relay_metrics, "/metrics");
        (sample(
            &text,
            "udpkit_relay_dropped_datagrams_total",
            &["direction=\"up\""],
        ) == Some(10.0))
        .then_some(text)
    });
    promtool_clean(&text);
    assert_eq!(sample(&text, "udpkit_relay_sessions_open", &[]), Some(1.0));
}

/// `udpkit monitor --metrics 127.0.0.1:0 ARGS`, run to its end (for runs that fail).
fn monitor_run(args: &[&str]) -> std::process::Output {
    let mut c = udpkit();
    c.args(["monitor", "--metrics", "127.0.0.1:0"]).args(args);
    run(c)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn requests_of(metrics: SocketAddr, name: &str) -> Option<f64> {
    let (_, text) = http_get(metrics, "/metrics");
    sample(
        &text,
        "udpkit_probe_requests_total",
        &[&format!("name=\"{name}\"")],
    )
}

fn a_reload_keeps_counters_and_a_bad_file_keeps_the_old_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = udpkit_server(&["-p", "0", "-q"]);
    let (_b, b) = udpkit_server(&["-p", "0", "-q", "--protocol", "echo"]);
    let file = dir.path().join("targets.toml");
    let target = |name: &str, addr: SocketAddr, extra: &str| {
        format!("[[target]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n")
    };
    write(
        &file,
        &format!(
            "[defaults]\ninterval = 0.02\n\n{}{}",
            target("a", a, ""),
            target("b", b, "protocol = \"echo\"")
        ),
    );
    let (mut mon, metrics) = monitor(&["--config", file.to_str().unwrap()]);
    assert!(mon.line().starts_with("Watching 2 targets"));
    let before = within("a's probes", || {
        requests_of(metrics, "a").filter(|n| *n >= 20.0)
    });
    // b goes, c comes, a stays.
    write(
        &file,
        &format!(
            "[defaults]\ninterval = 0.02\n\n{}{}",
            target("a", a, ""),
            target("c", b, "protocol = \"echo\"\nsize = 100")
        ),
    );
    signal(&mon, libc::SIGHUP);
    let line = mon.line();
    assert!(line.contains("2 targets (1 new, 1 gone, 1 kept"), "{line}");
    std::thread::sleep(Duration::from_millis(600));
    let after = requests_of(metrics, "a").unwrap();
    assert!(after > before, "a's counters kept: {before} then {after}");
    assert!(requests_of(metrics, "b").is_none());
    within("c's probes", || {
        requests_of(metrics, "c").filter(|n| *n > 0.0)
    });
    // A bad file (line 4: a key no target has): one line, and the monitor keeps a and c.
    write(
        &file,
        &format!("[[target]]\nname = \"d\"\naddress = \"{a}\"\nintervall = 1\n"),
    );
    signal(&mon, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(600));
    let later = requests_of(metrics, "a").unwrap();
    assert!(later > after, "still probing a: {after} then {later}");
    assert!(requests_of(metrics, "c").is_some());
    assert!(requests_of(metrics, "d").is_none());
    signal(&mon, libc::SIGTERM);
    let (status, stderr) = mon.wait();
    assert!(status.success(), "{stderr}");
    let want = format!("{}:4: unknown field `intervall`", file.display());
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("still watching 2 targets"), "{stderr}");
}

fn a_bad_file_at_start_is_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.toml");
    write(
        &file,
        "[[target]]\naddress = \"127.0.0.1:9\"\n\n[[target]]\naddress = \"127.0.0.1:9\"\ninterval = 0\n",
    );
    let out = monitor_run(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("t.toml:4: target 127.0.0.1:9: interval = 0"),
        "{err}"
    );
    let out = monitor_run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("nothing to watch"), "{err}");
}

fn ten_thousand_targets_in_a_file_load_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.toml");
    // Spread over 127.0.0.0/8 and ports, where nothing listens: every probe is lost (or
    // refused by an ICMP error), and the monitor keeps going.
    let mut text = String::from("[defaults]\ninterval = 1\ntimeout = 0.5\n\n");
    for i in 0..10_000u32 {
        let (x, y) = (1 + i / 250, 1 + i % 250);
        text.push_str(&format!(
            "[[target]]\naddress = \"127.{x}.{y}.1:{}\"\n",
            20_000 + i % 1000
        ));
    }
    write(&file, &text);
    let (mut mon, metrics) = monitor(&["--config", file.to_str().unwrap()]);
    assert!(mon.line().starts_with("Watching 10000 targets"));
    let text = within("every target probed", || {
        let (_, text) = http_get(metrics, "/metrics");
        let probed = text
            .lines()
            .filter(|l| l.starts_with("udpkit_probe_requests_total{") && !l.ends_with(" 0"))
            .count();
        (probed == 10_000).then_some(text)
    });
    assert_eq!(sample(&text, "udpkit_monitor_targets", &[]), Some(10_000.0));
    // One more than the limit is refused, by line.
    text_with_one_too_many(&file);
}

fn text_with_one_too_many(file: &Path) {
    let mut text = std::fs::read_to_string(file).unwrap();
    text.push_str("[[target]]\naddress = \"127.0.0.1:9\"\n");
    write(file, &text);
    let out = monitor_run(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("more than 10000 targets"),
        "{}",
        stderr(&out)
    );
}

fn probe_is_off_by_default_and_held_to_its_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp"]);
    let (_off, off) = monitor(&[&server.to_string(), "--protocol", "stamp"]);
    let path = format!("/probe?target={server}&module=default");
    let (status, body) = http_get(off, &path);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/probe is off"), "{body}");

    // A socket on another loopback address, outside what the file allows: nothing may
    // reach it.
    let outside = UdpSocket::bind("127.0.0.2:0").unwrap();
    outside.set_nonblocking(true).unwrap();
    let file = dir.path().join("probe.toml");
    write(
        &file,
        &format!(
            "[probe]\nallow = [\"127.0.0.1/32\"]\nports = [{}]\n\n[probe.modules.stamp]\n\
             protocol = \"stamp\"\ncount = 5\ninterval = 0.01\n",
            server.port()
        ),
    );
    let (_on, on) = monitor(&["--config", file.to_str().unwrap()]);
    let (status, body) = http_get(on, &format!("/probe?target={server}&module=stamp"));
    assert_eq!(status, 200, "{body}");
    promtool_clean(&body);
    assert_eq!(sample(&body, "probe_success", &[]), Some(1.0), "{body}");
    assert_eq!(
        sample(&body, "udpkit_probe_received", &[]),
        Some(5.0),
        "{body}"
    );
    let elsewhere = outside.local_addr().unwrap();
    for (target, want) in [
        (elsewhere.to_string(), 403),
        (format!("127.0.0.1:{}", elsewhere.port()), 403),
        ("localhost:862".to_string(), 403),
        (server.to_string() + "&module=nope", 400),
    ] {
        let (status, body) = http_get(on, &format!("/probe?target={target}&module=stamp"));
        let (status, body) = if target.contains("module=") {
            http_get(on, &format!("/probe?target={target}"))
        } else {
            (status, body)
        };
        assert_eq!(status, want, "{target}: {body}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut buf = [0u8; 64];
    assert!(
        outside.recv(&mut buf).is_err(),
        "a datagram reached a refused target"
    );
}

fn scrapes_are_answered_while_probes_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, server) = udpkit_server(&["-p", "0", "-q"]);
    let file = dir.path().join("probe.toml");
    // Each probe takes about 3 s: 30 requests 0.1 s apart.
    write(
        &file,
        "[probe]\nallow = [\"127.0.0.1\"]\n\n[probe.modules.slow]\ncount = 30\ninterval = 0.1\n",
    );
    let (_mon, metrics) = monitor(&[&server.to_string(), "--config", file.to_str().unwrap()]);
    let path = format!("/probe?target={server}&module=slow");
    let probes: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || http_get(metrics, &path))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // A fifth finds every probe thread busy; a scrape is answered all the same.
    let (status, _) = http_get(metrics, &path);
    assert_eq!(status, 503);
    let (status, text) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("udpkit_monitor_targets 1"), "{text}");
    assert!(
        probes.iter().all(|p| !p.is_finished()),
        "the scrape was answered while the probes still ran"
    );
    for p in probes {
        let (status, body) = p.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            sample(&body, "udpkit_probe_received", &[]),
            Some(30.0),
            "{body}"
        );
    }
}

/// A reader of `path` at `addr` that takes about 40 KB a second, until the endpoint cuts
/// it or `done` is set: how many bytes it got, and whether it was cut.
fn slow_reader(addr: SocketAddr, path: &str, done: &AtomicBool) -> (usize, bool) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut s: TcpStream = socket.into();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while !done.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (got, true),
            Ok(n) => got += n,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (got, false)
}

fn slow_readers_are_cut_and_scrapes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.toml");
    // 2,000 targets where nothing listens: a page of some 9 MB.
    let mut text = String::from("[defaults]\ninterval = 1\ntimeout = 0.5\n\n");
    for i in 0..2_000u32 {
        text.push_str(&format!(
            "[[target]]\naddress = \"127.{}.{}.1:{}\"\n",
            1 + i / 250,
            1 + i % 250,
            21_000 + i % 100
        ));
    }
    write(&file, &text);
    let (_mon, metrics) = monitor(&["--config", file.to_str().unwrap()]);
    let (_, page) = http_get(metrics, "/metrics");
    assert!(page.len() > 4_000_000, "{} bytes", page.len());
    // Two readers that take 40 KB a second take both pages a monitor writes at once (a
    // whole page would take them minutes): each is cut (reset), and a scraper is answered
    // again within seconds.
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || slow_reader(metrics, "/metrics", &done))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    within("a whole page while slow readers hold on", || {
        let (status, text) = http_get(metrics, "/metrics");
        (status == 200 && text.contains("udpkit_monitor_targets 2000")).then_some(())
    });
    // (`done` is for a failure: a reader never cut gives up after a minute.)
    for r in readers {
        let (got, cut) = r.join().unwrap();
        assert!(
            cut && got < page.len(),
            "a slow reader got {got} of {} bytes, cut: {cut}",
            page.len()
        );
    }
}

fn metrics_listen_on_loopback_unless_told() {
    // A bare port is a port on 127.0.0.1.
    let (_server, server) = udpkit_server(&["-p", "0", "-q"]);
    let path = ready_path();
    let mut cmd = udpkit();
    cmd.args([
        "monitor",
        &server.to_string(),
        "--metrics",
        "0",
        "--ready-file",
    ])
    .arg(&path);
    let mut mon = Running::start(cmd);
    let event = ready_event(&mut mon, &path);
    let metrics: SocketAddr = event["metrics"].as_str().unwrap().parse().unwrap();
    assert!(metrics.ip().is_loopback(), "{event}");
    let help = stdout(&run({
        let mut c = udpkit();
        c.args(["monitor", "--help"]);
        c
    }));
    assert!(help.contains("[default: 127.0.0.1:9862]"), "{help}");
}

/// `docs/monitor/NAME`.
fn documented(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/monitor")
        .join(name)
}

fn promtool(args: &[&str]) {
    let out = Command::new(tool("promtool").expect("promtool"))
        .args(args)
        .current_dir(documented(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn the_documented_files_are_what_they_claim() {
    // The scrape config, the rules and their unit tests, as promtool sees them.
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
    // The example file parses whole (read by the library: its addresses are documentation
    // ranges, never probed from here).
    let config = udpkit::monitor::Config::read(&documented("targets.toml")).unwrap();
    assert_eq!(config.targets.len(), 3);
    assert_eq!(config.probe.map(|p| p.modules.len()), Some(2));
    // Every metric the dashboard and the rules name is one a monitor serves.
    let (_server, server) = udpkit_server(&["-p", "0", "-q", "--protocol", "stamp", "--stateful"]);
    let (_mon, metrics) = monitor(&[
        &server.to_string(),
        "--protocol",
        "stamp",
        "-i",
        "0.02",
        "--dscp",
        "10",
    ]);
    let text = within("one-way delays", || {
        let (_, text) = http_get(metrics, "/metrics");
        text.contains("udpkit_probe_one_way_delay_seconds_bucket")
            .then_some(text)
    });
    let served: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for doc in ["grafana.json", "alerts.yml", "../MONITOR.md"] {
        let body = std::fs::read_to_string(documented(doc)).unwrap();
        let named: Vec<&str> = body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.starts_with("udpkit_probe_")
                    || w.starts_with("udpkit_up")
                    || w.starts_with("udpkit_monitor_")
            })
            .collect();
        assert!(!named.is_empty());
        for name in named {
            // `udpkit_probe_sent` and its kind are /probe's; a histogram's series are
            // `_bucket`, `_sum`, `_count`.
            let probe_only = [
                "udpkit_probe_sent",
                "udpkit_probe_received",
                "udpkit_probe_loss_ratio",
                "udpkit_probe_forged",
                "udpkit_probe_unverified",
            ];
            if probe_only.contains(&name) {
                continue;
            }
            let known = served.contains(name)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| served.contains(format!("{name}{s}").as_str()));
            assert!(
                known,
                "{doc} names {name}, which the monitor does not serve"
            );
        }
    }
}

udpkit_tests! {
    the_documented_files_are_what_they_claim [Need::Tool("promtool")],
    prometheus_counts_what_the_relay_did [Need::Tool("prometheus"), Need::Tool("promtool")],
    every_exposition_is_clean_for_promtool [Need::Tool("promtool"), Need::Seed],
    a_server_and_a_relay_show_their_counters [Need::Tool("promtool")],
    a_reload_keeps_counters_and_a_bad_file_keeps_the_old_targets,
    a_bad_file_at_start_is_one_line_naming_it,
    ten_thousand_targets_in_a_file_load_and_run,
    probe_is_off_by_default_and_held_to_its_allow_list [Need::Tool("promtool")],
    scrapes_are_answered_while_probes_run,
    metrics_listen_on_loopback_unless_told,
    slow_readers_are_cut_and_scrapes_go_on,
}
