//! HdrHistogram interval logs, in HdrHistogram's own format, for runs split over many
//! agents: `bench --hlog FILE` writes one (one histogram a second, compressed V2, base64,
//! with its start time and a tag, the run's settings and counters in `#udpkit` comment
//! lines), and [`read`] reads one back, checking everything, for `udpkit merge`.
//!
//! Promise: a histogram is recorded as the run's own (same bounds and precision as
//! `load::latency`), so merging the files of N agents gives exactly the histogram of every
//! latency they measured; a file that is empty, truncated, corrupted or not udpkit's is
//! refused with its name and what is wrong, never read as a partial result.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::load::latency::{HIGHEST_NS, new_histogram};

/// What a file says of its run and of its agent's share (`#udpkit {...}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// The run's name: the `--start-at` time every agent was given; empty without it.
    pub run: String,
    /// This agent's share: index (from 1) and count.
    pub segment: (usize, usize),
    pub target: String,
    pub flows: usize,
    pub window: usize,
    pub rate: Option<f64>,
    pub size: usize,
    /// When this agent started, seconds since the Unix epoch.
    pub started: f64,
    /// How late it started against `--start-at`, seconds.
    pub late: f64,
}

/// The counters of one agent's run (`#udpkit-totals {...}`), as `bench --json` names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub forged: u64,
    pub bad: u64,
    pub unverified: u64,
    pub seconds: f64,
}

/// One interval: its start (seconds since the run's start), length, and latencies.
#[derive(Clone, Debug)]
pub struct Interval {
    pub start: Duration,
    pub length: Duration,
    pub histogram: Histogram<u64>,
}

/// A file read back whole.
#[derive(Clone, Debug)]
pub struct Log {
    pub header: Header,
    pub totals: Totals,
    pub intervals: Vec<Interval>,
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

fn deserialize(bytes: &[u8]) -> Option<Histogram<u64>> {
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
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

/// Merges several threads' intervals second by second.
pub fn merge_seconds(all: Vec<Vec<(u64, Vec<u8>)>>) -> Vec<(u64, Histogram<u64>)> {
    let mut by_second: std::collections::BTreeMap<u64, Histogram<u64>> = Default::default();
    for (second, bytes) in all.into_iter().flatten() {
        let h = deserialize(&bytes).expect("our own serialization reads back");
        by_second
            .entry(second)
            .or_insert_with(new_histogram)
            .add(&h)
            .expect("same bounds");
    }
    by_second.into_iter().collect()
}

/// Writes a whole log.
pub fn write(
    out: &mut impl Write,
    header: &Header,
    seconds: &[(u64, Histogram<u64>)],
    totals: &Totals,
) -> std::io::Result<()> {
    let started = UNIX_EPOCH + Duration::from_secs_f64(header.started);
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
                h,
                Duration::from_secs(*second),
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

/// Reads a log written by [`write()`]; `name` is the file's, for the errors.
pub fn read(name: &str, text: &[u8]) -> Result<Log, Error> {
    let bad = |what: String| Error::Invalid(format!("{name}: {what}"));
    if text.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    let text_str =
        std::str::from_utf8(text).map_err(|_| bad("not text: not an interval log".into()))?;
    let mut header = None;
    let mut totals = None;
    for line in text_str.lines() {
        if let Some(json) = line.strip_prefix("#udpkit-totals ") {
            totals = Some(
                serde_json::from_str::<Totals>(json)
                    .map_err(|e| bad(format!("its totals line cannot be read ({e})")))?,
            );
        } else if let Some(json) = line.strip_prefix("#udpkit ") {
            header = Some(
                serde_json::from_str::<Header>(json)
                    .map_err(|e| bad(format!("its udpkit header cannot be read ({e})")))?,
            );
        }
    }
    let header = header
        .ok_or_else(|| bad("no `#udpkit` header: not written by `udpkit bench --hlog`".into()))?;
    if header.version != 1 {
        return Err(bad(format!(
            "written by another version of the format ({})",
            header.version
        )));
    }
    let totals = totals.ok_or_else(|| {
        bad("no totals line at the end: the run did not finish writing it (cut short?)".into())
    })?;
    let mut intervals = Vec::new();
    let mut base = None;
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| bad(format!("a line is not part of an interval log ({e:?})")))? {
            LogEntry::BaseTime(t) => base = Some(t),
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => {
                let bytes = base64_decode(i.encoded_histogram())
                    .ok_or_else(|| bad("a histogram is not valid base64".into()))?;
                let histogram = deserialize(&bytes)
                    .ok_or_else(|| bad("a histogram cannot be decoded (corrupted?)".into()))?;
                if histogram.high() < HIGHEST_NS || histogram.sigfig() != 3 {
                    return Err(bad("a histogram has other bounds than udpkit's".into()));
                }
                intervals.push(Interval {
                    start: i.start_timestamp(),
                    length: i.duration(),
                    histogram,
                });
            }
        }
    }
    if base.is_none() {
        return Err(bad(
            "no BaseTime line: not written by `udpkit bench --hlog`".into(),
        ));
    }
    // Every answer's latency is in the histograms (more only where forged answers were
    // taken back after they were recorded).
    let recorded: u64 = intervals.iter().map(|i| i.histogram.len()).sum();
    if recorded < totals.received {
        return Err(bad(format!(
            "its histograms hold {recorded} latencies but its totals say {} received: \
             intervals are missing or the file was altered",
            totals.received
        )));
    }
    Ok(Log {
        header,
        totals,
        intervals,
    })
}

/// Standard base64, as interval logs use it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
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
        let seconds = merge_seconds(vec![r.finish()]);
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
        write(&mut out, &header, &seconds, &totals).unwrap();
        out
    }

    #[test]
    fn a_log_reads_back_whole() {
        let text = sample_log();
        let log = read("a.hlog", &text).unwrap();
        assert_eq!(log.header.segment, (1, 3));
        assert_eq!(log.totals.sent, 1000);
        assert_eq!(log.intervals.len(), 3, "0-1 s, 1-2 s, 2-3 s");
        let n: u64 = log.intervals.iter().map(|i| i.histogram.len()).sum();
        assert_eq!(n, 1000);
        assert_eq!(log.intervals[1].start, Duration::from_secs(1));
    }

    #[test]
    fn empty_cut_and_corrupted_files_are_refused_by_name() {
        let text = sample_log();
        let err = |t: &[u8]| read("x.hlog", t).unwrap_err().to_string();
        assert!(err(b"").contains("x.hlog: the file is empty"));
        let cut = &text[..text.len() - 60];
        assert!(err(cut).starts_with("x.hlog:"), "{}", err(cut));
        let mut flipped = text.clone();
        let at = String::from_utf8_lossy(&text).find("HIST").unwrap() + 20;
        flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
        assert!(err(&flipped).starts_with("x.hlog:"), "{}", err(&flipped));
        assert!(err(b"hello\n").contains("no `#udpkit` header"));
    }

    #[test]
    fn base64_round_trips() {
        for (plain, coded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
        ] {
            assert_eq!(base64_decode(coded).unwrap(), plain);
        }
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Z!9v"), None);
    }
}
