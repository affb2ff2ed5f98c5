//! `udpkit monitor` as a library call: two targets watched at once (a server, and a port
//! where nothing listens), their counters read while the watch goes on, and the same
//! counters as Prometheus's text.
//!
//! `cargo run --example monitor`

use std::time::Duration;

use udpkit::monitor::{Config, Monitor, Target};
use udpkit::{Requests, Server, Stop};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?; // freed at once
    let target = |address, name: &str| Target {
        address,
        name: name.into(),
        requests: Requests::default(), // the seed's protocol, unmarked
        size: 64,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        count: None, // for ever
    };
    let config = Config {
        targets: vec![
            target(server.local_addr(), "server"),
            target(nobody, "nobody"),
        ],
        probe: None, // no /probe
    };
    let stop = Stop::new();
    let monitor = Monitor::start(&config, &stop)?;
    std::thread::sleep(Duration::from_millis(800));
    // The counters as last published (at most a quarter of a second old).
    let snapshot = monitor.snapshot();
    for (target, counts) in &snapshot.targets {
        println!(
            "{}: {} sent, {} replies, {} lost, up {}",
            target.name, counts.tally.sent, counts.tally.received, counts.lost, counts.up
        );
    }
    let text = udpkit::export::metrics::monitor(&snapshot);
    println!("{} lines of Prometheus text", text.lines().count());
    monitor.stop()?;
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
