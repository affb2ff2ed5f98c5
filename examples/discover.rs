//! `udpkit discover` as a library call. A broadcast reaches only servers bound to the
//! wildcard address; to stay on loopback, this one asks a server on a free loopback port
//! at its own address (a broadcast address, `255.255.255.255:1060` or a subnet's, is given
//! the same way).
//!
//! `cargo run --example discover`

use std::time::Duration;

use udpkit::{Server, Stop, discover};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let config = discover::Config {
        wait: Duration::from_millis(200),
        ..discover::Config::new(server.local_addr())
    };
    let report = discover::discover(&config, &Stop::new(), |found| {
        println!(
            "{} answered in {:.3} ms{}",
            found.address,
            found.rtt.as_secs_f64() * 1e3,
            if found.verified { "" } else { " (unverified)" }
        );
    })?;
    println!(
        "{} server(s) answered {} within {:?}",
        report.servers.len(),
        report.broadcast,
        report.wait
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
