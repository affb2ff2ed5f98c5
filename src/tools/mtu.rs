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

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use serde::Serialize;

use crate::io::icmp::IcmpError;
use crate::io::state::SocketState;
use crate::load::engine::{Engine, Event, NotSent, Pace, Phase};
use crate::load::flow::Matching;
use crate::wire::{ID_LEN, Protocol};
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
    /// The longest reply that came back shorter than its probe: cut short with the probe's
    /// ID (an echo server that truncates what it echoes, xinetd's at 2,048 bytes), or a
    /// reflected packet shorter than its probe (the way back was not tried at that size).
    /// Where this is set, the server, not the path, may bound `payload`, and the path MTU
    /// is only known to be at least `path_mtu`.
    pub cut_to: Option<usize>,
}

/// The sizes the replies so far prove.
#[derive(Default)]
struct Proven {
    /// Largest size proven by a reply with its probe's ID, and by a reply without one.
    verified: usize,
    unverified: usize,
    /// The longest reply with a probe's ID that came back shorter than its probe.
    cut_to: Option<usize>,
}

impl Proven {
    /// The largest size proven, counting replies without ID only while the server has not
    /// shown that it repeats IDs.
    fn largest(&self, matching: Matching, protocol: Protocol) -> usize {
        // A proof that covers only part of a reply (authenticated STAMP's) leaves larger
        // sizes unverified even once replies are proven: they count, as unverified ones do
        // before proof, and the report says the answer is not authenticated.
        if matching == Matching::Ids && protocol.proof_covers().is_none() {
            self.verified
        } else {
            self.verified.max(self.unverified)
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
    /// A reply came back shorter than the probe: the way there carried it, the way back
    /// is not proven at this size (decisive at once: no more tries of it).
    Cut,
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

/// How long each try of a size waits for its answer unless told (`udpkit mtu -W`).
pub const DEFAULT_WAIT: Duration = Duration::from_millis(200);

/// What to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The server that answers the probes.
    pub target: SocketAddr,
    /// What it speaks (an echo or STAMP reply is as large as its probe; the seed's names
    /// the probe's size).
    pub protocol: Protocol,
    /// How long each try of a size waits for its answer (also the pace of the tries).
    pub wait: Duration,
}

impl Config {
    /// A search of the path to `target`, a server of the default protocol (the seed's),
    /// each try waiting [`DEFAULT_WAIT`], as `udpkit mtu` does.
    pub fn new(target: SocketAddr) -> Self {
        Config {
            target,
            protocol: Protocol::default(),
            wait: DEFAULT_WAIT,
        }
    }
}

/// One size the search tried, told as the search moves on to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Try {
    /// The probes' UDP payload, in bytes.
    pub size: usize,
    /// Probes of this size sent, retries included.
    pub tries: u32,
    /// What the tries of this size showed.
    pub outcome: Outcome,
}

impl Try {
    /// A reply proved this size.
    pub fn answered(&self) -> bool {
        self.outcome == Outcome::Answered
    }
}

/// How a size fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply proved it.
    Answered,
    /// Every try went unanswered.
    Unanswered,
    /// This host refused to send it (`EMSGSIZE`): larger than its interface or route.
    TooBigHere,
    /// A reply came back shorter than the probe (the server cut it, or a reflector's reply
    /// is shorter): not proven both ways.
    Cut,
}

