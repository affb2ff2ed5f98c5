//! `udpkit mtu`: the largest datagram that reaches a server and comes back answered, with
//! fragmentation forbidden, found by a binary search of probes in the spirit of RFC 8899
//! (DPLPMTUD): only an answered probe proves a size, never the kernel's cache alone.
//!
//! Promise: a size passes only on a reply that names it and carries the probe's ID, once
//! the server has shown that it repeats IDs (a forger without the 64-bit nonce cannot make
//! a size pass); against a server that never repeats IDs, replies naming the size count and
//! the report says they are unauthenticated. A size fails only after enough unanswered
//! tries that, at the loss measured on sizes that pass (a conservative bound of it), a size
//! that passes would have failed them with a probability under [`CONFIDENCE`]; when that
//! takes more than [`MAX_TRIES`] tries, the search says it cannot decide instead of
//! guessing. Probes ignore the kernel's path-MTU cache (`IP_PMTUDISC_PROBE`), so a spoofed
//! ICMP "fragmentation needed" cannot shrink them; such errors are counted.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::io::icmp::IcmpError;
use crate::io::socket as net;
use crate::io::wait::Receiver;
use crate::wire::{ID_LEN, RECV_BUFFER, RequestId, emit_request, parse_reply};
use crate::{Error, Stop};

/// The chance, per size declared too big, that it was in fact answered-able and only
/// unlucky, that the search accepts.
pub const CONFIDENCE: f64 = 1e-3;

/// The most tries of one size; needing more means the path loses too much to decide.
pub const MAX_TRIES: u32 = 40;

/// Tries of the smallest probe before the server is called silent.
pub const FIRST_TRIES: u32 = 10;

/// Tries at sizes known to pass, at most, spent measuring the loss before the search
/// gives up as undecidable.
pub const EVIDENCE_TRIES: u32 = 120;

/// The most probes of a whole search.
pub const MAX_PROBES: u32 = 2000;

/// What the search found.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The largest UDP payload that came back answered.
    pub payload: usize,
    /// The path MTU it implies: payload + 28 bytes over IPv4, + 48 over IPv6.
    pub path_mtu: usize,
    /// What the kernel says of the route after the search (`IP_MTU`/`IPV6_MTU`).
    pub kernel_mtu: Option<usize>,
    /// Probes sent, retries included.
    pub probes: u32,
    /// Every size that passed was proven by a reply with the probe's ID.
    pub authenticated: bool,
    /// Of the tries at sizes that passed, the share answered: the path's round-trip
    /// delivery as measured.
    pub answered_share: f64,
    /// Unanswered tries it took, at the end, to call a size too big.
    pub tries_to_fail: u32,
    /// Replies ignored: without the right ID from a server that repeats IDs.
    pub forged: u64,
    /// ICMP errors that came back (spoofable; never taken as an answer).
    pub icmp_errors: u64,
}

/// What the replies so far prove.
struct Evidence {
    nonce: u64,
    next_seq: u64,
    /// Sizes by sequence number, for every probe sent.
    sizes: HashMap<u64, usize>,
    /// The server has repeated an ID: only IDs count.
    ids: bool,
    /// Largest size proven by a reply with its ID, and by a reply without one.
    verified: usize,
    unverified: usize,
    forged: u64,
    icmp_errors: u64,
}

impl Evidence {
    fn largest(&self) -> usize {
        if self.ids {
            self.verified
        } else {
            self.verified.max(self.unverified)
        }
    }

    /// Whether a reply has proved `size` (or more).
    fn proves(&self, size: usize) -> bool {
        self.largest() >= size
    }

    /// Takes a reply into account; returns the first sequence number it could answer
    /// (by its ID, or by its length), if any.
    fn on_reply(&mut self, data: &[u8]) -> Option<u64> {
        let Some(reply) = parse_reply(data) else {
            self.forged += u64::from(self.ids);
            return None;
        };
        match reply.id {
            Some(id) if id.nonce == self.nonce && self.sizes.get(&id.seq) == Some(&reply.len) => {
                self.ids = true;
                self.verified = self.verified.max(reply.len);
                Some(id.seq)
            }
            Some(_) => {
                self.forged += 1;
                None
            }
            None if self.ids => {
                self.forged += 1;
                None
            }
            None => {
                let seq = self
                    .sizes
                    .iter()
                    .filter(|&(_, &s)| s == reply.len)
                    .map(|(&seq, _)| seq)
                    .min()?;
                self.unverified = self.unverified.max(reply.len);
                Some(seq)
            }
        }
    }
}

