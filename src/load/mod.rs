//! Load generation: requests out and replies matched back to them (`flow`), the statistics
//! of their round trips (`latency`) and of STAMP's timestamps (`stamp`), the one loop
//! that drives them at a pace (`engine`), under `ping`, `bench` and `mtu`; and what
//! arrives of a one-way stream (`arrivals`), for `stream`; interval histogram logs
//! (`hlog`), for `bench --hlog` and `merge`.

pub mod arrivals;
pub mod engine;
pub mod flow;
pub mod hlog;
pub mod latency;
pub mod pace;
pub mod plot;
pub mod stamp;
