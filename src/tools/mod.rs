//! The tools, each built from the layers below: the seed's `client`, `ping`, `bench`,
//! `discover`, `mtu`, the one-way `stream` and the impairment `relay`.

pub mod bench;
pub mod client;
pub mod discover;
pub mod mtu;
pub mod ping;
pub mod relay;
pub mod stream;
