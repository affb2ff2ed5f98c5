//! udpkit: the UDP server and client of *Foundations of Python Network Programming*,
//! chapter 2 (`udp_local.py`), in Rust: the same sentences and the same bytes on the wire,
//! with the chapter's fixes to the client and a server that survives any datagram.
//!
//! Start a server on a free port inside a test, and ask it something:
//!
//! ```
//! use udpkit::{Backoff, Client, Server, Stop};
//!
//! let server = Server::bind("127.0.0.1:0".parse()?)?.spawn(); // stops when dropped
//! let client = Client::connect(server.local_addr())?;
//! let reply = client.request(b"The time is now", &Backoff::default(), &Stop::new(), |_| {})?;
//! assert_eq!(reply.data, b"Your data was 15 bytes long");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A server with more than the seed's behaviour ([`ServerConfig`]: threads, a simulated
//! drop rate, a rate limit), counting what it does ([`Server::stats`]):
//!
//! ```
//! use udpkit::{RateLimit, Server, ServerConfig};
//!
//! let config = ServerConfig {
//!     threads: 2,
//!     rate_limit: RateLimit::PerSecond(1000.0),
//!     ..ServerConfig::new("127.0.0.1:0".parse()?)
//! };
//! let server = Server::with_config(config)?.spawn();
//! let client = udpkit::Client::connect(server.local_addr())?;
//! client.request(b"x", &udpkit::Backoff::default(), &udpkit::Stop::new(), |_| {})?;
//! assert_eq!(server.stop().replied, 1); // final figures, once its threads have ended
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The measuring tools are library code too, each of one shape: a configuration, the
//! caller's [`Stop`] (set from any thread, it ends the run promptly), and a callback that
//! hears of the run as it goes, returning a report: [`ping::ping`], [`bench::bench`],
//! [`stream::stream`], [`discover::discover`] and [`mtu::mtu`]; [`Client::request`] takes a
//! stop too. [`relay::Relay`] is bound, then run until its stop; [`merge::merge_files`]
//! merges the interval logs of [`bench::Report::write_interval_log`];
//! [`monitor::Monitor`] watches many targets for ever on a thread of its own, and
//! [`export`] shows its counters (and a server's, a relay's) as Prometheus metrics. Ping,
//! bench and mtu share one load engine (ARCHITECTURE.md). The repository's `examples/` has one
//! small program per tool, each against a server of its own on loopback
//! (`cargo run --example mtu`); ARCHITECTURE.md says where everything lives.
//!
//! The library does not depend on the command line's crates: build it with
//! `default-features = false` (the `cli` feature brings clap, indicatif and signal-hook for
//! the `udpkit` binary).

#![warn(missing_docs)]

// The layers, each using only those above it in this list.
pub mod addr;
pub mod error;
pub(crate) mod io;
pub mod limits;
pub(crate) mod load;
pub mod measure;
pub(crate) mod serve;
pub(crate) mod shape;

mod tools;
pub mod wire;

pub mod export;

pub use error::Error;
pub use io::icmp::{IcmpCounts, IcmpError};
pub use io::socket::SERVER_RECEIVE_BUFFER;
pub use io::state::Refusal;
pub use io::stop::Stop;
pub use load::engine::{Offload, Requests};
pub use load::flow::{Matching, Tally};
pub use serve::{Config as ServerConfig, InUse, Observer, RateLimit, RunningServer, Server, Stats};
pub use shape::impair::Settings as Impairment;
pub use shape::ratelimit::Prefix;
pub use tools::client::{Attempt, Backoff, Client, Event as ClientEvent, Reply};
pub use tools::{bench, client, discover, merge, monitor, mtu, ping, relay, stream};

/// The pieces the fuzz targets (`fuzz/`) drive directly: not part of the API, and free to
/// change.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::load::flow::Flow;
    pub use crate::serve::streams::Streams;
}
