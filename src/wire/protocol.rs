//! The protocols udpkit speaks, as one trait: the seed's (`Your data was N bytes long`),
//! echo (RFC 862: the datagram back unchanged) and STAMP (RFC 8762/8972). A client builds
//! its requests and reads its replies through [`Dialect`]; a server answers through it; both
//! hold a [`Protocol`], a handle to one of them. Adding a protocol is a file in wire/ with
//! one `impl Dialect`, and a line in [`Protocol::ALL`].
//!
//! `udpkit stream`'s datagrams are not a dialect: a server recognises them first, whatever
//! it speaks (`wire::stream`).
//!
//! Promise: the names are the ones the command line takes and the JSON reports write; what
//! a dialect says a reply claims ([`Claim`]) is only what its bytes say. Deciding whether
//! the claim is true (the request exists, the nonce is ours) is the flow's, in one place.

use std::fmt;
use std::str::FromStr;

use crate::wire::seed::{MAX_REPLY, RequestId};
use crate::wire::stamp::{Arrival, CosSeen, ErrorEstimate, NtpTime, Reflected};

/// One protocol, client and server side.
pub trait Dialect: fmt::Debug + Send + Sync {
    /// The name the command line takes (`--protocol NAME`) and reports write.
    fn name(&self) -> &'static str;

    /// What a server's first line says it speaks (`None`: the seed's plain line).
    fn banner(&self, stateful: bool) -> Option<&'static str>;

    /// The port a client aims at and a server binds when none is given.
    fn default_port(&self) -> u16 {
        crate::addr::DEFAULT_PORT
    }

    /// The request size when none is given.
    fn default_size(&self) -> usize {
        38
    }

    /// The smallest request this protocol can send.
    fn min_size(&self) -> usize {
        0
    }

    /// Requests are test packets carrying the sender's timestamp, answered with the
    /// reflector's (STAMP): a server reads receive times from the kernel and its clock for
    /// each batch; a client keeps one-way delays.
    fn test_packets(&self) -> bool {
        false
    }

    /// A reply is as long as its request (a client's receive buffers must take any
    /// datagram); `false`: replies are short ([`MAX_REPLY`] at most).
    fn replies_as_long_as_requests(&self) -> bool {
        true
    }

    /// How many bytes of a reply its proof covers, where that is fewer than the reply (an
    /// authenticated STAMP packet's HMAC covers its first 96 of 112 bytes and nothing after:
    /// a larger size is not proven by it). `None`: no such bound.
    fn proof_covers(&self) -> Option<usize> {
        None
    }

    /// Its replies are proven by a key both ends hold (`--key-file`).
    fn keyed(&self) -> bool {
        false
    }

    /// A reflector of this protocol can keep per-session state (`server --stateful`).
    fn has_sessions(&self) -> bool {
        false
    }

    /// How requests of `size` bytes (as asked) are sent.
    fn shape(&self, size: usize) -> Shape;

    /// A request of `len` bytes carries udpkit's proof (a 64-bit nonce) that a reply can
    /// only repeat, not invent.
    fn proves(&self, len: usize) -> bool;

    /// Writes request `r` into `buf` (cleared first, `r.len` bytes); returns the
    /// timestamp it carries (zero for protocols without one).
    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime;

    /// What a datagram from the server says it answers.
    fn read_reply(&self, data: &[u8]) -> Claim;

    /// A server's answer to `request`, decided before the rate limit weighs it: written
    /// into `reply`, or over the request itself, or none; completed by
    /// [`Dialect::complete`] once the limit has said yes.
    fn prepare(&self, request: &[u8], reply: &mut [u8; MAX_REPLY]) -> Prepared;

    /// Its answers are finished after the rate limit ([`Dialect::complete`] does something):
    /// a server gathers what completing needs (arrival, clocks, sessions) only then.
    fn completes(&self) -> bool {
        false
    }

    /// Finishes an answer (written or in place) once it is sure to go; returns the TOS
    /// byte the answer must go out with, where the protocol says (`None`: the socket's).
    fn complete(&self, _answer: &mut [u8], _ctx: &mut Reflecting<'_>) -> Option<u8> {
        None
    }
}

/// How a client sends requests of a size asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The size requests are sent with (a protocol may need more than asked).
    pub size: usize,
    /// Until the server proves it repeats IDs, requests take distinct lengths, and a reply
    /// that names only a length is matched by it.
    pub distinct_lengths: bool,
    /// A reply that carries the request's ID is proof from the start (an echo is the
    /// request itself): IDs are required from the first reply.
    pub ids_from_start: bool,
}

/// A request to write.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// The flow's secret, and the request's sequence number: udpkit's request ID.
    pub id: RequestId,
    /// The request's length in bytes, as [`Shape`] and the flow's distinct lengths make it.
    pub len: usize,
    /// The test-packet session it belongs to (ignored by protocols without one).
    pub session: Session,
}

