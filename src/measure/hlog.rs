//! HdrHistogram interval logs, in HdrHistogram's own format, for runs split over many
//! agents: `bench --hlog FILE` writes one (one histogram a second, compressed V2, base64,
//! with its start time and a tag, the run's settings and counters in `#udpkit` comment
//! lines), and a [`Reader`] reads one back, line by line, checking everything, for
//! `udpkit merge`.
//!
//! Promise: a histogram is recorded as the run's own (same bounds and precision as
//! `measure::latency`), so merging the files of N agents gives exactly the histogram of every
//! latency they measured. Writing holds one histogram a thread at a time, however long the
//! run. Reading holds one line and one histogram at a time, in time linear in the file:
//! every line is at most [`limits::HLOG_LINE_BYTES`]; every histogram's declared lengths
//! are checked against its bytes, and its bounds against udpkit's, before anything is
//! allocated for it, and it decompresses to at most [`limits::HISTOGRAM_BYTES`]; every
//! count, time and segment a file states is checked against `crate::limits`. A file that is
//! empty, truncated, corrupted or not udpkit's is refused with its name, its line and what
//! is wrong, never read as a partial result.

use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::limits;
use crate::measure::latency::{HIGHEST_NS, new_histogram};

/// What a file says of its run and of its agent's share (`#udpkit {...}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The version of udpkit's header and totals lines; 1, the only one read.
    pub version: u32,
    /// The run's name: the `--start-at` time every agent was given; empty without it.
    pub run: String,
    /// This agent's share: index (from 1) and count.
    pub segment: (usize, usize),
    /// The server's address, as the reports show it.
    pub target: String,
    /// Sockets this agent opened, each with its own source port.
    pub flows: usize,
    /// Requests in flight per flow (closed loop).
    pub window: usize,
    /// This agent's requests a second (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// Bytes in each request.
    pub size: usize,
    /// When this agent started, seconds since the Unix epoch.
    pub started: f64,
    /// How late it started against `--start-at`, seconds.
    pub late: f64,
}

/// The counters of one agent's run (`#udpkit-totals {...}`), as `bench --json` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered (first replies, late or not).
    pub received: u64,
    /// Requests never answered.
    pub lost: u64,
    /// Replies beyond the first to a request.
    pub duplicates: u64,
    /// Of `received`: answers that came after their request's timeout.
    pub late: u64,
    /// Replies the server did not send (a wrong or missing request ID).
    pub forged: u64,
    /// Datagrams from the server that answer no request.
    pub bad: u64,
    /// Of `received`: answers matched by length alone, not authenticated.
    pub unverified: u64,
    /// The run's length in seconds: from the first request to the last reply, or to the end
    /// of sending if later.
    pub seconds: f64,
}

impl Totals {
    /// Adds `o` to these; an error (never a wrap) past [`limits::COUNT_MAX`].
    pub fn add(&mut self, o: &Totals) -> Result<(), Error> {
        let sum = |a: &mut u64, b: u64| -> Result<(), Error> {
            *a = a
                .checked_add(b)
                .filter(|s| *s <= limits::COUNT_MAX)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "the files' counts add up to more than {}: they cannot be one run",
                        limits::COUNT_MAX
                    ))
                })?;
            Ok(())
        };
        sum(&mut self.sent, o.sent)?;
        sum(&mut self.received, o.received)?;
        sum(&mut self.lost, o.lost)?;
        sum(&mut self.duplicates, o.duplicates)?;
        sum(&mut self.late, o.late)?;
        sum(&mut self.forged, o.forged)?;
        sum(&mut self.bad, o.bad)?;
        sum(&mut self.unverified, o.unverified)?;
        Ok(())
    }
}

/// Latencies by whole second since the run's start, each second compressed as soon as it
/// is over (a long run keeps kilobytes, not a histogram a second).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    second: u64,
    current: Histogram<u64>,
    /// (second, compressed histogram)
    closed: Vec<(u64, Vec<u8>)>,
}

fn serialize(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .expect("a histogram serializes into memory");
    out
}

