//! The seed's client with chapter 2's fixes: a request to a server on a free loopback port,
//! retransmitted with exponential backoff, with each transmission told as it goes.
//!
//! `cargo run --example client`

use udpkit::{Backoff, Client, ClientEvent, Server, Stop};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind("127.0.0.1:0".parse()?)?.spawn(); // stops when dropped
    let client = Client::connect(server.local_addr())?;
    // A stop another thread could set to give up on the request; nobody does here.
    let stop = Stop::new();
    let reply = client.request(b"The time is now", &Backoff::default(), &stop, |event| {
        if let ClientEvent::Sent(attempt) = event {
            println!(
                "try {} waits {:?} for the reply",
                attempt.number, attempt.wait
            );
        }
    })?;
    println!(
        "{} replied {:?} after {} tries",
        reply.from,
        String::from_utf8_lossy(&reply.data),
        reply.attempts
    );
    Ok(())
}

#[test]
fn the_example_runs() {
    main().expect("the example runs");
}
