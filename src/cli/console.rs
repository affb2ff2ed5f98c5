//! The seed's sentences, in one place, and the server observer that prints them.
//!
//! Promise: each line is the seed's sentence with addresses in Rust's form
//! (`127.0.0.1:1060`, `[::1]:1060`) and data shown by [`quote::repr`], so nothing a peer
//! sends reaches the terminal raw. Failures go to the error stream, one line each.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use udpkit::addr as net;
use udpkit::wire as quote;
use udpkit::wire::{Protocol, stamp};
use udpkit::{Observer, Prefix};

use super::printer::Outlet;

/// `Listening at 127.0.0.1:1060`
pub fn listening(addr: SocketAddr) -> String {
    format!("Listening at {}", net::shown(addr))
}

/// `Listening at 127.0.0.1:862 (STAMP Session-Reflector, stateful)`: the seed's line,
/// with the protocol after it when it is not the seed's.
pub fn listening_speaking(addr: SocketAddr, protocol: Protocol, stateful: bool) -> String {
    let Some(what) = protocol.banner(stateful) else {
        return listening(addr);
    };
    format!("{} ({what})", listening(addr))
}

/// `stamp test packet seq=0 ssid=7 from 127.0.0.1:52616 (72 bytes)`, or why it is none: a
/// request too short for a sender's fields (14 bytes) is not answered.
pub fn test_packet(line: &mut String, peer: SocketAddr, data: &[u8], protocol: Protocol) {
    let peer = net::shown(peer);
    if data.len() < stamp::SENDER_MIN {
        let _ = write!(
            line,
            "{} bytes from {peer}: too short for a test packet ({}), not answered",
            data.len(),
            stamp::SENDER_MIN
        );
        return;
    }
    let seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let _ = write!(line, "{protocol} test packet seq={seq}");
    // STAMP's SSID (RFC 8972), where the packet has one: TWAMP's bytes there are padding.
    if protocol == Protocol::STAMP
        && let Some(p) = stamp::TestPacket::parse(data)
    {
        let _ = write!(line, " ssid={}", p.ssid);
    }
    let _ = write!(line, " from {peer} ({} bytes)", data.len());
}

/// `The client at 127.0.0.1:52616 says 'The time is ...'`
pub fn client_says(line: &mut String, peer: SocketAddr, data: &[u8]) {
    let _ = write!(line, "The client at {} says ", net::shown(peer));
    quote::repr_into(line, data);
}

/// `The OS assigned me the address 127.0.0.1:52616`
pub fn assigned(addr: SocketAddr) -> String {
    format!("The OS assigned me the address {}", net::shown(addr))
}

/// `Waiting up to 0.1 seconds for a reply`, as the book's `udp_remote.py` prints it.
pub fn waiting(wait: Duration) -> String {
    format!("Waiting up to {} seconds for a reply", wait.as_secs_f64())
}

/// `The server 127.0.0.1:1060 replied 'Your data was 38 bytes long'`
pub fn server_replied(server: SocketAddr, data: &[u8]) -> String {
    format!(
        "The server {} replied {}",
        net::shown(server),
        quote::repr(data)
    )
}

/// `Pretending to drop packet from 127.0.0.1:52616`, as the book's `udp_remote.py` says it.
pub fn pretending_to_drop(line: &mut String, peer: SocketAddr) {
    let _ = write!(line, "Pretending to drop packet from {}", net::shown(peer));
}

/// Prints the server's line for each datagram, and its failures, through an [`Outlet`]:
/// never waiting on the terminal or pipe (lines it cannot take are dropped and counted).
///
/// Lines are gathered per batch and handed over with one call when the batch is done; on a
/// terminal (`line_by_line`) each line goes as it comes. Quiet, it prints only failures.
pub struct Console {
    outlet: Outlet,
    line: String,
    pending: Vec<u8>,
    pending_lines: u64,
    quiet: bool,
    line_by_line: bool,
    /// When a failed reply was last reported, and how many failed since without a line.
    last_failure: Option<Instant>,
    unreported: u64,
    /// Prefixes told of being rate-limited, and when (bounded by `NOTICES`).
    limited: HashMap<Prefix, Instant>,
    /// What the server speaks: a STAMP packet gets a line of its own, not its bytes.
    protocol: Protocol,
    /// Each line as a JSON event (`--json`: standard output is JSON only).
    json: bool,
}

