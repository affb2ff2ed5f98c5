//! One budget for everything a stranger can drive: no datagram, file or terminal kills,
//! stalls or swells udpkit. Each test tries the attacker's best move of issue 20 against
//! the real binary; run with `UDPKIT_BIN=path/to/an/older/udpkit` to see which an older
//! build fails.

mod common;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use udpkit::limits;
use udpkit::wire::stream::{self, Message, Plan};

/// A test's own client of `udpkit stream`'s protocol, from `local` (any 127/8 address: each
/// /24 is a source prefix of its own).
struct Peer {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Peer {
    fn new(local: &str, server: SocketAddr) -> Peer {
        let socket = test_socket(&format!("{local}:0"));
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Peer { socket, server }
    }

    fn send(&self, m: Message, len: usize) {
        let mut buf = vec![0u8; 2048];
        let n = m.emit(&mut buf, len);
        self.socket.send_to(&buf[..n], self.server).unwrap();
    }

    /// The server's next answer to a start (data and reports ignored), within the timeout.
    fn answer(&self) -> Option<Message> {
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                return None;
            };
            if let Some(m @ Message::Accept { .. }) = Message::parse(&buf[..n]) {
                return Some(m);
            }
        }
        None
    }

    /// Starts stream `id` with `plan`: the cookie round trip, then the start; whether the
    /// server started it, and the cookie.
    fn start(&self, id: u64, plan: Plan) -> (bool, u64) {
        self.send(
            Message::Start {
                id,
                cookie: 0,
                plan,
            },
            stream::START_LEN,
        );
        let Some(Message::Accept { cookie, .. }) = self.answer() else {
            panic!("no cookie from the server");
        };
        self.send(Message::Start { id, cookie, plan }, stream::START_LEN);
        match self.answer() {
            Some(Message::Accept { started, .. }) => (started, cookie),
            other => panic!("no answer to the start: {other:?}"),
        }
    }

    fn query(&self, id: u64, cookie: u64, serial: u64) {
        self.send(
            Message::Query {
                id,
                cookie,
                sent: 0,
                serial,
            },
            stream::QUERY_LEN,
        );
    }
}

fn plan(reverse: bool, size: u32, pps: u64, seconds: u64) -> Plan {
    Plan {
        reverse,
        milli_pps: pps * 1000,
        size,
        count: 0,
        duration_ms: seconds * 1000,
    }
}

/// The server still answers the seed's protocol.
fn still_serving(addr: SocketAddr) {
    let socket = test_socket("127.0.0.1:0");
    assert_eq!(ask(&socket, addr, b"ping"), b"Your data was 4 bytes long");
}