impl Recorder {
    /// Seconds count from `start`, the same for every thread of a run.
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            second: 0,
            current: new_histogram(),
            closed: Vec::new(),
        }
    }

    fn roll(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.start).as_secs();
        if second > self.second {
            if !self.current.is_empty() {
                self.closed.push((self.second, serialize(&self.current)));
                self.current.reset();
            }
            self.second = second;
        }
    }

    /// A round trip that ended at `now`.
    pub fn record(&mut self, now: Instant, rtt: Duration) {
        self.roll(now);
        let ns = u64::try_from(rtt.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_NS);
        self.current.saturating_record(ns);
    }

    /// The intervals, once the run is over.
    pub fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        if !self.current.is_empty() {
            self.closed.push((self.second, serialize(&self.current)));
        }
        self.closed
    }
}

/// Every thread's seconds of one run, compressed; merged second by second as they are
/// written, one histogram a thread at a time.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    threads: Vec<Vec<(u64, Vec<u8>)>>,
}

impl Recorded {
    /// The seconds of each thread, as its [`Recorder::finish`] gave them.
    pub fn new(threads: Vec<Vec<(u64, Vec<u8>)>>) -> Recorded {
        Recorded { threads }
    }

    /// The seconds in order, each the sum of every thread's histogram of that second.
    pub fn seconds(&self) -> impl Iterator<Item = (u64, Histogram<u64>)> + '_ {
        let mut at = vec![0usize; self.threads.len()];
        std::iter::from_fn(move || {
            let second = self
                .threads
                .iter()
                .zip(&at)
                .filter_map(|(t, &i)| t.get(i).map(|(s, _)| *s))
                .min()?;
            let mut sum = new_histogram();
            for (t, i) in self.threads.iter().zip(at.iter_mut()) {
                while let Some((s, bytes)) = t.get(*i)
                    && *s == second
                {
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut &bytes[..])
                        .expect("our own serialization reads back");
                    sum.add(&h).expect("same bounds");
                    *i += 1;
                }
            }
            Some((second, sum))
        })
    }
}

