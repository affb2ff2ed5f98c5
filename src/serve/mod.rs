//! Serving: the seed's server at the speed of the kernel (`server`), speaking the seed's
//! protocol, echo or STAMP, a stateful STAMP reflector's sessions (`sessions`), the
//! server's side of `udpkit stream` (`streams`), and its counters (`stats`).

mod server;
pub mod sessions;
mod stats;
pub mod streams;

pub use crate::shape::ratelimit::RateLimit;
pub use server::{Config, Observer, RunningServer, Server};
pub use stats::{InUse, Stats};