/// How one size fared.
enum Probe {
    Answered {
        tries: u32,
    },
    /// The local interface refused it (`EMSGSIZE` on send): larger than this host sends.
    TooBigHere,
    Silent,
}

/// The tries without an answer after which a size is called too big, given `answered` of
/// `tries` answered at sizes that passed: the Wilson lower bound of the answered share
/// (z = 2), then enough tries that all fail by chance with probability under CONFIDENCE.
/// `None` when that would take more than MAX_TRIES.
pub fn tries_to_fail(answered: u32, tries: u32) -> Option<u32> {
    let n = f64::from(tries.max(1));
    let p = f64::from(answered.min(tries)) / n;
    let z2 = 4.0;
    let low = (p + z2 / (2.0 * n) - 2.0 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt())
        / (1.0 + z2 / n);
    if low <= 0.0 {
        return None;
    }
    let k = if low >= 1.0 {
        1.0
    } else {
        (CONFIDENCE.ln() / (1.0 - low).ln()).ceil()
    };
    let k = (k as u32).max(3);
    (k <= MAX_TRIES).then_some(k)
}

/// Searches the path to `target`; each try of a size waits `wait` for its answer.
pub fn mtu(target: SocketAddr, wait: Duration) -> Result<Report, Error> {
    let socket = net::connect(target)?;
    forbid_fragments(&socket, target)?;
    let overhead = if target.is_ipv4() { 28 } else { 48 };
    let largest = if target.is_ipv4() { 65_507 } else { 65_527 };
    let mut evidence = Evidence {
        nonce: fastrand::u64(..),
        next_seq: 0,
        sizes: HashMap::new(),
        ids: false,
        verified: 0,
        unverified: 0,
        forged: 0,
        icmp_errors: 0,
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut rx = Receiver::new(&socket, &Stop::new())
        .map_err(|e| Error::io(format!("cannot wait for answers from {target}"), e))?;
    let mut probes = 0u32;
    // Tries at sizes that passed, and how many of those sizes there were.
    let (mut good_tries, mut good_answers) = (0u32, 0u32);

    // Sends tries of `size` until a reply proves it or `limit` tries went unanswered.
    let mut probe = |size: usize,
                     limit: u32,
                     evidence: &mut Evidence,
                     probes: &mut u32|
     -> Result<Probe, Error> {
        let mut request = Vec::with_capacity(size);
        let first_seq = evidence.next_seq;
        for tries in 1..=limit {
            if *probes >= MAX_PROBES {
                return Err(Error::Invalid(format!(
                    "the search for the path MTU to {target} took {MAX_PROBES} probes without \
                     an answer; the path loses too much to decide"
                )));
            }
            *probes += 1;
            let seq = evidence.next_seq;
            evidence.next_seq += 1;
            evidence.sizes.insert(seq, size);
            emit_request(
                &mut request,
                RequestId {
                    nonce: evidence.nonce,
                    seq,
                },
                size,
            );
            match socket.send(&request) {
                // Sent, or (a full send buffer) not: either way the try is spent.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if is_too_big(&e) => return Ok(Probe::TooBigHere),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Err(Error::Refused { server: target });
                }
                Err(e) if IcmpError::of(&e).is_some() => evidence.icmp_errors += 1,
                Err(e) => return Err(Error::io(format!("cannot send to {target}"), e)),
            }
            let deadline = Instant::now() + wait;
            while let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            {
                match rx.recv(&mut buf, left) {
                    Ok(None) => {}
                    Ok(Some(len)) => {
                        // Only an answer to this probe's own tries measures the path; a
                        // late answer to an earlier, larger size is kept as evidence.
                        let answered = evidence.on_reply(&buf[..len]);
                        if answered.is_some_and(|seq| seq >= first_seq) && evidence.proves(size) {
                            return Ok(Probe::Answered { tries });
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(Error::Refused { server: target });
                    }
                    // ICMP errors (too big, unreachable) can be forged: counted, not trusted.
                    Err(e) if IcmpError::of(&e).is_some() => evidence.icmp_errors += 1,
                    Err(e) => return Err(Error::io(format!("cannot receive from {target}"), e)),
                }
            }
        }
        Ok(Probe::Silent)
    };

    // The smallest probe must pass: it measures the path's loss and whether the server
    // repeats IDs. Ten tries: at 30% loss each way, all ten fail by chance 0.1% of the time.
    match probe(ID_LEN, FIRST_TRIES, &mut evidence, &mut probes)? {
        Probe::Answered { tries } => {
            good_tries += tries;
            good_answers += 1;
        }
        _ => {
            return Err(Error::NoReply {
                server: target,
                tries: probes,
                waited: wait * probes,
            });
        }
    }
    let mut high = largest;
    let mut low;
    loop {
        low = evidence.largest().max(ID_LEN);
        if low >= high {
            // A late answer proved a size that a silent search had called too big.
            if low > high {
                high = low;
                continue;
            }
            break;
        }
        let Some(k) = tries_to_fail(good_answers, good_tries) else {
            if good_tries >= EVIDENCE_TRIES {
                return Err(Error::Invalid(format!(
                    "cannot decide the path MTU to {target}: only {good_answers} of \
                     {good_tries} probes at sizes that pass were answered; the path loses too \
                     much (try a longer -W, or a quieter time)"
                )));
            }
            // Too little known of the loss: measure it on a size known to pass.
            match probe(low, FIRST_TRIES, &mut evidence, &mut probes)? {
                Probe::Answered { tries } => {
                    good_tries += tries;
                    good_answers += 1;
                }
                _ => good_tries += FIRST_TRIES,
            }
            continue;
        };
        let mid = low + (high - low).div_ceil(2);
        match probe(mid, k, &mut evidence, &mut probes)? {
            Probe::Answered { tries } => {
                good_tries += tries;
                good_answers += 1;
            }
            Probe::TooBigHere => {
                high = mid - 1;
                if let Some(m) = kernel_mtu(&socket, target) {
                    high = high.min(m.saturating_sub(overhead)).max(low);
                }
            }
            Probe::Silent => high = mid - 1,
        }
    }
    let payload = low;
    Ok(Report {
        payload,
        path_mtu: payload + overhead,
        kernel_mtu: kernel_mtu(&socket, target),
        probes,
        authenticated: evidence.ids,
        answered_share: f64::from(good_answers) / f64::from(good_tries.max(1)),
        tries_to_fail: tries_to_fail(good_answers, good_tries).unwrap_or(MAX_TRIES),
        forged: evidence.forged,
        icmp_errors: evidence.icmp_errors,
    })
}

fn is_too_big(e: &io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EMSGSIZE);
    #[cfg(not(unix))]
    return e.kind() == io::ErrorKind::InvalidInput;
}

