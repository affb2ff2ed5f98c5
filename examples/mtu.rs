//! `udpkit mtu` as a library call: the largest datagram that comes back answered from a
//! server on a free loopback port, each size told as the search decides it.
//!
//! `cargo run --example mtu`

use udpkit::{Server, Stop, mtu};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let config = mtu::Config::new(server.local_addr()); // the seed's protocol, 0.2 s a try
    let mut sizes = 0;
    let report = mtu::mtu(&config, &Stop::new(), |t| {
        sizes += 1;
        println!("{:>5} bytes: {:?} ({} tries)", t.size, t.outcome, t.tries);
    })?;
    println!(
        "largest answered payload {} bytes, path MTU {} bytes ({sizes} sizes, {} probes)",
        report.payload, report.path_mtu, report.probes
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
