//! The seed's sentences, in one place, and the server observer that prints them.
//!
//! Promise: each line is the seed's sentence with addresses in Rust's form
//! (`127.0.0.1:1060`, `[::1]:1060`) and data shown by [`quote::repr`], so nothing a peer
//! sends reaches the terminal raw. Failures go to the error stream, one line each.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::server::Observer;
use crate::{error, net, quote};

/// `Listening at 127.0.0.1:1060`
pub fn listening(addr: SocketAddr) -> String {
    format!("Listening at {}", net::shown(addr))
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

/// Prints the server's line for each datagram to `out` and its failures to `err`.
pub struct Console<O: Write, E: Write> {
    out: O,
    err: E,
    line: String,
}

impl<O: Write, E: Write> Console<O, E> {
    pub fn new(out: O, err: E) -> Self {
        Console {
            out,
            err,
            line: String::with_capacity(256),
        }
    }
}

impl<O: Write, E: Write> Observer for Console<O, E> {
    fn datagram(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        self.line.clear();
        client_says(&mut self.line, peer, data);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        self.out.flush()
    }

    fn send_failed(&mut self, peer: SocketAddr, e: &io::Error) -> io::Result<()> {
        let peer = net::shown(peer);
        writeln!(
            self.err,
            "udpkit: cannot reply to {peer}: {}",
            error::plain(e)
        )
    }

    fn recv_failed(&mut self, e: &io::Error) -> io::Result<()> {
        writeln!(self.err, "udpkit: cannot receive: {}", error::plain(e))
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

    #[test]
    fn the_console_escapes_what_the_client_sent() {
        let mut out = Vec::new();
        let mut console = Console::new(&mut out, io::sink());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        console.datagram(peer, b"\x1b]0;pwned\x07\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "The client at 127.0.0.1:5000 says '\\x1b]0;pwned\\x07\\n'\n"
        );
    }
}
