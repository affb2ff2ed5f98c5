//! One flow: a socket's requests, each with a request ID, and the matching of replies back
//! to them, for `ping` and `bench`.
//!
//! Promise: every reply is classified once: an answer (on time or late), a duplicate, a
//! forgery (a missing or wrong ID from a server that has repeated IDs before), or bad (not a
//! reply to a request of this size). Against a server that does not repeat IDs (the seed's,
//! the C yardstick) replies are matched by order instead. Memory is fixed at creation.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::latency::Latency;
use crate::protocol::{ID_LEN, RequestId, emit_request, parse_reply};

/// How replies are matched to requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matching {
    /// No reply yet: the first one decides.
    Unknown,
    /// The server repeats request IDs; a reply without the right one is forged.
    Ids,
    /// The server does not repeat IDs (or requests are too small to carry one): a reply
    /// answers the oldest request still waiting.
    Order,
}

impl Matching {
    /// `ids`, `order` or `unknown`, as the JSON reports say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Matching::Ids => "ids",
            Matching::Order => "order",
            Matching::Unknown => "unknown",
        }
    }
}

/// What a datagram from the server turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first reply to request `seq`; `late` if it came after its timeout.
    Answer { seq: u64, rtt: Duration, late: bool },
    /// Another reply to a request already answered.
    Duplicate { seq: u64, rtt: Duration },
    /// A reply that a server which repeats IDs did not send: no ID, a wrong nonce, or a
    /// sequence number never sent.
    Forged,
    /// Not a reply in the seed's form, or one naming another length than the request's.
    Bad,
    /// A reply that matches no request still remembered (an ID too old for the table, or
    /// nothing outstanding when matching by order).
    Unmatched,
}

/// The accounting of a run of requests, in one place for `ping` and `bench`: every request
/// sent is either received (its first reply, late or not) or lost; duplicates, forgeries,
/// bad datagrams, datagrams from foreign addresses and ICMP unreachables are counted apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub forged: u64,
    pub bad: u64,
    /// Datagrams to the client's port from anyone but the server: never taken as replies.
    pub foreign: u64,
    pub unreachable: u64,
}

impl Tally {
    /// Counts what a datagram turned out to be; an answer's round trip goes to `latency`.
    pub fn count(&mut self, outcome: Outcome, latency: &mut Latency) {
        match outcome {
            Outcome::Answer { rtt, late, .. } => {
                self.received += 1;
                self.late += u64::from(late);
                latency.record(rtt);
            }
            Outcome::Duplicate { .. } => self.duplicates += 1,
            Outcome::Forged => self.forged += 1,
            Outcome::Bad | Outcome::Unmatched => self.bad += 1,
        }
    }

    /// Requests never answered.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / self.sent as f64
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Waiting,
    TimedOut,
    Answered,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    sent_at: Instant,
    state: State,
}

/// The request side and reply matching of one flow; see the module's promise.
#[derive(Debug)]
pub struct Flow {
    nonce: u64,
    size: usize,
    next_seq: u64,
    /// Requests by `seq % slots.len()`; a power of two.
    slots: Box<[Slot]>,
    /// The oldest sequence number that may still be waiting (matching by order).
    oldest: u64,
    waiting: usize,
    matching: Matching,
}

impl Flow {
    /// A flow of `size`-byte requests that remembers the last `capacity` of them (rounded up
    /// to a power of two): at least the most requests ever in flight at once.
    pub fn new(size: usize, capacity: usize) -> Flow {
        let capacity = capacity.max(16).next_power_of_two();
        let free = Slot {
            seq: u64::MAX,
            sent_at: Instant::now(),
            state: State::Free,
        };
        Flow {
            nonce: fastrand::u64(..),
            size,
            next_seq: 0,
            slots: vec![free; capacity].into_boxed_slice(),
            oldest: 0,
            waiting: 0,
            matching: if size < ID_LEN {
                Matching::Order
            } else {
                Matching::Unknown
            },
        }
    }

    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// Requests sent and neither answered nor timed out.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }

    /// Writes the next request into `buf` and records it as sent at `sent_at` (for an open
    /// loop, the time it was meant to be sent). Returns its sequence number.
    pub fn next_request(&mut self, buf: &mut Vec<u8>, sent_at: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if !emit_request(
            buf,
            RequestId {
                nonce: self.nonce,
                seq,
            },
            self.size,
        ) {
            buf.clear();
            buf.resize(self.size, b'x');
        }
        let mask = self.slots.len() as u64 - 1;
        let slot = &mut self.slots[(seq & mask) as usize];
        if slot.state == State::Waiting {
            // Overwritten while waiting: the table is too small for what is in flight.
            self.waiting -= 1;
        }
        *slot = Slot {
            seq,
            sent_at,
            state: State::Waiting,
        };
        self.waiting += 1;
        seq
    }

    /// Forgets the request just written by `next_request` when sending it failed.
    pub fn unsend(&mut self, seq: u64) {
        if seq + 1 == self.next_seq {
            let mask = self.slots.len() as u64 - 1;
            let slot = &mut self.slots[(seq & mask) as usize];
            if slot.state == State::Waiting {
                self.waiting -= 1;
            }
            slot.state = State::Free;
            self.next_seq = seq;
        }
    }

    /// Marks requests sent before `now - timeout` as timed out; returns how many were.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        if self.waiting == 0 {
            return 0;
        }
        let mut expired = 0;
        let mask = self.slots.len() as u64 - 1;
        let first = self
            .oldest
            .max(self.next_seq.saturating_sub(self.slots.len() as u64));
        for seq in first..self.next_seq {
            let slot = &mut self.slots[(seq & mask) as usize];
            if slot.state == State::Waiting && slot.seq == seq {
                if now.saturating_duration_since(slot.sent_at) < timeout {
                    break;
                }
                slot.state = State::TimedOut;
                self.waiting -= 1;
                expired += 1;
            }
        }
        self.advance_oldest();
        expired
    }

    /// When the oldest request still waiting was sent.
    pub fn oldest_waiting_since(&self) -> Option<Instant> {
        let mask = self.slots.len() as u64 - 1;
        (self.oldest..self.next_seq)
            .map(|seq| self.slots[(seq & mask) as usize])
            .find(|s| s.state == State::Waiting)
            .map(|s| s.sent_at)
    }

    fn advance_oldest(&mut self) {
        let mask = self.slots.len() as u64 - 1;
        self.oldest = self
            .oldest
            .max(self.next_seq.saturating_sub(self.slots.len() as u64));
        while self.oldest < self.next_seq {
            let slot = self.slots[(self.oldest & mask) as usize];
            if slot.seq == self.oldest && slot.state == State::Waiting {
                break;
            }
            self.oldest += 1;
        }
    }

    /// Classifies `data`, received from the server at `now`.
    pub fn on_reply(&mut self, data: &[u8], now: Instant) -> Outcome {
        let Some(reply) = parse_reply(data) else {
            return if self.matching == Matching::Ids {
                Outcome::Forged
            } else {
                Outcome::Bad
            };
        };
        match (self.matching, reply.id) {
            (Matching::Ids, None) => return Outcome::Forged,
            (Matching::Ids | Matching::Unknown, Some(id))
                if id.nonce != self.nonce || id.seq >= self.next_seq =>
            {
                return Outcome::Forged;
            }
            (Matching::Unknown, Some(_)) => self.matching = Matching::Ids,
            (Matching::Unknown, None) => self.matching = Matching::Order,
            _ => {}
        }
        if reply.len != self.size {
            return Outcome::Bad;
        }
        let seq = match (self.matching, reply.id) {
            (Matching::Ids, Some(id)) => id.seq,
            _ => {
                self.advance_oldest();
                if self.oldest >= self.next_seq {
                    return Outcome::Unmatched;
                }
                self.oldest
            }
        };
        let mask = self.slots.len() as u64 - 1;
        let slot = &mut self.slots[(seq & mask) as usize];
        if slot.seq != seq {
            return Outcome::Unmatched;
        }
        let rtt = now.saturating_duration_since(slot.sent_at);
        match slot.state {
            State::Waiting => {
                slot.state = State::Answered;
                self.waiting -= 1;
                self.advance_oldest();
                Outcome::Answer {
                    seq,
                    rtt,
                    late: false,
                }
            }
            State::TimedOut => {
                slot.state = State::Answered;
                Outcome::Answer {
                    seq,
                    rtt,
                    late: true,
                }
            }
            State::Answered => Outcome::Duplicate { seq, rtt },
            State::Free => Outcome::Unmatched,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_REPLY, emit_reply, request_id};

    /// What a udpkit server would answer to `request`.
    fn answer(request: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(&mut buf, request.len(), request_id(request));
        buf[..n].to_vec()
    }

    /// What the seed's server would answer.
    fn seed_answer(request: &[u8]) -> Vec<u8> {
        crate::protocol::reply_text(request.len()).into_bytes()
    }

    fn send(flow: &mut Flow, t: Instant) -> Vec<u8> {
        let mut buf = Vec::new();
        flow.next_request(&mut buf, t);
        buf
    }

    #[test]
    fn ids_match_replies_in_any_order_and_spot_duplicates() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        let b = send(&mut flow, t);
        let later = t + Duration::from_millis(5);
        assert_eq!(
            flow.on_reply(&answer(&b), later),
            Outcome::Answer {
                seq: 1,
                rtt: Duration::from_millis(5),
                late: false
            }
        );
        assert_eq!(flow.matching(), Matching::Ids);
        assert!(matches!(
            flow.on_reply(&answer(&a), later),
            Outcome::Answer { seq: 0, .. }
        ));
        assert!(matches!(
            flow.on_reply(&answer(&a), later),
            Outcome::Duplicate { seq: 0, .. }
        ));
        assert_eq!(flow.waiting(), 0);
    }

    #[test]
    fn once_ids_are_repeated_a_reply_without_the_right_one_is_forged() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        let _b = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&answer(&a), t),
            Outcome::Answer { .. }
        ));
        // The seed's sentence, right length, no ID: what a forger without the nonce sends.
        assert_eq!(flow.on_reply(&seed_answer(&a), t), Outcome::Forged);
        let mut other = Flow::new(38, 64);
        let stranger = send(&mut other, t);
        assert_eq!(flow.on_reply(&answer(&stranger), t), Outcome::Forged);
        assert_eq!(flow.on_reply(b"garbage", t), Outcome::Forged);
        assert_eq!(flow.waiting(), 1, "the second request still waits");
    }

    #[test]
    fn a_server_that_does_not_repeat_ids_is_matched_by_order() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        let b = send(&mut flow, t + Duration::from_millis(1));
        let now = t + Duration::from_millis(3);
        assert_eq!(
            flow.on_reply(&seed_answer(&a), now),
            Outcome::Answer {
                seq: 0,
                rtt: Duration::from_millis(3),
                late: false
            }
        );
        assert_eq!(flow.matching(), Matching::Order);
        assert!(matches!(
            flow.on_reply(&seed_answer(&b), now),
            Outcome::Answer { seq: 1, .. }
        ));
        assert_eq!(flow.on_reply(&seed_answer(&b), now), Outcome::Unmatched);
        assert_eq!(
            flow.on_reply(b"Your data was 3 bytes long", now),
            Outcome::Bad
        );
    }

    #[test]
    fn small_requests_carry_no_id_and_match_by_order() {
        let mut flow = Flow::new(5, 16);
        let req = send(&mut flow, Instant::now());
        assert_eq!(req, b"xxxxx");
        assert_eq!(flow.matching(), Matching::Order);
        assert!(matches!(
            flow.on_reply(&seed_answer(&req), Instant::now()),
            Outcome::Answer { seq: 0, .. }
        ));
    }

    #[test]
    fn timeouts_free_the_window_and_a_late_reply_still_counts() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        assert_eq!(
            flow.expire(t + Duration::from_millis(50), Duration::from_millis(100)),
            0
        );
        assert_eq!(
            flow.expire(t + Duration::from_millis(150), Duration::from_millis(100)),
            1
        );
        assert_eq!(flow.waiting(), 0);
        assert!(matches!(
            flow.on_reply(&answer(&a), t + Duration::from_millis(200)),
            Outcome::Answer {
                seq: 0,
                late: true,
                ..
            }
        ));
    }

    #[test]
    fn a_wrong_length_is_bad() {
        let t = Instant::now();
        let mut flow = Flow::new(40, 16);
        let a = send(&mut flow, t);
        let mut wrong = a.clone();
        wrong.pop();
        assert_eq!(flow.on_reply(&answer(&wrong), t), Outcome::Bad);
    }
}
