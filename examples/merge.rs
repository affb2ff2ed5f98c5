//! `udpkit merge` as a library call: a bench run split between two agents (here two calls
//! one after the other, each with its segment of the run), each writing its interval log as
//! `bench --hlog` does; the logs merged into one report.
//!
//! `cargo run --example merge`

use std::path::PathBuf;
use std::time::Duration;

use udpkit::{Offload, Requests};
use udpkit::{Server, Stop, bench, merge};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let dir = tempfile::tempdir()?;
    let mut files: Vec<PathBuf> = Vec::new();
    for agent in 1..=2 {
        let config = bench::Config {
            target: server.local_addr(),
            flows: 1,
            window: 4,
            duration: None,
            count: Some(2000), // in all: each agent sends its half
            rate: None,
            size: 64,
            timeout: Duration::from_secs(1),
            offload: Offload::default(),
            threads: 1,
            requests: Requests::default(),
            segment: Some((agent, 2)),
            start_at: None,
            intervals: true, // keep each second's latencies for the log
        };
        let report = bench::bench(&config, &Stop::new(), |_| {})?;
        let path = dir.path().join(format!("agent-{agent}.hlog"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        report.write_interval_log(&mut file, "")?;
        files.push(path);
    }
    let report = merge::merge_files(&files)?;
    let us = report.latency.summary(1e3); // in microseconds
    println!(
        "{} agents: {} sent, {} received, p99 {:.0} us{}",
        report.agents.len(),
        report.totals.sent,
        report.totals.received,
        us.p99,
        if report.complete {
            ""
        } else {
            " (some segments missing)"
        }
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
