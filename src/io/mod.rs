//! The socket layer: every socket is set up here (`socket`), datagrams go in and out in
//! batches with their metadata (`datagram`), every wait goes through one poller (`wait`), and
//! ICMP errors are told apart (`icmp`). All the
//! platform code and `unsafe` of udpkit live in this folder.

pub(crate) mod datagram;
pub mod icmp;
pub(crate) mod socket;
pub(crate) mod wait;