fn a_reverse_stream_of_any_size_neither_kills_nor_swells_the_server() {
    // The case: the handshake from the client's real address, then a reverse
    // stream of 0xFFFFFFFF-byte datagrams (the old server allocated 64 times that and
    // aborted), of 20,000,000 (591 MB), of 65,508 (accepted, then a sender spinning).
    let (server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let before = rss_kib(server.pid()).unwrap();
    for (i, size) in [u32::MAX, 20_000_000, 65_508].into_iter().enumerate() {
        let peer = Peer::new("127.0.0.1", addr);
        let (started, _) = peer.start(100 + i as u64, plan(true, size, 1000, 5));
        assert!(
            !started,
            "a reverse stream of {size}-byte datagrams was started"
        );
        still_serving(addr);
    }
    // The largest a datagram can be is taken, and costs the server its 64 KiB at most.
    let peer = Peer::new("127.0.0.1", addr);
    let (started, cookie) = peer.start(7, plan(true, 65_507, 1000, 2));
    assert!(started);
    peer.query(7, cookie, 1);
    std::thread::sleep(Duration::from_millis(500));
    still_serving(addr);
    let grown = rss_kib(server.pid()).unwrap().saturating_sub(before);
    assert!(grown < 8 << 10, "the server grew by {grown} KiB");
}

fn a_reverse_plan_by_count_is_held_to_the_hour_too() {
    // The case: 2^64-1 datagrams at 1,000,000 a second, no duration.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let peer = Peer::new("127.0.0.1", addr);
    let endless = Plan {
        count: u64::MAX,
        duration_ms: 0,
        ..plan(true, 100, 1_000_000, 0)
    };
    assert!(!peer.start(1, endless).0);
    // Its best next move: just under the hour, at the fastest rate: refused only if past.
    let hour = Plan {
        count: 3_600 * 1000 + 1,
        duration_ms: 0,
        ..plan(true, 100, 1000, 0)
    };
    assert!(
        !peer.start(2, hour).0,
        "an hour and one datagram was started"
    );
}

fn one_source_cannot_hold_every_stream_slot() {
    // The case: one socket holds every slot (4 reverse and 60 forward), kept
    // alive by queries; a stream and a reverse stream from elsewhere were refused.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let hog = Peer::new("127.0.0.1", addr);
    let mut held = 0;
    let mut reverse_held = 0;
    for id in 0..70u64 {
        let reverse = id < 4;
        let (started, cookie) = hog.start(1000 + id, plan(reverse, 100, 1, 600));
        if started {
            held += 1;
            reverse_held += usize::from(reverse);
            hog.query(1000 + id, cookie, 1);
        }
    }
    assert_eq!(
        held,
        limits::STREAMS_PER_PREFIX,
        "one prefix held {held} streams"
    );
    assert_eq!(reverse_held, limits::REVERSE_PER_PREFIX);
    // Its next best move: other ports of the same /24 (another socket, another address
    // in it): still its share.
    let neighbour = Peer::new("127.0.0.2", addr);
    assert!(!neighbour.start(2000, plan(false, 100, 1, 600)).0);
    // Someone from another prefix gets both kinds.
    let other = Peer::new("127.0.9.1", addr);
    assert!(other.start(3000, plan(false, 100, 100, 5)).0);
    assert!(other.start(3001, plan(true, 100, 100, 5)).0);
}

fn a_servers_streams_stay_small_with_every_table_full() {
    // The case: 256 streams at --threads 4 took the server from 5.8 to 146.6 MB.
    // The attacker's best: every slot of every thread, each stream fed data of every
    // sequence number spread (to touch its window and histograms).
    let (server, addr) = udpkit_server(&["-p", "0", "-q", "--threads", "4"]);
    let before = rss_kib(server.pid()).unwrap();
    let mut streams = Vec::new();
    for prefix in 1..=64u8 {
        for k in 0..limits::STREAMS_PER_PREFIX as u64 {
            let peer = Peer::new(&format!("127.0.{prefix}.1"), addr);
            let id = u64::from(prefix) << 16 | k;
            if peer.start(id, plan(false, 1200, 10_000, 600)).0 {
                streams.push((peer, id));
            }
        }
    }
    assert!(
        streams.len() >= 200,
        "only {} streams were started",
        streams.len()
    );
    let mut buf = vec![0u8; 1200];
    for (peer, id) in &streams {
        for seq in 0..40u64 {
            let m = Message::Data {
                id: *id,
                seq: seq * 997,
                sent_ns: seq * 1_000_000_007,
            };
            let n = m.emit(&mut buf, 1200);
            peer.socket.send_to(&buf[..n], addr).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    still_serving(addr);
    let grown = rss_kib(server.pid()).unwrap().saturating_sub(before);
    println!(
        "{} streams at --threads 4: the server grew by {grown} KiB",
        streams.len()
    );
    assert!(grown < 16 << 10, "the server grew by {grown} KiB");
}

fn a_slow_console_never_holds_up_serving() {
    // The case: stdout to a pipe nobody reads answered 0 of 5 requests; a flood
    // of 20,000 requests held the first legitimate answer 13 s.
    let path = ready_path();
    let mut child = udpkit()
        .args(["server", "-p", "0", "--ready-file"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP;
    let event: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let _ = std::fs::remove_file(&path);
            break serde_json::from_str(&text).unwrap();
        }
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(5));
    };
    let addr: SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
    let flood_socket = roomy_socket("127.0.0.1:0");
    let big = vec![b'x'; 1000];
    for _ in 0..20_000 {
        let _ = flood_socket.send_to(&big, addr);
    }
    let client = test_socket("127.0.0.1:0");
    client
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut answered = 0;
    for i in 0..5 {
        let asked = Instant::now();
        client
            .send_to(format!("legit {i}").as_bytes(), addr)
            .unwrap();
        let mut buf = [0u8; 256];
        // Flood replies may come first; ours names its length.
        while asked.elapsed() < Duration::from_secs(1) {
            match client.recv(&mut buf) {
                Ok(n) if &buf[..n] == b"Your data was 7 bytes long" => {
                    answered += 1;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    // SIGTERM: the summary comes once someone reads.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(answered, 5, "{answered} of 5 legitimate requests answered");
    assert!(status.success(), "{status}");
    let summary = out.lines().last().unwrap_or("");
    assert!(summary.starts_with("Summary after"), "{summary}");
    assert!(summary.contains("lines not shown"), "{summary}");
}

/// Times datagrams arriving at `socket` (a reverse stream's client), for `seconds`.
fn arrivals(socket: &UdpSocket, seconds: f64, mut query: impl FnMut()) -> Vec<Instant> {
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut times = Vec::new();
    let start = Instant::now();
    let mut next_query = start;
    let mut buf = vec![0u8; 65_536];
    while start.elapsed().as_secs_f64() < seconds {
        if Instant::now() >= next_query {
            query();
            next_query += Duration::from_millis(300);
        }
        if let Ok(n) = socket.recv(&mut buf)
            && matches!(Message::parse(&buf[..n]), Some(Message::Data { .. }))
        {
            times.push(Instant::now());
        }
    }
    times
}

fn a_reverse_stream_never_floods_after_a_stall() {
    // The case: the server stopped 1.8 s at 5,000 a second asked, then sent 9,267
    // datagrams in 50 ms (37 times the rate).
    let (server, addr) = udpkit_server(&["-p", "0", "-q", "--no-gso"]);
    let peer = Peer::new("127.0.0.1", addr);
    let (started, cookie) = peer.start(9, plan(true, 100, 5000, 6));
    assert!(started);
    let pid = server.pid() as i32;
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(1800));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let mut serial = 0;
    let times = arrivals(&peer.socket, 4.5, || {
        serial += 1;
        peer.query(9, cookie, serial);
    });
    stopper.join().unwrap();
    // The burst: datagrams in the 50 ms after the first one past the longest gap.
    let (at, gap) = times
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1] - w[0]))
        .max_by_key(|&(_, g)| g)
        .unwrap();
    assert!(gap > Duration::from_millis(1500), "no stall seen: {gap:?}");
    let resumed = times[at];
    let burst = times[at..]
        .iter()
        .take_while(|t| **t - resumed < Duration::from_millis(50))
        .count();
    let allowed = limits::PACER_BURST as usize + 250 + 100;
    println!("{burst} datagrams in the 50 ms after a 1.8 s stall (at most {allowed} allowed)");
    assert!(
        burst <= allowed,
        "{burst} datagrams in 50 ms after the stall"
    );
}

/// A server that speaks just enough of the stream protocol to start a reverse stream, then
/// answers queries with reports that never say it is done, and (`send_data`) sends data,
/// and junk with the stream magic and someone else's ID, for ever (until dropped).
fn endless(send_data: bool) -> Scripted {
    let mut client = None;
    let mut seq = 0u64;
    let mut buf = vec![0u8; 2048];
    Scripted::looping(Duration::from_millis(1), move |socket, got| {
        if let Some((from, request)) = got {
            let answer = match Message::parse(request) {
                Some(Message::Start { id, cookie, .. }) => {
                    client = Some((from, id));
                    Some(Message::Accept {
                        id,
                        cookie: 7,
                        started: cookie == 7,
                    })
                }
                Some(Message::Query { id, serial, .. }) => Some(Message::Report {
                    id,
                    serial,
                    counters: stream::Counters {
                        sender_sent: seq,
                        ..Default::default()
                    },
                }),
                _ => None,
            };
            if let Some(a) = answer {
                let len = a.emit(&mut buf, 0);
                let _ = socket.send_to(&buf[..len], from);
            }
        }
        if let (true, Some((to, id))) = (send_data, client) {
            for _ in 0..10 {
                let n = Message::Data {
                    id,
                    seq,
                    sent_ns: 0,
                }
                .emit(&mut buf, 100);
                let _ = socket.send_to(&buf[..n], to);
                seq += 1;
            }
            // Junk behind the magic, with another stream's ID: foreign.
            let mut junk = stream::MAGIC.to_vec();
            junk.extend_from_slice(&[9; 40]);
            let _ = socket.send_to(&junk, to);
        }
    })
}

fn a_reverse_stream_client_ends_whatever_the_server_does() {
    // The case: a server that answers queries but never says it is done, or keeps
    // sending: `-d 2` ran past 30 s.
    for send_data in [false, true] {
        let server = endless(send_data);
        let cmd = udpkit_to("stream", server.addr, &["-R", "-d", "2", "--json"]);
        let started = Instant::now();
        let out = run_for(cmd, Duration::from_secs(30));
        let took = started.elapsed();
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap_or_default();
        println!("sending {send_data}: ended after {took:?}: {v}");
        let bound = Duration::from_secs(2) + limits::STREAM_GRACE + Duration::from_secs(3);
        assert!(took < bound, "ran {took:?}");
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(v["complete"], false, "{v}");
        // Junk with the magic but not our ID is foreign, never malformed.
        assert_eq!(v["malformed"], 0, "{v}");
    }
}

fn a_relay_gives_one_prefix_a_share_of_its_sessions() {
    // The attacker's best: fill the relay's whole table (here 224 sessions, at `ulimit -n
    // 256`) from one prefix, every session sending twice (confirmed, so never evicted). A
    // client of another prefix still gets a session.
    let (_server, target) = udpkit_server(&["-p", "0", "-q"]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec \"$0\" relay --listen 127.0.0.1:0 --to {target} --json \"$@\""
        ))
        .arg(udpkit().get_program());
    let (mut relay, relay_addr) = start_ready(cmd);
    let mut hogs = Vec::new();
    for _ in 0..300 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = s.send_to(b"a", relay_addr);
        let _ = s.send_to(b"b", relay_addr);
        hogs.push(s);
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    let other = test_socket("127.0.5.1:0");
    assert_eq!(
        ask(&other, relay_addr, b"hello"),
        b"Your data was 5 bytes long"
    );
    let v = json_summary(&mut relay);
    println!("{v}");
    let max = v["max_sessions"].as_u64().unwrap();
    assert!(max < 256, "{v}");
    assert!(v["sessions_refused"].as_u64().unwrap() > 0, "{v}");
}

/// A stateful STAMP reflector on loopback, rate-limited to `limit` replies a second.
fn stateful_reflector(limit: &str) -> (Running, SocketAddr) {
    let args = ["-p", "0", "-q", "--protocol", "stamp", "--stateful"];
    udpkit_server(&[&args[..], &["--rate-limit", limit]].concat())
}

fn a_stateful_reflector_counts_only_what_it_answers() {
    // RFC 8762 4.3.1: the reflector counts what it transmits. A reflector over its rate
    // limit that counted what it refused made the sender see loss on the way back where
    // the reflector had dropped the requests.
    let (_server, addr) = stateful_reflector("50");
    let (_, v) = json_to(
        "bench",
        addr,
        &[
            "--protocol",
            "stamp",
            "-n",
            "400",
            "--rate",
            "2000",
            "-W",
            "0.5",
        ],
    );
    let s = &v["stamp"];
    println!("{s}");
    assert!(v["lost"].as_u64().unwrap() > 200, "{v}");
    assert_eq!(s["loss_backward"], 0, "{s}");
    assert!(s["loss_forward"].as_u64().unwrap() > 200, "{s}");
}

/// A real interval log: a short bench run's, against a server on loopback.
fn real_log(dir: &std::path::Path) -> String {
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let path = dir.join("real.hlog");
    let out = run(udpkit_to(
        "bench",
        addr,
        &[
            "--rate",
            "2000",
            "-n",
            "2000",
            "--hlog",
            path.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(path).unwrap()
}

/// `real`'s header, then its first interval again at each of `seconds` seconds, then
/// totals for as many replies as that makes.
fn long_log(real: &str, seconds: u64) -> String {
    let interval = real.lines().find(|l| l.starts_with("Tag=")).unwrap();
    let fields: Vec<&str> = interval.splitn(5, ',').collect();
    let replies = udpkit::measure::hlog::decode(fields[4]).unwrap().len() * seconds;
    let mut text: String = real
        .lines()
        .take_while(|l| !l.starts_with("Tag="))
        .map(|l| format!("{l}\n"))
        .collect();
    for s in 0..seconds {
        text.push_str(&format!(
            "{},{s}.000,1.000,{},{}\n",
            fields[0], fields[3], fields[4]
        ));
    }
    text.push_str(&format!(
        "#udpkit-totals {{\"sent\":{replies},\"received\":{replies},\"lost\":0,\"duplicates\":0,\
         \"late\":0,\"forged\":0,\"bad\":0,\"unverified\":0,\"seconds\":{seconds}.0}}\n"
    ));
    text
}

fn merge_reads_a_long_log_in_bounded_memory() {
    // The case: a real one-day log of one agent was killed by the kernel at 24 GB
    // (about 270 KB held per interval). Here 20,000 intervals (5.4 GB at that rate).
    let dir = tempfile::tempdir().unwrap();
    let real = real_log(dir.path());
    let path = dir.path().join("long.hlog");
    std::fs::write(&path, long_log(&real, 20_000)).unwrap();
    let mut cmd = udpkit();
    cmd.arg("merge").arg(&path).arg("--json");
    let (out, peak) = run_measured(&cmd, Duration::from_secs(120));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let seconds = v["per_second"].as_array().unwrap();
    assert_eq!(seconds.len(), 20_000);
    assert!(
        seconds
            .iter()
            .all(|s| s["replies"] == seconds[0]["replies"])
    );
    println!("20,000 intervals merged at a peak of {peak} KiB");
    assert!(peak > 0 && peak < 64 << 10, "peak {peak} KiB");
}

fn merge_never_hangs_on_what_is_not_a_regular_file() {
    // The cases: a FIFO hung for ever; /dev/zero read until allocation failed.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.hlog");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a device"),
        (dir.path(), "a directory"),
    ] {
        let mut cmd = udpkit();
        cmd.arg("merge").arg(path);
        let out = run(cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(what), "{err}");
    }
}

/// A V2 payload (zig-zag varints, HdrHistogram's) that skips 1,000 buckets, then counts
/// 2^62 four times: a sum no run can have (the adversary's case: hdrhistogram saturated it
/// and merge printed 18446744073709551615 requests/s).
fn huge_counts() -> Vec<u8> {
    fn varint(mut n: u64, out: &mut Vec<u8>) {
        for _ in 0..8 {
            if n < 0x80 {
                out.push(n as u8);
                return;
            }
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    let zigzag = |n: i64| ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    varint(zigzag(-1000), &mut out);
    for _ in 0..4 {
        varint(zigzag(1 << 62), &mut out);
    }
    out.resize(40, 0);
    out
}

/// A base64, compressed V2 histogram of udpkit's bounds whose inner header declares
/// `payload` bytes and holds `body`.
fn crafted_histogram(payload: u32, body: &[u8]) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut inner = Vec::new();
    inner.extend_from_slice(&(0x1c84_9303u32 | 0x10).to_be_bytes());
    inner.extend_from_slice(&payload.to_be_bytes());
    inner.extend_from_slice(&0u32.to_be_bytes());
    inner.extend_from_slice(&3u32.to_be_bytes());
    inner.extend_from_slice(&1u64.to_be_bytes());
    inner.extend_from_slice(&3_600_000_000_000u64.to_be_bytes());
    inner.extend_from_slice(&1f64.to_be_bytes());
    inner.extend_from_slice(body);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&inner).unwrap();
    let compressed = z.finish().unwrap();
    let mut bytes = (0x1c84_9304u32 | 0x10).to_be_bytes().to_vec();
    bytes.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&compressed);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn merge_refuses_hostile_logs_by_name_before_they_size_anything() {
    let dir = tempfile::tempdir().unwrap();
    let real = real_log(dir.path());
    let one = long_log(&real, 3);
    let line = one.lines().find(|l| l.starts_with("Tag=")).unwrap();
    let encoded = line.rsplit(',').next().unwrap();
    // The cases, each in a file of its own.
    let cases = [
        (
            "huge",
            one.replace(encoded, &crafted_histogram(0xFFFF_FFF0, &[0; 8])),
            "declares a payload",
        ),
        (
            "bomb",
            one.replace(encoded, &crafted_histogram(1 << 28, &vec![0u8; 1 << 28])),
            "decompresses to more than",
        ),
        (
            "counts",
            one.replace(encoded, &crafted_histogram(40, &huge_counts())),
            "counts more than",
        ),
        (
            "segments",
            one.replace("\"segment\":[1,1]", "\"segment\":[1,4611686018427387904]"),
            "not a share",
        ),
        (
            "sent",
            one.replacen("\"sent\":", "\"sent\":9223372036854775808,\"was\":", 1),
            "count over",
        ),
        (
            "hashes",
            one.replacen("Tag=", &format!("{}Tag=", "#\n".repeat(500_000)), 1),
            "",
        ),
    ];
    for (name, text, reason) in cases {
        let path = dir.path().join(format!("{name}.hlog"));
        std::fs::write(&path, text).unwrap();
        let mut cmd = udpkit();
        cmd.arg("merge").arg(&path);
        let (out, peak) = run_measured(&cmd, Duration::from_secs(60));
        let err = stderr(&out);
        println!(
            "{name}: exit {:?}, peak {peak} KiB: {}",
            out.status.code(),
            err.trim()
        );
        assert!(peak < 64 << 10, "{name}: peak {peak} KiB");
        if reason.is_empty() {
            assert!(out.status.success(), "{name}: {err}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {err}");
            assert!(err.contains(reason), "{name}: {err}");
            assert!(err.contains(&format!("{name}.hlog")), "{name}: {err}");
        }
    }
    // Two files whose counts add past what a count can be: refused, never wrapped.
    let big = one.replacen("\"sent\":", "\"sent\":9007199254740992,\"was\":", 1);
    let (a, b) = (dir.path().join("a.hlog"), dir.path().join("b.hlog"));
    std::fs::write(&a, big.replace("\"segment\":[1,1]", "\"segment\":[1,2]")).unwrap();
    std::fs::write(&b, big.replace("\"segment\":[1,1]", "\"segment\":[2,2]")).unwrap();
    let mut cmd = udpkit();
    cmd.arg("merge").arg(&a).arg(&b);
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("add up to more than"), "{err}");
}

fn output_files_replace_a_planted_link_and_never_follow_it() {
    // The case: a symlink at a predictable output path (FILE.partial of
    // --ready-file, --histogram, --plot, --hlog, merge --plot) made udpkit overwrite the
    // file it pointed to.
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let plant = |name: &str| {
        let path = dir.path().join(name);
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        std::os::unix::fs::symlink(&victim, &partial).unwrap();
        path
    };
    // The server's ready file, and a directory planted where the old code wrote beside it.
    let ready = plant("ready.json");
    std::fs::remove_file(dir.path().join("ready.json.partial")).unwrap();
    std::fs::create_dir(dir.path().join("ready.json.partial")).unwrap();
    let mut server = Running::start({
        let mut c = udpkit();
        c.args(["server", "-p", "0", "-q", "--ready-file"])
            .arg(&ready);
        c
    });
    // Ready once the name holds a regular file (the planted link is replaced).
    let deadline = Instant::now() + STEP;
    while !std::fs::symlink_metadata(&ready).is_ok_and(|m| m.is_file()) {
        assert!(
            Instant::now() < deadline && !server.has_exited(),
            "not ready"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let event = ready_event(&mut server, &ready);
    let addr: SocketAddr = event["address"].as_str().unwrap().parse().unwrap();
    let (hist, plot, hlog) = (plant("h.txt"), plant("p.svg"), plant("l.hlog"));
    let out = run(udpkit_to(
        "bench",
        addr,
        &[
            "-n",
            "100",
            "--histogram",
            hist.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
            "--hlog",
            hlog.to_str().unwrap(),
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    let merged = plant("m.svg");
    let mut cmd = udpkit();
    cmd.arg("merge").arg(&hlog).arg("--plot").arg(&merged);
    let out = run(cmd);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    for path in [&hist, &plot, &hlog, &merged] {
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.is_file(), "{} is not a regular file", path.display());
    }
}

/// A "server" that, once a client has sent it anything, floods the client's port with junk
/// from its own address as fast as it can, until dropped; it answers nothing.
fn flooder() -> Scripted {
    let mut to = None;
    let junk = [b'#'; 40];
    Scripted::looping(Duration::from_millis(20), move |socket, got| {
        if let Some((from, _)) = got {
            to.get_or_insert(from);
        }
        if let Some(client) = to {
            for _ in 0..256 {
                let _ = socket.send_to(&junk, client);
            }
        }
    })
}

fn a_client_flooded_by_its_server_still_ends_on_time() {
    // The attacker's move against a measuring client: answer with a flood faster than it
    // reads. Each client must still end within its duration and a stated grace.
    for (sub, args, bound) in [
        ("bench", &["-d", "1", "-W", "0.2"][..], 4.0),
        ("ping", &["-c", "3", "-i", "0.2", "-W", "0.2"][..], 4.0),
        ("stream", &["-d", "1", "--pps", "100"][..], 12.0),
    ] {
        let flooder = flooder();
        let started = Instant::now();
        let out = run_for(udpkit_to(sub, flooder.addr, args), Duration::from_secs(60));
        let took = started.elapsed().as_secs_f64();
        drop(flooder);
        println!(
            "{sub} flooded: ended after {took:.1} s, exit {:?}",
            out.status.code()
        );
        assert!(took < bound, "{sub} took {took:.1} s under a flood");
        assert_ne!(out.status.code(), Some(101), "{}", stderr(&out));
    }
}

/// The local port of the socket connected to `server` (from /proc/net/udp): a running
/// client's, for a test that plays an attacker who knows it.
fn connected_port(server: SocketAddr) -> Option<u16> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let want = hex(server);
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(2) == Some(&want.as_str()))
            .then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok())
            .flatten()
    })
}

fn forgeries_in_a_stamp_session_void_its_loss_split() {
    // The case: a forger who knows the sender's port sprays every SSID at a
    // stateful reflector over its rate limit, in the sender's name. The reflector counted
    // packets it never answered, and forged ones, so the sender reported losses on the
    // way back where there were none. The split must not be given.
    let (_server, addr) = stateful_reflector("200");
    let mut ping = Running::start(udpkit_to(
        "ping",
        addr,
        &[
            "--protocol",
            "stamp",
            "-c",
            "60",
            "-i",
            "0.02",
            "-W",
            "0.5",
            "--json",
        ],
    ));
    let deadline = Instant::now() + STEP;
    let port = loop {
        if let Some(port) = connected_port(addr) {
            break port;
        }
        assert!(Instant::now() < deadline, "ping's socket not found");
        std::thread::sleep(Duration::from_millis(2));
    };
    // The forger (raw sockets) sends in the sender's name: to the reflector it is the
    // sender. (It cannot share the sender's port: nobody, this user included, can join it.)
    let victim = format!("127.0.0.1:{port}");
    let out = spoof(&[
        "stamp",
        "--to",
        &addr.to_string(),
        "--victim",
        &victim,
        "--rounds",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = ping.line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let s = &v["stamp"];
    println!(
        "sent {}, received {}, forged {}: {s}",
        v["sent"], v["received"], v["forged"]
    );
    if v["sent"] != v["received"] {
        assert_eq!(s["loss_backward"], serde_json::Value::Null, "{v}");
        assert!(
            s["loss_direction_unknown_why"]
                .as_str()
                .is_some_and(|w| w.contains("forger")),
            "{v}"
        );
    }
}

fn a_benchs_threads_share_the_requests_it_remembers() {
    // The adversary's case: the in-flight budget was an engine's, and each of a bench's
    // threads had its own: --threads 64 --flows 256 --window 65536 took 3.3 GB and 66 s
    // for -d 0.5, ignoring Ctrl-C meanwhile.
    let (_server, addr) = udpkit_server(&["-p", "0", "-q"]);
    let cmd = udpkit_to(
        "bench",
        addr,
        &[
            "--threads",
            "64",
            "--flows",
            "256",
            "--window",
            "65536",
            "-d",
            "0.5",
        ],
    );
    let (out, peak) = run_measured(&cmd, Duration::from_secs(30));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("flows x window"), "{err}");
    assert!(peak < 64 << 10, "peak {peak} KiB");
}

udpkit_tests! {
    a_benchs_threads_share_the_requests_it_remembers,
    a_reverse_stream_of_any_size_neither_kills_nor_swells_the_server,
    a_reverse_plan_by_count_is_held_to_the_hour_too,
    one_source_cannot_hold_every_stream_slot,
    a_servers_streams_stay_small_with_every_table_full,
    a_slow_console_never_holds_up_serving,
    a_reverse_stream_never_floods_after_a_stall,
    a_reverse_stream_client_ends_whatever_the_server_does,
    a_relay_gives_one_prefix_a_share_of_its_sessions,
    a_stateful_reflector_counts_only_what_it_answers,
    merge_reads_a_long_log_in_bounded_memory,
    merge_never_hangs_on_what_is_not_a_regular_file [Need::Tool("mkfifo")],
    merge_refuses_hostile_logs_by_name_before_they_size_anything,
    output_files_replace_a_planted_link_and_never_follow_it,
    a_client_flooded_by_its_server_still_ends_on_time,
    forgeries_in_a_stamp_session_void_its_loss_split [Need::Root],
}
