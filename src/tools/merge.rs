//! `udpkit merge`: one report for a run split over many agents (`bench --segment I/N
//! --start-at T --hlog FILE` on each), from their interval logs.
//!
//! Promise: exact. Counters are summed (an error past `limits::COUNT_MAX`, never a wrap);
//! percentiles come from the agents' histograms added together (never averaged), so they
//! are those of one histogram of every latency measured. Files of different runs, two files
//! of one segment, files of different targets, and any file that cannot be read whole are
//! refused with the file's name; missing segments are said, and the report is marked
//! incomplete. Bounded: at most `limits::MERGE_FILES` regular files of at most
//! `limits::HLOG_FILE_BYTES` each, read twice, a line at a time, in time linear in their
//! length; memory holds a few histograms and a buffer a file, however long the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;
use crate::io::files;
use crate::limits;
use crate::measure::hlog::{self, Header, Interval, Reader, Totals};
use crate::measure::latency::{Latency, Summary, new_histogram};

/// One agent's row.
#[derive(Clone, Debug)]
pub struct Agent {
    /// The log file, as given.
    pub file: String,
    /// What its header says of the run (its name, segment, target, load and start).
    pub header: Header,
    /// Its own totals.
    pub totals: Totals,
    /// Its latencies, in microseconds.
    pub latency_us: Summary,
}

/// One second of the whole run: answers in it and their 99th percentile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the earliest agent's start.
    pub second: u64,
    /// Answers whose round trip ended in this second, every agent's.
    pub replies: u64,
    /// The share of the second the run covered (the last one may be cut short).
    pub covered: f64,
    /// The 99th percentile of its round trips; none without replies.
    pub p99_us: Option<f64>,
}

/// The merged report.
#[derive(Clone, Debug)]
pub struct Report {
    /// Each log merged, in the order given.
    pub agents: Vec<Agent>,
    /// All agents' totals added.
    pub totals: Totals,
    /// All agents' round-trip times, merged exactly.
    pub latency: Latency,
    /// Every second of the run, all agents together.
    pub per_second: Vec<Second>,
    /// Seconds from the first agent's start to the last one's end.
    pub seconds: f64,
    /// Every segment of the run is here.
    pub complete: bool,
    /// What the reader should know (missing segments, no common start time, late starts).
    pub notes: Vec<String>,
}

impl Report {
    /// Requests sent a second over the merged run.
    pub fn requests_per_second(&self) -> f64 {
        self.totals.received as f64 / self.seconds.max(1e-9)
    }
}

/// An interval log to merge, opened: regular, and within the size limit.
struct Opened {
    name: String,
    file: File,
    /// Its size when opened: what is read, however it grows meanwhile.
    size: u64,
}

fn open(path: &std::path::Path) -> Result<Opened, Error> {
    let name = path.display().to_string();
    let (file, size) = files::open_regular(path, limits::HLOG_FILE_BYTES)
        .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    Ok(Opened { name, file, size })
}

/// What the first pass learns of a file.
struct Scanned {
    header: Header,
    totals: Totals,
    /// Histograms' latencies in all, and intervals.
    recorded: u64,
    intervals: u64,
    histogram: Histogram<u64>,
}

/// Reads a file through, checking every line and histogram: its header, totals and
/// latencies.
fn scan(opened: &Opened) -> Result<Scanned, Error> {
    let mut file = &opened.file;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(format!("cannot read {}", opened.name), e))?;
    let bounded = file.take(opened.size);
    let mut reader = Reader::new(&opened.name, BufReader::with_capacity(64 << 10, bounded))?;
    let mut histogram = new_histogram();
    let (mut recorded, mut intervals) = (0u64, 0u64);
    while let Some(interval) = reader.next_interval()? {
        let h = reader.decode(&interval)?;
        recorded = recorded
            .checked_add(h.len())
            .filter(|r| *r <= limits::COUNT_MAX)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: its histograms count more than {} latencies: not a run's",
                    opened.name,
                    limits::COUNT_MAX
                ))
            })?;
        intervals += 1;
        histogram.add(&h).expect("same bounds");
    }
    let header = reader
        .header()
        .cloned()
        .expect("a header once read through");
    let totals = *reader.totals().expect("totals once read through");
    // Every answer's latency is in the histograms, and no more than those (and the
    // forged ones taken back after they were recorded).
    let most = totals.received.saturating_add(totals.forged);
    if recorded < totals.received || recorded > most {
        return Err(Error::Invalid(format!(
            "{}: its histograms hold {recorded} latencies but its totals say {} received \
             ({} forged): intervals are missing, or the file was altered",
            opened.name, totals.received, totals.forged
        )));
    }
    Ok(Scanned {
        header,
        totals,
        recorded,
        intervals,
        histogram,
    })
}

