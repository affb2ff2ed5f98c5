//! A server with more than the seed's behaviour, on a free loopback port: two threads,
//! its own stop, and its counters read at the end.
//!
//! `cargo run --example server`

use std::time::Duration;

use udpkit::{Backoff, Client, Server, ServerConfig, Stop};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig {
        threads: 2,
        ..ServerConfig::new("127.0.0.1:0".parse()?)
    };
    let server = Server::with_config(config)?;
    let address = server.local_addr();
    // Run it on a thread of our own, silent (the observer `()` hears nothing), until stopped.
    let stop = Stop::new();
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || server.run(&stop, || ()).map(|()| server.stats()))
    };

    let client = Client::connect(address)?;
    let backoff = Backoff {
        first_wait: Duration::from_millis(50),
        ..Backoff::default()
    };
    for text in ["one", "two", "three"] {
        client.request(text.as_bytes(), &backoff, &Stop::new(), |_| {})?;
    }

    stop.stop();
    let stats = running.join().expect("the server's thread")?;
    println!(
        "server at {address}: {} requests received, {} replied, {} bytes in",
        stats.received, stats.replied, stats.bytes_in
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
