//! udpkit: the UDP server and client of *Foundations of Python Network Programming*,
//! chapter 2 (`udp_local.py`), in Rust: the same sentences and the same bytes on the wire,
//! with the chapter's fixes to the client and a server that survives any datagram.
//!
//! Start a server on a free port inside a test, and ask it something:
//!
//! ```
//! use udpkit::{Backoff, Client, Server};
//!
//! let server = Server::bind("127.0.0.1:0".parse()?)?.spawn(); // stops when dropped
//! let client = Client::connect(server.local_addr())?;
//! let reply = client.request(b"The time is now", &Backoff::default(), |_| {})?;
//! assert_eq!(reply.data, b"Your data was 15 bytes long");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A server with more than the seed's behaviour ([`Config`]: threads, a simulated drop
//! rate, a rate limit), counting what it does ([`Server::stats`]):
//!
//! ```
//! use udpkit::{Config, RateLimit, Server};
//!
//! let config = Config {
//!     threads: 2,
//!     rate_limit: RateLimit::PerSecond(1000.0),
//!     ..Config::new("127.0.0.1:0".parse()?)
//! };
//! let server = Server::with_config(config)?.spawn();
//! let client = udpkit::Client::connect(server.local_addr())?;
//! client.request(b"x", &udpkit::Backoff::default(), |_| {})?;
//! assert_eq!(server.stats().replied, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The measuring tools are library code too: [`ping::ping`], [`bench::bench`],
//! [`discover::discover`], [`mtu::mtu`] and [`relay::Relay`], each with its configuration
//! and report; ARCHITECTURE.md in the repository says where everything lives.

pub mod batch;
pub mod bench;
pub mod client;
pub mod console;
pub mod discover;
pub mod error;
pub mod flow;
pub mod impair;
pub mod latency;
pub mod mtu;
pub mod net;
pub mod ping;
pub mod protocol;
pub mod quote;
pub mod ratelimit;
pub mod relay;
pub mod server;
pub mod stats;
pub mod timestamp;

pub use client::Event as ClientEvent;
pub use client::{Attempt, Backoff, Client, Reply};
pub use error::Error;
pub use server::{Config, Observer, RateLimit, RunningServer, Server, Stop};
pub use stats::Stats;
