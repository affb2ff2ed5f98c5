//! `udpkit stream`'s datagrams, on the same port as any server protocol, told apart by an
//! 8-byte magic: a start (with a return-routability cookie), the data, and queries with
//! their reports. docs/PROTOCOL.md shows the layouts.
//!
//! Promise: `parse` reads only within the datagram, never panics, and gives back what
//! `emit` wrote; a report is never longer than the query it answers ([`QUERY_LEN`] >=
//! [`REPORT_LEN`]), so the server answers no stream datagram with more bytes than came in.

/// The first bytes of every stream datagram.
pub const MAGIC: [u8; 8] = *b"UDPKSTRM";

/// Version of the layouts below. A report may carry one more counter than version 1 first
/// had (`sender_skipped`), written only where the query left room for it and read as 0
/// where absent: udpkit builds of either length understand each other.
pub const VERSION: u8 = 1;

/// The header every stream datagram starts with: magic, version, kind, stream ID.
pub const HEADER: usize = 8 + 1 + 1 + 8;

/// A data datagram's fixed part: the header, then sequence number and send time.
pub const DATA_MIN: usize = HEADER + 8 + 8;

/// A report's length: the query's serial, then the counters.
pub const REPORT_LEN: usize = HEADER + 8 * 19;

/// The shortest report, and query: without `sender_skipped` (as the first builds sent them).
pub const REPORT_MIN_LEN: usize = HEADER + 8 * 18;

/// A query's length: padded to a report's, so a report is no amplification.
pub const QUERY_LEN: usize = REPORT_LEN;

const _: () =
    assert!(REPORT_LEN <= QUERY_LEN && REPORT_MIN_LEN <= REPORT_LEN && HEADER + 16 <= START_LEN);

/// A start's length (the client pads it; the server's answer to it is no longer).
pub const START_LEN: usize = HEADER + 8 * 6;

/// The kind byte after the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Start = 1,
    Accept = 2,
    Data = 3,
    Query = 4,
    Report = 5,
}

/// What a stream is to be: asked for by the client's start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The server sends and the client receives.
    pub reverse: bool,
    /// Datagrams a second, in thousandths.
    pub milli_pps: u64,
    /// Bytes in each data datagram.
    pub size: u32,
    /// Datagrams in all (0: by duration).
    pub count: u64,
    /// How long to send, in milliseconds (0: by count).
    pub duration_ms: u64,
}

/// The receiver's counters, cumulative since the stream started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Distinct data datagrams received.
    pub received: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Copies of datagrams already received.
    pub duplicates: u64,
    /// Datagrams that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// The most sequence numbers by which one arrived late.
    pub reorder_max: u64,
    /// One more than the highest sequence number received (0: none).
    pub next_expected: u64,
    /// RFC 3550's interarrival jitter, nanoseconds.
    pub jitter_ns: u64,
    /// Delay variation above the run's least one-way delay (RFC 5481 PDV), nanoseconds:
    /// percentiles and maximum.
    pub pdv_p50_ns: u64,
    /// PDV's 90th percentile, nanoseconds.
    pub pdv_p90_ns: u64,
    /// PDV's 99th percentile, nanoseconds.
    pub pdv_p99_ns: u64,
    /// PDV's 99.9th percentile, nanoseconds.
    pub pdv_p999_ns: u64,
    /// The largest PDV, nanoseconds.
    pub pdv_max_ns: u64,
    /// Datagrams too old to tell whether they were duplicates (behind the window).
    pub too_late: u64,
    /// Reverse: data datagrams the server sent so far.
    pub sender_sent: u64,
    /// Reverse: the server has sent its last.
    pub sender_done: u64,
    /// Datagrams of this stream that were malformed.
    pub malformed: u64,
    /// Data datagrams with this stream's ID from another address than its client's:
    /// forged (or from a NAT that changed its mapping), never counted as received.
    pub forged: u64,
    /// Reverse: datagrams the server's pacer skipped, unable to keep the rate (never sent,
    /// so never lost).
    pub sender_skipped: u64,
}

/// One stream datagram, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client to server: start (or, with the cookie the server gave, confirm) a stream.
    Start {
        /// The stream's ID, drawn at random by the client.
        id: u64,
        /// The cookie the server's accept gave (0: asking for one).
        cookie: u64,
        /// What the stream is to be.
        plan: Plan,
    },
    /// Server to client: the cookie to start with; `started` once the stream exists.
    Accept {
        /// The ID of the stream the start asked for.
        id: u64,
        /// The cookie that proves the client receives at its address (never 0).
        cookie: u64,
        /// The stream exists and its data may flow.
        started: bool,
    },
    /// Either way, as the plan says: one datagram of the stream's data.
    Data {
        /// The stream's ID.
        id: u64,
        /// The datagram's sequence number in the stream, from 0.
        seq: u64,
        /// When the sender sent it: nanoseconds since the Unix epoch on its clock.
        sent_ns: u64,
    },
    /// Client to server: the figures so far; `sent` is what the client has sent (forward);
    /// `serial` names the query, and its report repeats it.
    Query {
        /// The stream's ID.
        id: u64,
        /// The cookie the stream was started with.
        cookie: u64,
        /// Data datagrams the client has sent so far (forward; 0 for a reverse stream).
        sent: u64,
        /// The query's number, chosen by the client.
        serial: u64,
    },
    /// Server to client: the answer to a query, with the server's counters.
    Report {
        /// The stream's ID.
        id: u64,
        /// The serial of the query answered.
        serial: u64,
        /// The server's counters so far: what it received (forward) and, for a reverse
        /// stream, what it sent (the `sender_` ones).
        counters: Counters,
    },
}

