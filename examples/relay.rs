//! `udpkit relay` as a library: a relay on a free loopback port in front of a server, with
//! 5 ms added each way, run on a thread until stopped; a client's requests go through it.
//!
//! `cargo run --example relay`

use std::time::{Duration, Instant};

use udpkit::Impairment;
use udpkit::{Backoff, Client, Server, Stop, relay};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
    let config = relay::Config {
        impair: Impairment {
            delay: Duration::from_millis(5),
            ..Impairment::default()
        },
        ..relay::Config::new("127.0.0.1:0".parse()?, server.local_addr())
    };
    let relay = relay::Relay::bind(config)?;
    let through = relay.local_addr();
    let stop = Stop::new();
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || relay.run(&stop))
    };

    let client = Client::connect(through)?;
    for _ in 0..3 {
        let started = Instant::now();
        let reply = client.request(b"via the relay", &Backoff::default(), &Stop::new(), |_| {})?;
        println!(
            "{:?} in {:.1} ms",
            String::from_utf8_lossy(&reply.data),
            started.elapsed().as_secs_f64() * 1e3
        );
    }

    stop.stop();
    let counters = running.join().expect("the relay's thread")?;
    println!(
        "relay at {through}: {} requests forwarded, {} replies forwarded, {} session(s)",
        counters.up.forwarded, counters.down.forwarded, counters.sessions_opened
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
