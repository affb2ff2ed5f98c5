//! What udpkit does to traffic on purpose: impairments (`impair`: loss, duplication,
//! reordering, delay, a rate) and the per-prefix rate limit (`ratelimit`) that keeps a
//! server or a relay from being an amplifier. Used by the server and the relay alike.

pub mod impair;
pub mod ratelimit;