/// Writes a whole log: the header, each second's histogram as `seconds` gives it, then the
/// totals.
pub fn write(
    out: &mut impl Write,
    header: &Header,
    seconds: impl Iterator<Item = (u64, Histogram<u64>)>,
    totals: &Totals,
) -> std::io::Result<()> {
    let started = UNIX_EPOCH + Duration::try_from_secs_f64(header.started).unwrap_or_default();
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment(
            "Written by udpkit bench: round-trip latencies in nanoseconds, one interval a second",
        )
        .add_comment(&format!(
            "udpkit {}",
            serde_json::to_string(header).expect("plain values serialize")
        ))
        .with_start_time(started)
        .with_base_time(started);
    let tag = format!("segment-{}-of-{}", header.segment.0, header.segment.1);
    let mut writer = builder.begin_log_with(out, &mut serializer)?;
    for (second, h) in seconds {
        writer
            .write_histogram(
                &h,
                Duration::from_secs(second),
                Duration::from_secs(1),
                Tag::new(&tag),
            )
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    writer.write_comment(&format!(
        "udpkit-totals {}",
        serde_json::to_string(totals).expect("plain values serialize")
    ))?;
    Ok(())
}

/// One interval of a log: its start (seconds since the run's start), length, and the
/// histogram as the file holds it (decoded on demand by [`decode`]).
#[derive(Clone, Debug)]
pub struct Interval {
    /// When the interval began, from the run's start.
    pub start: Duration,
    /// How long it lasted (a second as udpkit writes them).
    pub length: Duration,
    /// The histogram: compressed V2, in base64.
    pub encoded: String,
}

/// One interval line read alone (a line read again from a file already checked); `None`
/// if it is not one.
pub fn interval_line(line: &[u8]) -> Option<Interval> {
    match IntervalLogIterator::new(line).next()? {
        Ok(LogEntry::Interval(i)) => Some(Interval {
            start: i.start_timestamp(),
            length: i.duration(),
            encoded: i.encoded_histogram().to_string(),
        }),
        _ => None,
    }
}

/// What a line of a log is.
enum Line {
    Header(Header),
    Totals(Totals),
    Base,
    Interval(Interval),
    Other,
}

/// Reads a log written by [`write()`], a line at a time (see the module's promise). The
/// header comes first, then the intervals, each no earlier than the one before, then the
/// totals, and nothing after them.
pub struct Reader<R> {
    name: String,
    input: R,
    line: Vec<u8>,
    number: u64,
    header: Option<Header>,
    based: bool,
    totals: Option<Totals>,
    last_start: Duration,
    /// Bytes read so far, and where the line just read started.
    offset: u64,
    line_at: u64,
}

impl<R: BufRead> Reader<R> {
    /// Reads `input` (of the file `name`, for the errors) up to its first interval: its
    /// header must be there.
    pub fn new(name: &str, input: R) -> Result<Reader<R>, Error> {
        Ok(Reader {
            name: name.to_string(),
            input,
            line: Vec::new(),
            number: 0,
            header: None,
            based: false,
            totals: None,
            last_start: Duration::ZERO,
            offset: 0,
            line_at: 0,
        })
    }

    fn bad(&self, what: impl std::fmt::Display) -> Error {
        if self.number == 0 {
            Error::Invalid(format!("{}: {what}", self.name))
        } else {
            Error::Invalid(format!("{}, line {}: {what}", self.name, self.number))
        }
    }

    /// The file's header, once read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Where the last interval's line starts in the file, and how long it is.
    pub fn last_line(&self) -> (u64, usize) {
        (self.line_at, self.line.len())
    }

    /// The next line, bounded; `None` at the end.
    fn next_line(&mut self) -> Result<Option<Line>, Error> {
        self.line.clear();
        let limit = limits::HLOG_LINE_BYTES as u64 + 1;
        let read = (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| self.bad(format!("cannot be read: {}", crate::error::plain(&e))))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.line_at = self.offset;
        self.offset += read as u64;
        if self.line.len() > limits::HLOG_LINE_BYTES {
            return Err(self.bad(format!(
                "a line longer than {} bytes: not an interval log of udpkit's",
                limits::HLOG_LINE_BYTES
            )));
        }
        if self.line.last() != Some(&b'\n') {
            self.line.push(b'\n');
        }
        let text = std::str::from_utf8(&self.line)
            .map_err(|_| self.bad("not text: not an interval log"))?;
        if let Some(json) = text.strip_prefix("#udpkit-totals ") {
            let totals = serde_json::from_str::<Totals>(json)
                .map_err(|e| self.bad(format!("its totals line cannot be read ({e})")))?;
            return Ok(Some(Line::Totals(totals)));
        }
        if let Some(json) = text.strip_prefix("#udpkit ") {
            let header = serde_json::from_str::<Header>(json)
                .map_err(|e| self.bad(format!("its udpkit header cannot be read ({e})")))?;
            return Ok(Some(Line::Header(header)));
        }
        // HdrHistogram's own parser, one line at a time (linear, whatever the file holds).
        let entry = IntervalLogIterator::new(&self.line).next();
        Ok(Some(match entry {
            None => Line::Other,
            Some(Ok(LogEntry::BaseTime(_))) => Line::Base,
            Some(Ok(LogEntry::StartTime(_))) => Line::Other,
            Some(Ok(LogEntry::Interval(i))) => Line::Interval(Interval {
                start: i.start_timestamp(),
                length: i.duration(),
                encoded: i.encoded_histogram().to_string(),
            }),
            Some(Err(_)) if self.header.is_none() => {
                return Err(
                    self.bad("not part of an interval log: not written by `udpkit bench --hlog`")
                );
            }
            Some(Err(_)) => return Err(self.bad("not part of an interval log (altered?)")),
        }))
    }

    /// The next interval, checked; `None` once the totals have been read at the end.
    pub fn next_interval(&mut self) -> Result<Option<Interval>, Error> {
        loop {
            let Some(line) = self.next_line()? else {
                if self.header.is_none() {
                    return Err(self.bad(if self.number == 0 {
                        "the file is empty"
                    } else {
                        "no `#udpkit` header: not written by `udpkit bench --hlog`"
                    }));
                }
                if self.totals.is_none() {
                    return Err(self.bad(
                        "no totals line at the end: the run did not finish writing it (cut short?)",
                    ));
                }
                return Ok(None);
            };
            if self.totals.is_some() && !matches!(line, Line::Other) {
                return Err(self.bad("more after the totals line: the file was altered"));
            }
            match line {
                Line::Header(header) => {
                    if self.header.is_some() {
                        return Err(self.bad("a second `#udpkit` header"));
                    }
                    self.header = Some(check_header(header).map_err(|what| self.bad(what))?);
                }
                Line::Totals(totals) => {
                    self.totals = Some(check_totals(totals).map_err(|what| self.bad(what))?);
                }
                Line::Base => self.based = true,
                Line::Interval(interval) => {
                    if self.header.is_none() {
                        return Err(self.bad(
                            "an interval before the `#udpkit` header: not written by `udpkit \
                             bench --hlog`",
                        ));
                    }
                    if !self.based {
                        return Err(self.bad(
                            "no BaseTime line before the intervals: not written by `udpkit \
                             bench --hlog`",
                        ));
                    }
                    if interval.start < self.last_start
                        || interval.start.as_secs() > limits::RUN_SECONDS_MAX
                    {
                        return Err(self.bad(format!(
                            "an interval at {:.3} s: before the one above it, or past {} s",
                            interval.start.as_secs_f64(),
                            limits::RUN_SECONDS_MAX
                        )));
                    }
                    self.last_start = interval.start;
                    return Ok(Some(interval));
                }
                Line::Other => {}
            }
        }
    }

    /// The totals, once every interval has been read.
    pub fn totals(&self) -> Option<&Totals> {
        self.totals.as_ref()
    }

    /// Decodes `interval`'s histogram, with this file's name and line in the error.
    pub fn decode(&self, interval: &Interval) -> Result<Histogram<u64>, Error> {
        decode(&interval.encoded).map_err(|what| self.bad(what))
    }
}

/// A header's numbers within the limits.
fn check_header(h: Header) -> Result<Header, String> {
    if h.version != 1 {
        return Err(format!(
            "written by another version of the format ({})",
            h.version
        ));
    }
    let (i, n) = h.segment;
    if !(1..=limits::SEGMENTS).contains(&n) || !(1..=n).contains(&i) {
        return Err(format!(
            "its segment {i}/{n} is not a share I/N with 1 <= I <= N <= {}",
            limits::SEGMENTS
        ));
    }
    let day = 86_400.0 * 365.0 * 100.0;
    let started = h.started.is_finite() && (0.0..=day * 3.0).contains(&h.started);
    let late = h.late.is_finite() && (0.0..=day).contains(&h.late);
    if !(started && late) {
        return Err("its start time is not a time (before 1970, or centuries ahead)".into());
    }
    if h.rate.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
        return Err("its rate is not a number".into());
    }
    Ok(h)
}

