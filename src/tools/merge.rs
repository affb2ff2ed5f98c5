//! `udpkit merge`: one report for a run split over many agents (`bench --segment I/N
//! --start-at T --hlog FILE` on each), from their interval logs.
//!
//! Promise: exact. Counters are summed; percentiles come from the agents' histograms added
//! together (never averaged), so they are those of one histogram of every latency measured.
//! Files of different runs, two files of one segment, files of different targets, and any
//! file that cannot be read whole are refused with the file's name; missing segments are
//! said, and the report is marked incomplete.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;
use crate::load::hlog::{self, Header, Log, Totals};
use crate::load::latency::{Latency, new_histogram};

/// One agent's row.
#[derive(Clone, Debug)]
pub struct Agent {
    pub file: String,
    pub header: Header,
    pub totals: Totals,
    pub latency: Latency,
}

/// One second of the whole run: answers in it and their 99th percentile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Second {
    pub second: u64,
    pub requests_per_second: u64,
    pub p99_us: f64,
}

/// The merged report.
#[derive(Clone, Debug)]
pub struct Report {
    pub agents: Vec<Agent>,
    pub totals: Totals,
    pub latency: Latency,
    pub per_second: Vec<Second>,
    /// Seconds from the first agent's start to the last one's end.
    pub seconds: f64,
    /// Every segment of the run is here.
    pub complete: bool,
    /// What the reader should know (missing segments, no common start time, late starts).
    pub notes: Vec<String>,
}

impl Report {
    pub fn requests_per_second(&self) -> f64 {
        self.totals.received as f64 / self.seconds.max(1e-9)
    }
}

/// Merges the logs given as (file name, contents).
pub fn merge(files: &[(String, Vec<u8>)]) -> Result<Report, Error> {
    if files.is_empty() {
        return Err(Error::Invalid(
            "give the interval logs to merge (bench --hlog FILE)".into(),
        ));
    }
    let logs: Vec<(String, Log)> = files
        .iter()
        .map(|(name, text)| Ok((name.clone(), hlog::read(name, text)?)))
        .collect::<Result<_, Error>>()?;
    let (first_name, first) = &logs[0];
    let mut notes = Vec::new();
    let mut seen: BTreeMap<usize, &str> = BTreeMap::new();
    for (name, log) in &logs {
        let h = &log.header;
        let f = &first.header;
        if h.run != f.run {
            return Err(Error::Invalid(format!(
                "{name} and {first_name} are from different runs (started for {:?} and {:?}): \
                 merge the files of one run only",
                h.run, f.run
            )));
        }
        if h.segment.1 != f.segment.1 {
            return Err(Error::Invalid(format!(
                "{name} is a share of {} agents, {first_name} of {}: not one run",
                h.segment.1, f.segment.1
            )));
        }
        if h.target != f.target {
            return Err(Error::Invalid(format!(
                "{name} loaded {}, {first_name} {}: not one run",
                h.target, f.target
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
    if first.header.run.is_empty() {
        notes.push(
            "the agents were given no --start-at: nothing shows they ran at the same time".into(),
        );
    }
    let count = first.header.segment.1;
    let missing: Vec<String> = (1..=count)
        .filter(|i| !seen.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        notes.push(format!(
            "segments {} are missing: these figures are not the whole run's",
            missing.join(", ")
        ));
    }

    let t0 = logs
        .iter()
        .map(|(_, l)| l.header.started)
        .fold(f64::INFINITY, f64::min);
    let end = logs
        .iter()
        .map(|(_, l)| l.header.started + l.totals.seconds)
        .fold(0.0, f64::max);
    let mut all = new_histogram();
    let mut totals = Totals::default();
    let mut by_second: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut agents = Vec::new();
    for (name, log) in logs {
        let mut mine = new_histogram();
        for i in &log.intervals {
            mine.add(&i.histogram).expect("same bounds");
            let at = log.header.started - t0 + i.start.as_secs_f64();
            by_second
                .entry(at.max(0.0) as u64)
                .or_insert_with(new_histogram)
                .add(&i.histogram)
                .expect("same bounds");
        }
        all.add(&mine).expect("same bounds");
        let t = &log.totals;
        totals.sent += t.sent;
        totals.received += t.received;
        totals.lost += t.lost;
        totals.duplicates += t.duplicates;
        totals.late += t.late;
        totals.forged += t.forged;
        totals.bad += t.bad;
        totals.unverified += t.unverified;
        agents.push(Agent {
            file: name,
            header: log.header,
            totals: log.totals,
            latency: Latency::from_histogram(mine),
        });
    }
    totals.seconds = (end - t0).max(0.0);
    agents.sort_by_key(|a| a.header.segment.0);
    let per_second = by_second
        .into_iter()
        .map(|(second, h)| Second {
            second,
            requests_per_second: h.len(),
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
        })
        .collect();
    Ok(Report {
        agents,
        totals,
        latency: Latency::from_histogram(all),
        per_second,
        seconds: totals.seconds,
        complete: missing.is_empty(),
        notes,
    })
}
