//! `udpkit ping` as a library call: three requests, one at a time, to a server on a free
//! loopback port, each reply told as it comes.
//!
//! `cargo run --example ping`

use std::time::Duration;

use udpkit::Requests;
use udpkit::ping::{self, Event};
use udpkit::{Server, Stop};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let config = ping::Config {
        target: server.local_addr(),
        count: Some(3),
        interval: Duration::ZERO, // the next request as soon as the reply comes
        size: 64,
        timeout: Duration::from_secs(1),
        requests: Requests::default(), // the seed's protocol, unmarked
    };
    let report = ping::ping(&config, &Stop::new(), |event| {
        if let Event::Reply { seq, rtt, .. } = event {
            println!("reply to {seq}: {:.3} ms", rtt.as_secs_f64() * 1e3);
        }
        Ok(())
    })?;
    let rtt = report.latency.summary(1e6); // in milliseconds
    println!(
        "{} sent, {} received, rtt avg {:.3} ms",
        report.tally.sent, report.tally.received, rtt.avg
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
