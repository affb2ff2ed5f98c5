//! The socket layer: every socket is set up here (`socket`), datagrams go in and out in
//! batches with their metadata (`datagram`), every wait goes through one poller (`wait`),
//! ICMP errors are told apart (`icmp`), the host's clock says how good it is (`clock`), and
//! files others wrote are opened so that they cannot hang or swell the reader (`files`).
//! All the platform code and `unsafe` of udpkit live in this folder.

pub mod clock;
pub(crate) mod datagram;
pub mod files;
pub mod icmp;
pub(crate) mod socket;
pub(crate) mod wait;
