//! Load generation's building blocks: requests out and replies matched back to them
//! (`flow`), and the statistics of their round trips (`latency`).

pub mod flow;
pub mod latency;