/// A rate-limited prefix is told of on stderr at most once in this long.
const NOTICE_EVERY: Duration = Duration::from_secs(10);

/// Prefixes remembered for those notices, at most: a spoofer with many prefixes cannot grow
/// the table; past it, notices wait until entries expire.
const NOTICES: usize = 1024;

/// Lines gathered before they are handed over even mid-batch: a batch of 64 datagrams of
/// 64 KiB, each shown escaped at up to four bytes a byte, never holds 16 MiB.
const PENDING_LIMIT: usize = 64 << 10;

/// Failed replies are reported at most once a second (the rest counted): a flood that makes
/// replies fail cannot make the server spend its time writing to stderr.
const FAILURE_EVERY: Duration = Duration::from_secs(1);

impl Console {
    pub fn new(outlet: Outlet, quiet: bool, line_by_line: bool) -> Self {
        Console {
            pending: Vec::with_capacity(if quiet { 0 } else { PENDING_LIMIT }),
            outlet,
            line: String::with_capacity(256),
            pending_lines: 0,
            quiet,
            line_by_line,
            last_failure: None,
            unreported: 0,
            limited: HashMap::new(),
            protocol: Protocol::SEED,
            json: false,
        }
    }

    /// Each line as a JSON object, `{"event": "datagram" or "pretend_drop", "from": ...,
    /// "bytes": ..., "text": the line}`.
    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// Lines for a server speaking `protocol`.
    pub fn speaking(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    fn emit(
        &mut self,
        event: &str,
        peer: SocketAddr,
        bytes: Option<usize>,
        format: impl FnOnce(&mut String),
    ) -> io::Result<()> {
        if self.quiet {
            return Ok(());
        }
        self.line.clear();
        format(&mut self.line);
        if self.json {
            let mut v = serde_json::json!({
                "event": event,
                "from": net::shown(peer).to_string(),
                "text": self.line,
            });
            if let Some(bytes) = bytes {
                v["bytes"] = bytes.into();
            }
            self.line = v.to_string();
        }
        self.line.push('\n');
        self.pending.extend_from_slice(self.line.as_bytes());
        self.pending_lines += 1;
        if self.line.capacity() > PENDING_LIMIT {
            self.line = String::with_capacity(256);
        }
        if self.line_by_line || self.pending.len() >= PENDING_LIMIT {
            self.batch_done()?;
        }
        Ok(())
    }

    /// One line to standard error.
    fn say(&mut self, line: String) -> io::Result<()> {
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.outlet.err(&bytes, 1)
    }
}

impl Observer for Console {
    fn datagram(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        let n = Some(data.len());
        if self.protocol.test_packets() {
            let protocol = self.protocol;
            return self.emit("datagram", peer, n, |line| {
                test_packet(line, peer, data, protocol)
            });
        }
        self.emit("datagram", peer, n, |line| client_says(line, peer, data))
    }

    fn rate_limited(&mut self, peer: SocketAddr, _slipped: bool) -> io::Result<()> {
        let prefix = Prefix::of(peer.ip());
        let now = Instant::now();
        if self
            .limited
            .get(&prefix)
            .is_some_and(|t| now.duration_since(*t) < NOTICE_EVERY)
        {
            return Ok(());
        }
        if self.limited.len() >= NOTICES {
            self.limited
                .retain(|_, t| now.duration_since(*t) < NOTICE_EVERY);
            if self.limited.len() >= NOTICES {
                return Ok(());
            }
        }
        self.limited.insert(prefix, now);
        self.say(format!(
            "udpkit: note: rate-limiting replies to {prefix} (from {}): over the limit per \
             prefix; `--rate-limit off` lifts it (see SECURITY.md)",
            net::shown(peer)
        ))
    }

