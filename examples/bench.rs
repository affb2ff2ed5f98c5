//! `udpkit bench` as a library call: two flows of eight requests in flight each, for a
//! fifth of a second, against a server on a free loopback port.
//!
//! `cargo run --example bench`

use std::time::Duration;

use udpkit::{Offload, Requests};
use udpkit::{Server, Stop, bench};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let config = bench::Config {
        target: server.local_addr(),
        flows: 2,
        window: 8,
        duration: Some(Duration::from_millis(200)),
        count: None,
        rate: None, // closed loop: a request goes as soon as one comes back
        size: 64,
        timeout: Duration::from_secs(1),
        offload: Offload::default(),
        threads: 1,
        requests: Requests::default(),
        segment: None,
        start_at: None,
        intervals: false,
    };
    let report = bench::bench(&config, &Stop::new(), |_progress| {})?;
    let us = report.latency.summary(1e3); // in microseconds
    println!(
        "{} requests, {} replies, {:.0} replies/s, p50 {:.0} us, p99 {:.0} us",
        report.tally.sent,
        report.tally.received,
        report.requests_per_second(),
        us.p50,
        us.p99
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
