//! Helpers for the integration tests: real processes on real loopback sockets.
//!
//! Every process started here is killed when its handle drops (also when a test fails),
//! every wait is bounded, and every port is chosen by the kernel (port 0). Each test binary
//! runs on `harness` (its `main` from `udpkit_tests!`), which checks what a test needs
//! before running it.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

pub mod cleanup;
pub mod harness;

#[allow(unused_imports)] // not every test binary declares a need
pub use harness::Need;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single step of a test may wait before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

/// A `udpkit` command, ready for arguments: this build's, or `$UDPKIT_BIN` (to run the
/// suite against another build, an older one say, and see which tests it fails).
pub fn udpkit() -> Command {
    match std::env::var_os("UDPKIT_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_udpkit")),
    }
}

/// The resident memory of process `pid` now, in KiB (`VmRSS`), where /proc says.
pub fn rss_kib(pid: u32) -> Option<u64> {
    field_kib(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in KiB (`VmHWM`), where /proc says.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    field_kib(pid, "VmHWM:")
}

fn field_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `cmd` to its end (bounded by `limit`) under Python's `resource` module, which
/// reads the child's peak resident memory as it is reaped: its output, and that peak in
/// KiB.
pub fn run_measured(cmd: &Command, limit: Duration) -> (Output, u64) {
    // Python kills its child when the time is up (subprocess.run's timeout), so that none
    // outlives the test.
    let script = "import resource, subprocess, sys\n\
                  p = subprocess.run(sys.argv[2:], capture_output=True, timeout=float(sys.argv[1]))\n\
                  sys.stdout.buffer.write(p.stdout)\n\
                  sys.stderr.buffer.write(p.stderr)\n\
                  sys.stderr.write('\\npeak-kib %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                  sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)\n";
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(script)
        .arg(format!("{}", limit.as_secs_f64()))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let mut out = run_for(py, limit + Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let (err, peak) = err
        .rsplit_once("\npeak-kib ")
        .map(|(e, p)| (e.to_string(), p.trim().parse().unwrap_or(0)))
        .unwrap_or((err, 0));
    out.stderr = err.into_bytes();
    (out, peak)
}

/// A Python 3 command that runs the seed script unbuffered, so its lines arrive at once (a
/// test that calls it declares `Need::Seed`).
pub fn seed() -> Command {
    let script = harness::seed_script().expect("the seed's udp_local.py (Need::Seed)");
    let mut cmd = Command::new("python3");
    cmd.arg("-u").arg(script);
    cmd
}

/// Starts the seed's server on a free port and waits for its first line; returns it with
/// its address.
pub fn seed_server() -> (Running, SocketAddr) {
    let port = free_port();
    let mut cmd = seed();
    cmd.args(["server", "-p", &port.to_string()]);
    let mut server = Running::start(cmd);
    assert_eq!(server.line(), format!("Listening at ('127.0.0.1', {port})"));
    (server, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A running process whose stdout lines arrive on a channel; killed on drop, with every
/// process it started (it leads a process group of its own: socat's `fork` children, a
/// script's subprocesses).
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: Receiver<String>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        use std::os::unix::process::CommandExt;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        cleanup::group_started(child.id());
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, stderr) = channel();
        let mut err = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The next line of stdout, waiting at most `STEP`.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(STEP) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no line within {STEP:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the process ended; stderr: {}", self.stop_and_stderr())
            }
        }
    }

    /// Lines of stdout that arrive within `wait`, without failing when none do.
    pub fn lines_within(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    /// Waits (bounded) for the process to end by itself; its exit status and stderr.
    pub fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let err = self.stderr.recv_timeout(STEP).unwrap_or_default();
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "the process did not end within {STEP:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (and its group) and returns what it wrote to stderr.
    pub fn stop_and_stderr(&mut self) -> String {
        kill_group(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.recv_timeout(STEP).unwrap_or_default()
    }

    /// Whether the process has ended (it is then reaped by `wait`).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes our end of its stdout: its next write meets a broken pipe.
    pub fn close_stdout(&mut self) {
        let (_, empty) = channel();
        self.lines = empty;
    }
}

/// Kills the process group `child` leads (its children included).
fn kill_group(child: &Child) {
    // SAFETY: kill(2) on the group of a child we started as its leader and have not reaped.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
        cleanup::group_ended(self.child.id());
    }
}

/// Runs a command to its end, killing it if it takes longer than `STEP`.
pub fn run(cmd: Command) -> Output {
    run_for(cmd, STEP)
}

/// Runs a command to its end, killing it if it takes longer than `limit`.
pub fn run_for(mut cmd: Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    cleanup::group_started(child.id());
    // Read as it comes: a child writing more than a pipe holds must not wait on us.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&child);
            let _ = child.kill();
            let _ = child.wait();
            cleanup::group_ended(child.id());
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    // What the command left behind in its group goes with it.
    kill_group(&child);
    cleanup::group_ended(child.id());
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A path for a `--ready-file`, unique to this process and call, in the temporary folder.
pub fn ready_path() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("udpkit-ready-{}-{n}.json", std::process::id()))
}