/// Totals within the limits.
fn check_totals(t: Totals) -> Result<Totals, String> {
    let counts = [
        t.sent,
        t.received,
        t.lost,
        t.duplicates,
        t.late,
        t.forged,
        t.bad,
        t.unverified,
    ];
    if counts.iter().any(|&c| c > limits::COUNT_MAX) {
        return Err(format!(
            "its totals state a count over {}: not a run's",
            limits::COUNT_MAX
        ));
    }
    if t.received > t.sent || t.lost > t.sent {
        return Err("its totals do not add up (more received or lost than sent)".into());
    }
    if !(t.seconds.is_finite() && (0.0..=limits::RUN_SECONDS_MAX as f64).contains(&t.seconds)) {
        return Err(format!(
            "its totals state a run of {} s: not 0 to {} s",
            t.seconds,
            limits::RUN_SECONDS_MAX
        ));
    }
    Ok(t)
}

/// The V2 cookies (HdrHistogram's serialization format, the `| 0x10` of 8-byte words).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// A V2 histogram's header: cookie, payload length, normalizing offset, significant
/// digits, lowest and highest trackable values, integer-to-double ratio.
const V2_HEADER: usize = 40;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes one base64, compressed V2 histogram of udpkit's bounds (see the module's
/// promise); what is wrong otherwise.
pub fn decode(encoded: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "a histogram is not valid base64".to_string())?;
    if bytes.len() < 8 || be32(&bytes, 0) != V2_COMPRESSED_COOKIE {
        return Err("a histogram is not HdrHistogram's compressed V2 form".into());
    }
    let declared = be32(&bytes, 4) as usize;
    if declared != bytes.len() - 8 {
        return Err(format!(
            "a histogram declares {declared} compressed bytes but holds {} (corrupted?)",
            bytes.len() - 8
        ));
    }
    let mut inner = Vec::new();
    flate2::read::ZlibDecoder::new(&bytes[8..])
        .take(limits::HISTOGRAM_BYTES as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|_| "a histogram cannot be decompressed (corrupted?)".to_string())?;
    if inner.len() > limits::HISTOGRAM_BYTES {
        return Err(format!(
            "a histogram decompresses to more than {} bytes: not udpkit's",
            limits::HISTOGRAM_BYTES
        ));
    }
    if inner.len() < V2_HEADER || be32(&inner, 0) != V2_COOKIE {
        return Err("a histogram cannot be decoded (corrupted?)".into());
    }
    let payload = be32(&inner, 4) as usize;
    if payload != inner.len() - V2_HEADER {
        return Err(format!(
            "a histogram declares a payload of {payload} bytes but holds {} (corrupted?)",
            inner.len() - V2_HEADER
        ));
    }
    let (offset, digits, low, high) = (
        be32(&inner, 8),
        be32(&inner, 12),
        be64(&inner, 16),
        be64(&inner, 24),
    );
    if offset != 0 || digits != 3 || low != 1 || !(HIGHEST_NS..=HIGHEST_NS * 2).contains(&high) {
        return Err("a histogram has other bounds than udpkit's".into());
    }
    let histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &inner[..])
        .map_err(|_| "a histogram cannot be decoded (corrupted?)".to_string())?;
    // Its counts: each, and their sum, within what a run can count (hdrhistogram would
    // saturate a larger sum and report it as u64::MAX).
    let mut total: u64 = 0;
    for v in histogram.iter_recorded() {
        total = total
            .checked_add(v.count_at_value())
            .filter(|t| *t <= limits::COUNT_MAX)
            .ok_or_else(|| {
                format!(
                    "a histogram counts more than {} latencies: not a run's",
                    limits::COUNT_MAX
                )
            })?;
    }
    Ok(histogram)
}