fn put(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn get(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

/// True if `data` is a stream datagram (its magic), whatever else it holds.
pub fn is_stream(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The stream ID of a datagram that has the magic and is long enough to carry one, whether
/// or not the rest parses.
pub fn stream_id(data: &[u8]) -> Option<u64> {
    if !is_stream(data) || data.len() < HEADER {
        return None;
    }
    Some(get(data, 10))
}

impl Message {
    fn kind(&self) -> Kind {
        match self {
            Message::Start { .. } => Kind::Start,
            Message::Accept { .. } => Kind::Accept,
            Message::Data { .. } => Kind::Data,
            Message::Query { .. } => Kind::Query,
            Message::Report { .. } => Kind::Report,
        }
    }

    fn id(&self) -> u64 {
        match *self {
            Message::Start { id, .. }
            | Message::Accept { id, .. }
            | Message::Data { id, .. }
            | Message::Query { id, .. }
            | Message::Report { id, .. } => id,
        }
    }

    /// The least length of this kind of message on the wire.
    fn min_len(kind: Kind) -> usize {
        match kind {
            Kind::Start => START_LEN,
            Kind::Accept => HEADER + 16,
            Kind::Data => DATA_MIN,
            Kind::Query => REPORT_MIN_LEN,
            Kind::Report => REPORT_MIN_LEN,
        }
    }

    /// Writes the message into `buf`, `len` bytes long (at least its kind's least length;
    /// the rest is zero padding; a report takes up to [`REPORT_LEN`] of it, no more, and
    /// leaves out its last counter where `len` has no room for it). Returns the length
    /// written.
    pub fn emit(&self, buf: &mut [u8], len: usize) -> usize {
        let len = len.max(Self::min_len(self.kind()));
        let buf = &mut buf[..len];
        buf.fill(0);
        buf[..8].copy_from_slice(&MAGIC);
        buf[8] = VERSION;
        buf[9] = self.kind() as u8;
        put(buf, 10, self.id());
        match *self {
            Message::Start { cookie, plan, .. } => {
                put(buf, HEADER, cookie);
                put(buf, HEADER + 8, u64::from(plan.reverse));
                put(buf, HEADER + 16, plan.milli_pps);
                put(buf, HEADER + 24, u64::from(plan.size));
                put(buf, HEADER + 32, plan.count);
                put(buf, HEADER + 40, plan.duration_ms);
            }
            Message::Accept {
                cookie, started, ..
            } => {
                put(buf, HEADER, cookie);
                put(buf, HEADER + 8, u64::from(started));
            }
            Message::Data { seq, sent_ns, .. } => {
                put(buf, HEADER, seq);
                put(buf, HEADER + 8, sent_ns);
            }
            Message::Query {
                cookie,
                sent,
                serial,
                ..
            } => {
                put(buf, HEADER, cookie);
                put(buf, HEADER + 8, sent);
                put(buf, HEADER + 16, serial);
            }
            Message::Report {
                serial,
                counters: c,
                ..
            } => {
                let len = len.min(REPORT_LEN);
                let buf = &mut buf[..len];
                put(buf, HEADER, serial);
                let fields = [
                    c.received,
                    c.bytes,
                    c.duplicates,
                    c.reordered,
                    c.reorder_max,
                    c.next_expected,
                    c.jitter_ns,
                    c.pdv_p50_ns,
                    c.pdv_p90_ns,
                    c.pdv_p99_ns,
                    c.pdv_p999_ns,
                    c.pdv_max_ns,
                    c.too_late,
                    c.sender_sent,
                    c.sender_done,
                    c.malformed,
                    c.forged,
                    c.sender_skipped,
                ];
                for (i, v) in fields.into_iter().enumerate() {
                    let at = HEADER + 8 * (i + 1);
                    if at + 8 <= len {
                        put(buf, at, v);
                    }
                }
                return len;
            }
        }
        len
    }

    /// Reads a stream datagram; `None` for anything else (wrong magic or version, unknown
    /// kind, too short for its kind).
    pub fn parse(data: &[u8]) -> Option<Message> {
        if !is_stream(data) || data.len() < HEADER || data[8] != VERSION {
            return None;
        }
        let kind = match data[9] {
            1 => Kind::Start,
            2 => Kind::Accept,
            3 => Kind::Data,
            4 => Kind::Query,
            5 => Kind::Report,
            _ => return None,
        };
        if data.len() < Self::min_len(kind) {
            return None;
        }
        let id = get(data, 10);
        let f = |i: usize| get(data, HEADER + 8 * i);
        Some(match kind {
            Kind::Start => Message::Start {
                id,
                cookie: f(0),
                plan: Plan {
                    reverse: f(1) != 0,
                    milli_pps: f(2),
                    size: u32::try_from(f(3)).ok()?,
                    count: f(4),
                    duration_ms: f(5),
                },
            },
            Kind::Accept => Message::Accept {
                id,
                cookie: f(0),
                started: f(1) != 0,
            },
            Kind::Data => Message::Data {
                id,
                seq: f(0),
                sent_ns: f(1),
            },
            Kind::Query => Message::Query {
                id,
                cookie: f(0),
                sent: f(1),
                serial: f(2),
            },
            Kind::Report => Message::Report {
                id,
                serial: f(0),
                counters: Counters {
                    received: f(1),
                    bytes: f(2),
                    duplicates: f(3),
                    reordered: f(4),
                    reorder_max: f(5),
                    next_expected: f(6),
                    jitter_ns: f(7),
                    pdv_p50_ns: f(8),
                    pdv_p90_ns: f(9),
                    pdv_p99_ns: f(10),
                    pdv_p999_ns: f(11),
                    pdv_max_ns: f(12),
                    too_late: f(13),
                    sender_sent: f(14),
                    sender_done: f(15),
                    malformed: f(16),
                    forged: f(17),
                    sender_skipped: if data.len() >= REPORT_LEN { f(18) } else { 0 },
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(m: Message, len: usize) {
        let mut buf = vec![0u8; 70_000];
        let n = m.emit(&mut buf, len);
        assert!(n >= len);
        assert_eq!(Message::parse(&buf[..n]), Some(m));
    }

    #[test]
    fn every_kind_round_trips_and_a_report_is_no_longer_than_a_query() {
        let plan = Plan {
            reverse: true,
            milli_pps: 1_000_000,
            size: 1400,
            count: 0,
            duration_ms: 10_000,
        };
        round_trip(
            Message::Start {
                id: 1,
                cookie: 2,
                plan,
            },
            0,
        );
        round_trip(
            Message::Accept {
                id: 1,
                cookie: 2,
                started: true,
            },
            0,
        );
        round_trip(
            Message::Data {
                id: 1,
                seq: 3,
                sent_ns: 4,
            },
            1400,
        );
        round_trip(
            Message::Query {
                id: 1,
                cookie: 2,
                sent: 5,
                serial: 6,
            },
            0,
        );
        let counters = Counters {
            received: 7,
            malformed: 9,
            ..Counters::default()
        };
        round_trip(
            Message::Report {
                id: 1,
                serial: 6,
                counters,
            },
            0,
        );
        const { assert!(REPORT_LEN <= QUERY_LEN) };
        assert!(Message::min_len(Kind::Accept) <= START_LEN);
    }

    #[test]
    fn anything_else_is_not_a_stream_datagram() {
        assert_eq!(Message::parse(b"Your data was 38 bytes long"), None);
        assert_eq!(Message::parse(b"UDPKSTRM"), None);
        let mut buf = vec![0u8; 100];
        let n = Message::Data {
            id: 1,
            seq: 2,
            sent_ns: 3,
        }
        .emit(&mut buf, 0);
        buf[8] = VERSION + 1; // another version
        assert_eq!(Message::parse(&buf[..n]), None);
        buf[8] = VERSION;
        buf[9] = 99; // an unknown kind
        assert_eq!(Message::parse(&buf[..n]), None);
        buf[9] = Kind::Report as u8; // too short for a report
        assert_eq!(Message::parse(&buf[..n]), None);
    }

    #[test]
    fn a_short_query_gets_a_short_report_and_either_length_reads() {
        let counters = Counters {
            received: 3,
            sender_skipped: 5,
            ..Counters::default()
        };
        let report = Message::Report {
            id: 1,
            serial: 2,
            counters,
        };
        let mut buf = vec![0u8; 400];
        // A first build's query: the report fits in it, without the last counter.
        assert_eq!(report.emit(&mut buf, REPORT_MIN_LEN), REPORT_MIN_LEN);
        let Some(Message::Report { counters: c, .. }) = Message::parse(&buf[..REPORT_MIN_LEN])
        else {
            panic!()
        };
        assert_eq!((c.received, c.sender_skipped), (3, 0));
        // A longer room: never more than a whole report.
        assert_eq!(report.emit(&mut buf, 400), REPORT_LEN);
        assert_eq!(Message::parse(&buf[..REPORT_LEN]), Some(report));
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Message::parse(&data);
        }

        #[test]
        fn parse_never_panics_near_valid_input(kind in 1u8..=5, cut in 0usize..200, flip in 0usize..200, byte in any::<u8>()) {
            let mut buf = vec![0u8; 200];
            buf[..8].copy_from_slice(&MAGIC);
            buf[8] = VERSION;
            buf[9] = kind;
            if flip < buf.len() { buf[flip] = byte; }
            buf.truncate(cut);
            let _ = Message::parse(&buf);
        }
    }
}