/// Merges the interval logs at `paths`.
pub fn merge_files(paths: &[PathBuf]) -> Result<Report, Error> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "give the interval logs to merge (bench --hlog FILE)".into(),
        ));
    }
    if paths.len() > limits::MERGE_FILES {
        return Err(Error::Invalid(format!(
            "{} files: merge reads at most {} at once",
            paths.len(),
            limits::MERGE_FILES
        )));
    }
    files::allow_open_files(paths.len() + 16);
    let opened: Vec<Opened> = paths.iter().map(|p| open(p)).collect::<Result<_, _>>()?;

    // First pass: every file checked whole, every agent's totals and latencies.
    let mut all = new_histogram();
    let mut scanned = Vec::with_capacity(opened.len());
    for o in &opened {
        let s = scan(o)?;
        all.add(&s.histogram).expect("same bounds");
        scanned.push(s);
    }
    let (first_name, first) = (&opened[0].name, &scanned[0].header);
    let mut notes = Vec::new();
    let mut seen = std::collections::BTreeMap::<usize, &str>::new();
    for (o, s) in opened.iter().zip(&scanned) {
        let (name, h) = (&o.name, &s.header);
        if h.run != first.run {
            return Err(Error::Invalid(format!(
                "{name} and {first_name} are from different runs (started for {:?} and {:?}): \
                 merge the files of one run only",
                h.run, first.run
            )));
        }
        if h.segment.1 != first.segment.1 {
            return Err(Error::Invalid(format!(
                "{name} is a share of {} agents, {first_name} of {}: not one run",
                h.segment.1, first.segment.1
            )));
        }
        if h.target != first.target {
            return Err(Error::Invalid(format!(
                "{name} loaded {}, {first_name} {}: not one run",
                h.target, first.target
            )));
        }
        if let Some(other) = seen.insert(h.segment.0, name) {
            return Err(Error::Invalid(format!(
                "{other} and {name} are both segment {}/{}: the same agent's file twice?",
                h.segment.0, h.segment.1
            )));
        }
        if h.late > 0.0 {
            notes.push(format!(
                "{name} (segment {}/{}) started {:.3} s late",
                h.segment.0, h.segment.1, h.late
            ));
        }
    }
    if first.run.is_empty() {
        notes.push(
            "the agents were given no --start-at: nothing shows they ran at the same time".into(),
        );
    }
    let count = first.segment.1;
    let missing = count - seen.len();
    if missing > 0 {
        notes.push(format!(
            "{missing} of {count} segments are missing ({}): these figures are not the whole \
             run's",
            missing_ranges(&seen, count)
        ));
    }
    let mut totals = Totals::default();
    for s in &scanned {
        totals.add(&s.totals)?;
    }
    let (earliest, latest) = scanned.iter().fold((f64::INFINITY, 0f64), |(a, b), s| {
        (a.min(s.header.started), b.max(s.header.started))
    });
    if latest - earliest > limits::RUN_SECONDS_MAX as f64 {
        return Err(Error::Invalid(format!(
            "the files' agents started {:.0} s apart: not one run (at most {} s)",
            latest - earliest,
            limits::RUN_SECONDS_MAX
        )));
    }
    let t0 = scanned
        .iter()
        .map(|s| s.header.started)
        .fold(f64::INFINITY, f64::min);
    let end = scanned
        .iter()
        .map(|s| s.header.started + s.totals.seconds)
        .fold(0.0, f64::max);
    totals.seconds = (end - t0).max(0.0);

    // Second pass: every agent's histograms of each second of the whole run, added, one
    // second at a time.
    let per_second = seconds(&opened, &scanned, t0, totals.seconds)?;

    let mut agents: Vec<Agent> = opened
        .iter()
        .zip(scanned)
        .map(|(o, s)| Agent {
            file: o.name.clone(),
            latency_us: Latency::from_histogram(s.histogram).summary(1e3),
            header: s.header,
            totals: s.totals,
        })
        .collect();
    agents.sort_by_key(|a| a.header.segment.0);
    Ok(Report {
        agents,
        seconds: totals.seconds,
        totals,
        latency: Latency::from_histogram(all),
        per_second,
        complete: missing == 0,
        notes,
    })
}