/// A test-packet session's own (STAMP): its Session-Sender Identifier, the DSCP and ECN it
/// asks the reflector for, and its clock's error estimate.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    /// The Session-Sender Identifier.
    pub ssid: u16,
    /// The DSCP (6 bits) and ECN (2 bits) asked of the reflector for its replies.
    pub cos: (u8, u8),
    /// The sender's clock's error estimate, sent with every timestamp.
    pub error: ErrorEstimate,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            ssid: 0,
            cos: (0, 0),
            error: ErrorEstimate::for_error(1.0, false),
        }
    }
}

/// What a reply says it answers; whether that is true is for the flow to decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not a reply in this protocol's form.
    Bad,
    /// A reply in this protocol's form whose proof fails (an authenticated packet whose
    /// HMAC does not verify under the key).
    Forged,
    /// Names its request by udpkit's request ID; the request was `len` bytes.
    Id {
        /// The ID the reply carries.
        id: RequestId,
        /// The request length the reply names.
        len: usize,
    },
    /// Names only the length of the request it answers.
    Length(usize),
    /// A reflected test packet: names its request by the sequence number and timestamp it
    /// echoes, whatever its length; `proof` is udpkit's nonce and sequence number where the
    /// reflector echoed them.
    Reflected {
        /// The reply's base packet.
        reply: Reflected,
        /// The nonce and sequence number echoed in Extra Padding (`None`: not there).
        proof: Option<(u64, u64)>,
        /// The reflector's Class of Service TLV, where it filled one.
        cos: Option<CosSeen>,
        /// Proven genuine by the packet itself (an HMAC that verified under the key).
        authenticated: bool,
    },
}

/// A server's answer, before the rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// This many bytes written into the reply buffer.
    Written(usize),
    /// The request itself, rewritten in place (same length), is the answer.
    InPlace(usize),
    /// Not a request this protocol answers.
    Malformed,
}

/// What a reflector knows when it completes an answer in place.
pub struct Reflecting<'a> {
    /// When and how the request arrived.
    pub arrival: Arrival,
    /// When the reply leaves (t3).
    pub sent: NtpTime,
    /// The reflector's clock's error estimate.
    pub clock_error: ErrorEstimate,
    /// Each answer can carry a TOS byte of its own (a reply with the DSCP its sender
    /// asked for: RFC 8972's Class of Service).
    pub marks_each_answer: bool,
    /// A stateful reflector's next sequence number for the session with this SSID
    /// (`None`: stateless, or no room for the session).
    pub session_seq: &'a mut dyn FnMut(u16) -> Option<u32>,
}

/// A handle to one protocol: copied freely, compared by name.
#[derive(Clone, Copy)]
pub struct Protocol(&'static dyn Dialect);

impl Protocol {
    /// The seed's sentence, with udpkit's request ID where the request carries one.
    pub const SEED: Protocol = Protocol(&crate::wire::seed::Seed);
    /// RFC 862: every datagram back as it came.
    pub const ECHO: Protocol = Protocol(&crate::wire::echo::Echo);
    /// STAMP in unauthenticated mode.
    pub const STAMP: Protocol = Protocol(&crate::wire::stamp::Stamp);
    /// TWAMP-light (RFC 5357 Appendix I), unauthenticated.
    pub const TWAMP_LIGHT: Protocol = Protocol(&crate::wire::twamp::TwampLight);
    /// Every protocol, in the order `--help` names them.
    pub const ALL: [Protocol; 4] = [
        Protocol::SEED,
        Protocol::ECHO,
        Protocol::STAMP,
        Protocol::TWAMP_LIGHT,
    ];

    /// The protocol's name (`seed`, `echo`, `stamp`), as [`Dialect::name`] says it.
    pub fn as_str(self) -> &'static str {
        self.0.name()
    }

    /// STAMP's authenticated mode under `key` (16 to 64 bytes). The handle lives as long
    /// as the process, as the built-in ones do: make one per key, not one per packet.
    pub fn stamp_authenticated(key: &[u8]) -> Result<Protocol, String> {
        let dialect = crate::wire::stamp_auth::StampAuth::new(key)?;
        Ok(Protocol(Box::leak(Box::new(dialect))))
    }
}

impl std::ops::Deref for Protocol {
    type Target = dyn Dialect;

    fn deref(&self) -> &(dyn Dialect + 'static) {
        self.0
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::SEED
    }
}

impl PartialEq for Protocol {
    fn eq(&self, other: &Protocol) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for Protocol {}

impl std::hash::Hash for Protocol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Protocol::ALL.iter().map(|p| p.as_str()).collect();
                let (last, rest) = names.split_last().expect("at least one protocol");
                format!("unknown protocol {s:?}: use {} or {last}", rest.join(", "))
            })
    }
}
