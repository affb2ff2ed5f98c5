//! The socket layer and everything else that speaks to the operating system: every socket
//! is set up here (`socket`), datagrams go in and out in batches with their metadata
//! (`datagram`), every wait goes through one poller (`wait`) and every loop's stop through
//! one token (`stop`), ICMP errors are told apart (`icmp`), the host's clock says how good
//! it is (`clock`), files others wrote are opened so that they cannot hang or swell the
//! reader (`files`), and the process's own limits and timers are read and set (`process`).
//!
//! Promise: all the platform code of udpkit lives in this folder: every `unsafe` block,
//! every `libc` call and every test of an `errno` (`tests/layers.rs` fails otherwise).

pub mod clock;
pub(crate) mod datagram;
pub mod files;
pub mod icmp;
pub(crate) mod process;
pub(crate) mod socket;
pub mod state;
pub mod stop;
pub(crate) mod wait;
