//! Measurement, apart from what makes the traffic: round-trip statistics (`latency`), what
//! arrives of a one-way stream (`arrivals`), what STAMP's timestamps say (`stamp`), interval
//! histogram logs (`hlog`, for `bench --hlog` and `merge`), and their pictures (`plot`).
//! The load generator and the server both record into these; none of them touches a
//! socket.

pub(crate) mod arrivals;
pub mod buckets;
pub mod hlog;
pub mod latency;
pub mod plot;
pub mod stamp;