/// Waits (bounded by `STEP`) for the ready event `proc` writes to `path`, then removes
/// the file; the event's JSON object.
pub fn ready_event(proc: &mut Running, path: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let _ = std::fs::remove_file(path);
            return serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("a bad ready event ({e}): {text}"));
        }
        assert!(
            !proc.has_exited(),
            "ended before it was ready: {}",
            proc.stop_and_stderr()
        );
        assert!(Instant::now() < deadline, "not ready within {STEP:?}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `cmd` (a udpkit server or relay; `--ready-file` is added), waits for its ready
/// event and for its first line of output (the seed's "Listening at ...", which it
/// consumes); returns it with the address from the event.
pub fn start_ready(mut cmd: Command) -> (Running, SocketAddr) {
    let path = ready_path();
    cmd.arg("--ready-file").arg(&path);
    let mut proc = Running::start(cmd);
    let event = ready_event(&mut proc, &path);
    proc.line();
    let addr = event["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {event}"));
    (proc, addr)
}

/// Starts `udpkit server ARGS` and returns it with the address it is ready on.
pub fn udpkit_server(args: &[&str]) -> (Running, SocketAddr) {
    let mut cmd = udpkit();
    cmd.arg("server").args(args);
    start_ready(cmd)
}

/// A free UDP port on 127.0.0.1, for the seed's server, which cannot be told to use port 0
/// and report it. (Another process could take it in between; the kernel rarely reuses a
/// port that soon.)
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// A socket for the test to speak UDP itself, with a bounded read timeout.
pub fn test_socket(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind(addr).expect("bind a test socket");
    socket.set_read_timeout(Some(STEP)).expect("timeout");
    socket
}

/// Sends `data` from `socket` to `to` and returns the reply.
pub fn ask(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    socket.send_to(data, to).expect("send");
    let mut buf = vec![0u8; 65_536];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("a reply within the timeout");
    assert_eq!(from, to, "the reply came from elsewhere");
    buf.truncate(n);
    buf
}

/// [`ask`] over a path that may lose a datagram under load (a relay, a flood): sends again
/// each second, up to 5 times, and returns the first reply.
pub fn ask_again(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let old = socket.read_timeout().ok().flatten();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = vec![0u8; 65_536];
    for _ in 0..5 {
        socket.send_to(data, to).expect("send");
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, to, "the reply came from elsewhere");
            buf.truncate(n);
            let _ = socket.set_read_timeout(old);
            return buf;
        }
    }
    panic!("no reply to 5 tries");
}

/// Sends `signal` (e.g. `libc::SIGINT`) to a running process.
pub fn signal(proc: &Running, signal: i32) {
    // SAFETY: kill(2) on the pid of a child we own and have not yet reaped.
    let rc = unsafe { libc::kill(proc.pid() as i32, signal) };
    assert_eq!(rc, 0, "kill failed");
}

/// Sends `count` datagrams of `data` to `to` from `socket` and counts the replies that
/// arrive until `quiet` passes with none (bounded by `STEP` overall); returns
/// (replies, reply bytes).
pub fn flood(
    socket: &UdpSocket,
    to: SocketAddr,
    data: &[u8],
    count: usize,
    quiet: Duration,
) -> (usize, usize) {
    let reader = socket.try_clone().expect("clone socket");
    reader.set_read_timeout(Some(quiet)).expect("timeout");
    let counter = thread::spawn(move || {
        let deadline = Instant::now() + STEP;
        let (mut n, mut bytes) = (0, 0);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            match reader.recv(&mut buf) {
                Ok(len) => {
                    n += 1;
                    bytes += len;
                }
                Err(_) => break,
            }
        }
        (n, bytes)
    });
    for _ in 0..count {
        socket.send_to(data, to).expect("send");
    }
    counter.join().expect("reader thread")
}

/// A UDP socket bound to `addr` with a large receive buffer, so that a test counting
/// replies never loses them on its own side.
pub fn roomy_socket(addr: &str) -> UdpSocket {
    let socket = test_socket(addr);
    socket2::SockRef::from(&socket)
        .set_recv_buffer_size(4 << 20)
        .expect("receive buffer");
    socket
}