/// Seconds since the Unix epoch, now.
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_log() -> Vec<u8> {
        let start = Instant::now();
        let mut r = Recorder::new(start);
        for i in 0..1000u64 {
            r.record(
                start + Duration::from_millis(i * 3),
                Duration::from_micros(10 + i),
            );
        }
        let recorded = Recorded::new(vec![r.finish()]);
        let header = Header {
            version: 1,
            run: "2026-11-25T12:00:00Z".into(),
            segment: (1, 3),
            target: "127.0.0.1:1060".into(),
            started: 1_800_000_000.0,
            ..Header::default()
        };
        let totals = Totals {
            sent: 1000,
            received: 1000,
            ..Totals::default()
        };
        let mut out = Vec::new();
        write(&mut out, &header, recorded.seconds(), &totals).unwrap();
        out
    }

    /// Reads a whole log: its header, totals and intervals decoded.
    type Read = (Header, Totals, Vec<(Duration, u64)>);

    fn read(name: &str, text: &[u8]) -> Result<Read, Error> {
        let mut r = Reader::new(name, text)?;
        let mut intervals = Vec::new();
        while let Some(i) = r.next_interval()? {
            let h = r.decode(&i)?;
            intervals.push((i.start, h.len()));
        }
        Ok((r.header().unwrap().clone(), *r.totals().unwrap(), intervals))
    }

    #[test]
    fn a_log_reads_back_whole() {
        let text = sample_log();
        let (header, totals, intervals) = read("a.hlog", &text).unwrap();
        assert_eq!(header.segment, (1, 3));
        assert_eq!(totals.sent, 1000);
        assert_eq!(intervals.len(), 3, "0-1 s, 1-2 s, 2-3 s");
        assert_eq!(intervals.iter().map(|i| i.1).sum::<u64>(), 1000);
        assert_eq!(intervals[1].0, Duration::from_secs(1));
    }

    #[test]
    fn empty_cut_and_corrupted_files_are_refused_by_name() {
        let text = sample_log();
        let err = |t: &[u8]| read("x.hlog", t).unwrap_err().to_string();
        assert!(
            err(b"").contains("x.hlog: the file is empty"),
            "{}",
            err(b"")
        );
        let cut = &text[..text.len() - 60];
        assert!(err(cut).starts_with("x.hlog"), "{}", err(cut));
        let mut flipped = text.clone();
        let at = String::from_utf8_lossy(&text).find("HIST").unwrap() + 20;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        assert!(
            err(&flipped).starts_with("x.hlog, line"),
            "{}",
            err(&flipped)
        );
        assert!(
            err(b"hello\n").contains("not written by `udpkit bench --hlog`"),
            "{}",
            err(b"hello\n")
        );
        assert!(
            err(b"#hello\n").contains("no `#udpkit` header"),
            "{}",
            err(b"#hello\n")
        );
    }

    /// A compressed V2 histogram with the given inner header and payload, base64.
    fn forged_histogram(declared_payload: u32, digits: u32, high: u64, payload: &[u8]) -> String {
        use base64::Engine as _;
        let mut inner = Vec::new();
        inner.extend_from_slice(&V2_COOKIE.to_be_bytes());
        inner.extend_from_slice(&declared_payload.to_be_bytes());
        inner.extend_from_slice(&0u32.to_be_bytes());
        inner.extend_from_slice(&digits.to_be_bytes());
        inner.extend_from_slice(&1u64.to_be_bytes());
        inner.extend_from_slice(&high.to_be_bytes());
        inner.extend_from_slice(&1f64.to_be_bytes());
        inner.extend_from_slice(payload);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&inner).unwrap();
        let compressed = z.finish().unwrap();
        let mut bytes = V2_COMPRESSED_COOKIE.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&compressed);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn hostile_histograms_are_refused_before_anything_is_allocated_for_them() {
        // The cases: a payload declared 4 GiB, a DEFLATE bomb, other bounds.
        let huge = forged_histogram(0xFFFF_FFF0, 3, HIGHEST_NS, &[0; 16]);
        assert!(decode(&huge).unwrap_err().contains("declares a payload"));
        let bomb = forged_histogram(64 << 20, 3, HIGHEST_NS, &vec![0u8; 64 << 20]);
        assert!(bomb.len() < 200_000, "a bomb: {} bytes", bomb.len());
        assert!(
            decode(&bomb)
                .unwrap_err()
                .contains("decompresses to more than")
        );
        let wide = forged_histogram(0, 5, u64::MAX / 2, &[]);
        assert!(decode(&wide).unwrap_err().contains("other bounds"));
        // A good one of udpkit's decodes.
        let mut h = new_histogram();
        h.record(1234).unwrap();
        use base64::Engine as _;
        let good = base64::engine::general_purpose::STANDARD.encode(serialize(&h));
        assert_eq!(decode(&good).unwrap().len(), 1);
    }

    #[test]
    fn numbers_a_file_states_are_checked() {
        let text = String::from_utf8(sample_log()).unwrap();
        let err = |t: String| read("y.hlog", t.as_bytes()).unwrap_err().to_string();
        let big = text.replace("\"segment\":[1,3]", "\"segment\":[1,4611686018427387904]");
        assert!(err(big).contains("not a share"));
        let sent = text.replace("\"sent\":1000", "\"sent\":9223372036854775808");
        assert!(err(sent).contains("count over"));
        let after = format!("{text}Tag=x,5.0,1.0,1.0,AAAA\n");
        assert!(err(after).contains("after the totals"));
    }

    #[test]
    fn lines_of_hashes_read_in_linear_time() {
        // The case: 1.5 MB of `#` lines took 30 s.
        let text = String::from_utf8(sample_log()).unwrap();
        let (head, rest) = text.split_at(text.find("Tag=").unwrap());
        let padded = format!("{head}{}{rest}", "#\n".repeat(750_000));
        let started = Instant::now();
        read("z.hlog", padded.as_bytes()).unwrap();
        // Not a timing of speed: a quadratic parse would not end within this bound.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
}
