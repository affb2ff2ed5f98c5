//! The tools, each built from the layers below: the seed's `client`, `ping`, `bench`,
//! `discover`, `mtu`, the one-way `stream`, the impairment `relay`, and `merge` of many
//! agents' results.

pub mod bench;
pub mod client;
pub mod discover;
pub mod merge;
pub mod monitor;
pub mod mtu;
pub mod ping;
pub mod relay;
pub mod stream;