/// The segments of `1..=count` not in `seen`, as ranges (`2, 5-9`), the first few.
fn missing_ranges(seen: &std::collections::BTreeMap<usize, &str>, count: usize) -> String {
    let mut ranges = Vec::new();
    let mut next = 1;
    for &i in seen.keys().chain(std::iter::once(&(count + 1))) {
        if i > next {
            ranges.push(if i - 1 == next {
                format!("{next}/{count}")
            } else {
                format!("{next}-{}/{count}", i - 1)
            });
        }
        next = i + 1;
    }
    let more = ranges.len().saturating_sub(8);
    ranges.truncate(8);
    let mut text = ranges.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more ranges"));
    }
    text
}

/// One file's place in the second pass: its reader and the next interval's second of the
/// whole run and place in the file.
struct Cursor<'a> {
    reader: Reader<BufReader<std::io::Take<&'a File>>>,
    offset: f64,
    intervals: u64,
    recorded: u64,
}

/// The run's seconds: each file read again, in step, every agent's histogram of a second
/// added before the next second is read. A file holds a buffer and its next line's place,
/// never a histogram.
fn seconds(
    opened: &[Opened],
    scanned: &[Scanned],
    t0: f64,
    length: f64,
) -> Result<Vec<Second>, Error> {
    let mut cursors = Vec::with_capacity(opened.len());
    // (second, file, where its line is, how long)
    let mut next = BinaryHeap::new();
    for (i, (o, s)) in opened.iter().zip(scanned).enumerate() {
        let mut file = &o.file;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot read {}", o.name), e))?;
        let mut c = Cursor {
            reader: Reader::new(
                &o.name,
                BufReader::with_capacity(16 << 10, file.take(o.size)),
            )?,
            offset: s.header.started - t0,
            intervals: 0,
            recorded: 0,
        };
        if let Some(interval) = c.reader.next_interval()? {
            next.push(Reverse((second_of(c.offset, &interval), i)));
        }
        cursors.push(c);
    }
    let mut per_second: Vec<Second> = Vec::new();
    let mut sum = new_histogram();
    let mut current = None;
    // Where the interval each cursor stands at is in its file: read again when its turn
    // comes, so that no file's line is held meanwhile.
    let mut places: Vec<(u64, usize)> = cursors.iter().map(|c| c.reader.last_line()).collect();
    let mut line = Vec::new();
    while let Some(Reverse((second, i))) = next.pop() {
        if let Some(c) = current
            && c != second
        {
            per_second.push(close(c, &mut sum, length));
            // Seconds in between with no reply at all (an outage) are rows too.
            for quiet in c + 1..second {
                per_second.push(close(quiet, &mut sum, length));
            }
        }
        current = Some(second);
        let c = &mut cursors[i];
        let interval = reread(&opened[i], places[i], &mut line)?;
        let h = c.reader.decode(&interval)?;
        c.intervals += 1;
        c.recorded = c.recorded.saturating_add(h.len());
        sum.add(&h).expect("same bounds");
        if let Some(following) = c.reader.next_interval()? {
            places[i] = c.reader.last_line();
            next.push(Reverse((second_of(c.offset, &following), i)));
        }
    }
    if let Some(second) = current {
        per_second.push(close(second, &mut sum, length));
    }
    for ((c, s), o) in cursors.iter().zip(scanned).zip(opened) {
        if c.intervals != s.intervals || c.recorded != s.recorded {
            return Err(Error::Invalid(format!(
                "{} changed while it was being read: merge it again once its run is over",
                o.name
            )));
        }
    }
    Ok(per_second)
}

/// The second of the whole run an interval falls in, given its file's start.
fn second_of(offset: f64, interval: &Interval) -> u64 {
    (offset + interval.start.as_secs_f64()).max(0.0) as u64
}

/// The interval whose line is at `place` in `opened`, read again into `line` (without
/// moving the file's own offset, which its cursor reads on from).
fn reread(opened: &Opened, (at, len): (u64, usize), line: &mut Vec<u8>) -> Result<Interval, Error> {
    line.resize(len, 0);
    files::read_exact_at(&opened.file, line, at)
        .map_err(|e| Error::io(format!("cannot read {}", opened.name), e))?;
    hlog::interval_line(line).ok_or_else(|| {
        Error::Invalid(format!(
            "{} changed while it was being read: merge it again once its run is over",
            opened.name
        ))
    })
}

/// A second's row, and the sum emptied for the next.
fn close(second: u64, sum: &mut Histogram<u64>, length: f64) -> Second {
    let row = Second {
        second,
        replies: sum.len(),
        covered: (length - second as f64).clamp(0.0, 1.0),
        p99_us: (!sum.is_empty()).then(|| sum.value_at_quantile(0.99) as f64 / 1e3),
    };
    sum.reset();
    row
}