    fn pretend_drop(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.emit("pretend_drop", peer, None, |line| {
            pretending_to_drop(line, peer)
        })
    }

    fn send_failed(&mut self, peer: SocketAddr, why: udpkit::Refusal) -> io::Result<()> {
        let now = Instant::now();
        if self
            .last_failure
            .is_some_and(|t| now.duration_since(t) < FAILURE_EVERY)
        {
            self.unreported += 1;
            return Ok(());
        }
        self.last_failure = Some(now);
        let more = std::mem::take(&mut self.unreported);
        let peer = net::shown(peer);
        let also = if more > 0 {
            format!(" ({more} more failed replies since the last such line)")
        } else {
            String::new()
        };
        self.say(format!("udpkit: cannot reply to {peer}: {why}{also}"))
    }

    fn recv_failed(&mut self, e: &io::Error) -> io::Result<()> {
        self.say(format!(
            "udpkit: cannot receive: {}",
            udpkit::error::plain(e)
        ))
    }

    fn batch_done(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.pending_lines);
        let sent = self.outlet.out(&self.pending, lines);
        self.pending.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_match_the_seed() {
        let server: SocketAddr = "127.0.0.1:1060".parse().unwrap();
        let v6: SocketAddr = "[::1]:1060".parse().unwrap();
        assert_eq!(listening(server), "Listening at 127.0.0.1:1060");
        assert_eq!(listening(v6), "Listening at [::1]:1060");
        assert_eq!(
            assigned(server),
            "The OS assigned me the address 127.0.0.1:1060"
        );
        assert_eq!(
            server_replied(server, b"Your data was 38 bytes long"),
            "The server 127.0.0.1:1060 replied 'Your data was 38 bytes long'"
        );
        assert_eq!(
            waiting(Duration::from_millis(1600)),
            "Waiting up to 1.6 seconds for a reply"
        );
    }

    /// What a console prints for a datagram and a pretended drop; `batch_done`: whether
    /// the batch ends.
    fn console_output(quiet: bool, line_by_line: bool, batch_done: bool) -> String {
        console_output_with(quiet, line_by_line, batch_done, false)
    }

    fn console_output_with(
        quiet: bool,
        line_by_line: bool,
        batch_done: bool,
        json: bool,
    ) -> String {
        #[derive(Clone, Default)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let printer = super::super::printer::Printer::start(capture.clone(), io::sink());
        let mut console = Console::new(printer.outlet(), quiet, line_by_line).json(json);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        console.datagram(peer, b"\x1b]0;pwned\x07\n").unwrap();
        console.pretend_drop(peer).unwrap();
        if batch_done {
            console.batch_done().unwrap();
        }
        drop(console);
        assert!(printer.finish(Duration::from_secs(5)));
        let out = capture.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_console_escapes_what_the_client_sent() {
        assert_eq!(
            console_output(false, false, true),
            "The client at 127.0.0.1:5000 says '\\x1b]0;pwned\\x07\\n'\n\
             Pretending to drop packet from 127.0.0.1:5000\n"
        );
    }

    #[test]
    fn lines_wait_for_the_batch_unless_line_by_line() {
        assert_eq!(console_output(false, false, false), "");
        assert_eq!(console_output(false, true, false).lines().count(), 2);
    }

    #[test]
    fn with_json_each_line_is_an_event() {
        let out = console_output_with(false, true, true, true);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events[0]["event"], "datagram");
        assert_eq!(events[0]["bytes"], 11);
        assert_eq!(events[1]["event"], "pretend_drop");
        assert_eq!(events[1]["from"], "127.0.0.1:5000");
    }

    #[test]
    fn quiet_prints_no_line_per_datagram() {
        assert_eq!(console_output(true, true, true), "");
    }
}
