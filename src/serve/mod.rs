//! Serving: the seed's server at the speed of the kernel (`server`), speaking the seed's
//! protocol, echo or STAMP, the per-prefix rate limit that keeps it from being an
//! amplifier (`ratelimit`), a stateful STAMP reflector's sessions (`sessions`), the
//! server's side of `udpkit stream` (`streams`), and its counters (`stats`).

pub(crate) mod ratelimit;
mod server;
pub mod sessions;
mod stats;
pub mod streams;

pub use ratelimit::Prefix;
pub use server::{Config, Observer, RateLimit, RunningServer, Server};
pub use stats::Stats;

/// The receive buffer a server asks the kernel for.
pub use crate::io::socket::SERVER_RECEIVE_BUFFER as RECEIVE_BUFFER;
