//! `udpkit stream` as a library call: a one-way stream to a server on a free loopback
//! port, then one from it (`reverse`), each with its loss and jitter.
//!
//! `cargo run --example stream`

use std::time::Duration;

use udpkit::{Server, Stop, stream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    for reverse in [false, true] {
        let config = stream::Config {
            target: server.local_addr(),
            pps: 1000.0,
            size: 200,
            duration: None,
            count: Some(100), // a tenth of a second at the rate
            reverse,
            interval: Duration::from_millis(100), // figures (and queries) every 0.1 s
            tos: None,
            offload: false,
        };
        let report = stream::stream(&config, &Stop::new(), |_interval| {})?;
        let t = &report.total;
        println!(
            "{}: {} sent, {} received, {} lost, jitter {:.3} ms{}",
            if reverse {
                "from the server"
            } else {
                "to the server"
            },
            t.sent,
            t.received,
            t.lost,
            t.jitter_ms,
            if report.complete { "" } else { " (incomplete)" }
        );
    }
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