/// A hand-written server on a thread: calls `respond(socket, peer, request, n)` for the
/// n-th request (from 0) until dropped or `STEP` passes.
pub struct Scripted {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Scripted {
    pub fn start(
        mut respond: impl FnMut(&UdpSocket, SocketAddr, &[u8], usize) + Send + 'static,
    ) -> Scripted {
        let mut n = 0;
        Self::looping(Duration::from_millis(20), move |socket, got| {
            if let Some((peer, request)) = got {
                respond(socket, peer, request, n);
                n += 1;
            }
        })
    }

    /// A server whose `step(socket, datagram)` runs at least every `wait`, with the datagram
    /// received meanwhile if one came (to send on its own: floods, streams), until dropped
    /// or `STEP` passes.
    pub fn looping(
        wait: Duration,
        mut step: impl FnMut(&UdpSocket, Option<(SocketAddr, &[u8])>) + Send + 'static,
    ) -> Scripted {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(wait)).expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + STEP;
            let mut buf = vec![0u8; 65_536];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                match socket.recv_from(&mut buf) {
                    Ok((len, peer)) => step(&socket, Some((peer, &buf[..len]))),
                    Err(_) => step(&socket, None),
                }
            }
        });
        Scripted {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a udpkit server answers to `request`.
pub fn udpkit_reply(request: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; udpkit::wire::MAX_REPLY];
    let n = udpkit::wire::emit_reply(&mut buf, request.len(), udpkit::wire::request_id(request));
    buf[..n].to_vec()
}

/// `udpkit SUB HOST -p PORT ARGS…` aimed at `to` (HOST being its IP address).
pub fn udpkit_to(sub: &str, to: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = udpkit();
    cmd.arg(sub)
        .arg(to.ip().to_string())
        .args(["-p", &to.port().to_string()])
        .args(args);
    cmd
}

/// Runs `udpkit SUB HOST -p PORT ARGS… --json` against `to`: its exit code and the one
/// JSON object it printed.
pub fn json_to(sub: &str, to: SocketAddr, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = udpkit_to(sub, to, args);
    cmd.arg("--json");
    json_from(cmd)
}

/// Runs a udpkit subcommand that prints one JSON object and returns it with the exit code.
pub fn json_of(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = udpkit();
    cmd.args(args);
    json_from(cmd)
}

fn json_from(cmd: Command) -> (Option<i32>, serde_json::Value) {
    let out = run(cmd);
    let text = stdout(&out);
    let value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}; stderr: {}", stderr(&out)));
    (out.status.code(), value)
}

/// Starts `udpkit relay --listen 127.0.0.1:0 --to TO ARGS` and returns it with the address
/// clients should send to.
pub fn udpkit_relay(to: SocketAddr, args: &[&str]) -> (Running, SocketAddr) {
    let mut cmd = udpkit();
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--to", &to.to_string()])
        .args(args);
    start_ready(cmd)
}

/// `python3 tests/helpers/spoof.py ARGS`: forged datagrams and ICMP errors (root only).
pub fn spoof(args: &[&str]) -> Output {
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/helpers/spoof.py"
    ))
    .args(args);
    run(cmd)
}

/// Forges an ICMP destination-unreachable of `code` to 127.0.0.1 about a UDP datagram that
/// `from` sent to `to` (root only), as a router or the host at `to` would send it.
pub fn forge_icmp(from: SocketAddr, to: SocketAddr, code: &str) {
    let out = spoof(&[
        "icmp",
        "--to",
        "127.0.0.1",
        "--about",
        &from.to_string(),
        &to.to_string(),
        "--code",
        code,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Sends SIGINT to a server or relay started with `--json`, waits for it to end (it must
/// succeed), and returns its last line, the JSON summary.
pub fn json_summary(proc: &mut Running) -> serde_json::Value {
    signal(proc, libc::SIGINT);
    let last = proc
        .lines_within(Duration::from_secs(2))
        .pop()
        .expect("a summary line");
    let (status, err) = proc.wait();
    assert!(status.success(), "{err}");
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{last}: {e}"))
}

/// A Python echo server on a port of the kernel's choosing, with its address.
pub fn python_echo() -> (Running, SocketAddr) {
    python_echo_cutting_at(65535)
}

/// A Python echo server that echoes at most `cut` bytes of each datagram (as xinetd's
/// echo cuts at 2,048), with its address.
pub fn python_echo_cutting_at(cut: usize) -> (Running, SocketAddr) {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-u",
        "-c",
        "import socket, sys\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('127.0.0.1', 0))\n\
         print(s.getsockname()[1])\n\
         cut = int(sys.argv[1])\n\
         while True:\n\
         \x20   data, peer = s.recvfrom(65535)\n\
         \x20   s.sendto(data[:cut], peer)\n",
        &cut.to_string(),
    ]);
    let mut proc = Running::start(cmd);
    let port: u16 = proc.line().trim().parse().expect("a port");
    (proc, SocketAddr::from(([127, 0, 0, 1], port)))
}