/// Searches the path to `config.target` until the largest answered size is known, or
/// `stop` is set (then [`Error::Stopped`]); `on_try` hears of each size tried and how it
/// fared.
///
/// ```
/// use udpkit::{Server, Stop, mtu};
///
/// let server = Server::bind("127.0.0.1:0".parse()?)?.spawn();
/// let config = mtu::Config::new(server.local_addr());
/// let report = mtu::mtu(&config, &Stop::new(), |t| {
///     println!("{} bytes: {:?} after {} tries", t.size, t.outcome, t.tries);
/// })?;
/// assert_eq!(report.payload, 65_507); // loopback carries the largest UDP datagram
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn mtu(config: &Config, stop: &Stop, mut on_try: impl FnMut(&Try)) -> Result<Report, Error> {
    let Config {
        target,
        protocol,
        wait,
    } = *config;
    let pace = Pace::Interval(wait);
    let mut engine = Engine::exact(target, ID_LEN, pace, wait, stop)?;
    engine.set_protocol(protocol, (0, 0));
    SocketState::forbid_fragments(engine.socket(0), target)?;
    let overhead = if target.is_ipv4() { 28 } else { 48 };
    let largest = if target.is_ipv4() { 65_507 } else { 65_527 };
    let mut proven = Proven::default();
    // Tries at sizes that passed, and how many of those sizes there were.
    let (mut good_tries, mut good_answers) = (0u32, 0u32);

    // Sends tries of `size`, one every `wait`, until a reply proves it or `limit` tries
    // went unanswered; a late reply to an earlier, larger size is kept as evidence.
    let mut probe = |size: usize,
                     limit: u32,
                     engine: &mut Engine,
                     proven: &mut Proven|
     -> Result<Probe, Error> {
        let probes = engine.sent() as u32;
        if probes >= MAX_PROBES {
            return Err(Error::Invalid(format!(
                "the search for the path MTU to {target} took {MAX_PROBES} probes without an \
                 answer; the path loses too much to decide"
            )));
        }
        engine.set_size(size);
        let first_seq = engine.sent();
        let phase = Phase {
            pace,
            count: Some(u64::from(limit.min(MAX_PROBES - probes))),
            duration: None,
            timeout: wait,
        };
        let mut result = Probe::Silent;
        let mut refused = false;
        let mut matching = engine.matching();
        engine.run(&phase, |event| {
            let answered_seq = match *event {
                // A reply that should be as long as its probe (echo, STAMP, TWAMP-light)
                // but is shorter tested the way there at that size, not the way back: the
                // size is not proven both ways. (The seed's sentence is always short.)
                Event::Reply {
                    bytes,
                    reply_bytes,
                    duplicate: false,
                    ..
                } if protocol.replies_as_long_as_requests() && reply_bytes < bytes => {
                    proven.cut_to = proven.cut_to.max(Some(reply_bytes));
                    if bytes == size {
                        result = Probe::Cut;
                        return Ok(ControlFlow::Break(()));
                    }
                    None
                }
                Event::Reply {
                    seq,
                    bytes,
                    verified,
                    duplicate: false,
                    ..
                } => {
                    // A proof that covers fewer bytes than the probe proves the reply, not
                    // its size: one on the path may have cut the probe and padded the reply.
                    let verified = verified && protocol.proof_covers().is_none_or(|c| bytes <= c);
                    if verified {
                        proven.verified = proven.verified.max(bytes);
                        matching = Matching::Ids;
                    } else {
                        proven.unverified = proven.unverified.max(bytes);
                    }
                    Some(seq)
                }
                // A reply without ID naming this size, from a server that never repeated
                // an ID, when more than one try of it may be answered: the size passes,
                // unverified, though which try it answers is unknown.
                Event::Bad { names: Some(len) } if len == size && matching != Matching::Ids => {
                    proven.unverified = proven.unverified.max(len);
                    Some(first_seq)
                }
                Event::Cut { seq, got, .. } => {
                    proven.cut_to = proven.cut_to.max(Some(got));
                    if seq >= first_seq {
                        result = Probe::Cut;
                        return Ok(ControlFlow::Break(()));
                    }
                    None
                }
                Event::NotSent {
                    why: NotSent::TooBig,
                    ..
                } => {
                    result = Probe::TooBigHere;
                    return Ok(ControlFlow::Break(()));
                }
                Event::Unreachable {
                    kind: IcmpError::PortUnreachable,
                    ..
                } => {
                    refused = true;
                    return Ok(ControlFlow::Break(()));
                }
                _ => None,
            };
            if answered_seq.is_some_and(|seq| seq >= first_seq)
                && proven.largest(matching, protocol) >= size
            {
                result = Probe::Answered { tries: 0 };
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if refused {
            return Err(Error::Refused { server: target });
        }
        if stop.is_stopped() {
            return Err(Error::Stopped {
                what: format!("the search for the path MTU to {target}"),
            });
        }
        let mut tries = (engine.sent() - first_seq) as u32;
        let outcome = match result {
            Probe::Answered { .. } => {
                tries = tries.max(1);
                result = Probe::Answered { tries };
                Outcome::Answered
            }
            Probe::TooBigHere => Outcome::TooBigHere,
            Probe::Cut => Outcome::Cut,
            Probe::Silent => Outcome::Unanswered,
        };
        on_try(&Try {
            size,
            tries,
            outcome,
        });
        Ok(result)
    };
    // The smallest probe must pass: it measures the path's loss and whether the server
    // repeats IDs. Ten tries: at 30% loss each way, all ten fail by chance 0.1% of the time.
    match probe(ID_LEN, FIRST_TRIES, &mut engine, &mut proven)? {
        Probe::Answered { tries } => {
            good_tries += tries;
            good_answers += 1;
        }
        _ => {
            let tries = engine.sent() as u32;
            return Err(Error::NoReply {
                server: target,
                tries,
                waited: wait * tries,
                spoke: Some(protocol.as_str()),
            });
        }
    }
    let mut high = largest;
    let mut low;
    loop {
        low = proven.largest(engine.matching(), protocol).max(ID_LEN);
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
            match probe(low, FIRST_TRIES, &mut engine, &mut proven)? {
                Probe::Answered { tries } => {
                    good_tries += tries;
                    good_answers += 1;
                }
                _ => good_tries += FIRST_TRIES,
            }
            continue;
        };
        let mid = low + (high - low).div_ceil(2);
        match probe(mid, k, &mut engine, &mut proven)? {
            Probe::Answered { tries } => {
                good_tries += tries;
                good_answers += 1;
            }
            Probe::TooBigHere => {
                high = mid - 1;
                if let Some(m) = SocketState::path_mtu(engine.socket(0), target) {
                    high = high.min(m.saturating_sub(overhead)).max(low);
                }
            }
            Probe::Cut | Probe::Silent => high = mid - 1,
        }
    }
    let payload = low;
    let tally = engine.tally();
    Ok(Report {
        payload,
        path_mtu: payload + overhead,
        kernel_mtu: SocketState::path_mtu(engine.socket(0), target),
        probes: engine.sent() as u32,
        authenticated: engine.matching() == Matching::Ids
            && protocol
                .proof_covers()
                .is_none_or(|covered| payload <= covered),
        answered_share: f64::from(good_answers) / f64::from(good_tries.max(1)),
        tries_to_fail: tries_to_fail(good_answers, good_tries).unwrap_or(MAX_TRIES),
        forged: tally.forged,
        icmp_errors: tally.unreachable,
        cut_to: proven.cut_to,
    })
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
