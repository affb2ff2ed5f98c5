//! Load generation: requests out and replies matched back to them (`flow`), the one loop
//! that drives them at a pace (`engine`), under `ping`, `bench` and `mtu`; the one pacer
//! (`pace`) and the one sender of numbered datagrams (`send`), under `stream` and the
//! server's reverse streams.

pub mod engine;
pub mod flow;
pub mod pace;
pub(crate) mod send;
pub mod watch;