/// Sets the don't-fragment bit (IPv4) or forbids fragmentation (IPv6), ignoring the
/// kernel's cached path MTU (`IP_PMTUDISC_PROBE`), which a forged ICMP can lower.
fn forbid_fragments(socket: &UdpSocket, target: SocketAddr) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let (level, name, value) = if target.is_ipv4() {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            )
        } else {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )
        };
        net::set_int_option(socket, level, name, value)
            .map_err(|e| Error::io("cannot forbid fragmentation", e))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        Err(Error::io(
            "cannot forbid fragmentation on this system",
            io::Error::from(io::ErrorKind::Unsupported),
        ))
    }
}

/// The kernel's MTU for the connected route (`IP_MTU`/`IPV6_MTU`), Linux only.
fn kernel_mtu(socket: &UdpSocket, target: SocketAddr) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let (level, name) = if target.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let value = net::get_int_option(socket, level, name).ok()?;
        usize::try_from(value).ok().filter(|v| *v > 0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, target);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_path_needs_few_tries_a_lossy_one_more_and_a_dead_one_cannot_decide() {
        assert_eq!(tries_to_fail(30, 30), Some(4));
        let lossy = tries_to_fail(20, 41).unwrap(); // half answered: 30% lost each way
        assert!((12..=MAX_TRIES).contains(&lossy), "{lossy}");
        // The bound is conservative: a size that passes fails `lossy` tries in a row at the
        // true answered share (0.49) with probability under CONFIDENCE.
        assert!(0.51f64.powi(lossy as i32) < CONFIDENCE);
        assert_eq!(tries_to_fail(1, 30), None);
        assert_eq!(tries_to_fail(0, 0), None);
    }

    #[test]
    fn with_little_evidence_the_bound_is_cautious() {
        // One answer at the first try says little: many tries before calling a size too big.
        assert!(tries_to_fail(1, 1).is_none_or(|k| k >= 10));
    }
}
