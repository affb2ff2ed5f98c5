//! One flow: a socket's requests, each with a request ID, and the matching of replies back
//! to them, for `ping` and `bench`.
//!
//! Promise: every reply is credited to the request it answers or to none. A reply with the
//! flow's ID names its request; once one has come (proof that the server repeats IDs, since
//! an off-path forger cannot know the 64-bit nonce), a reply without the right ID is never
//! accepted again. Until then, and against a server that never repeats IDs (the seed's, the
//! C yardstick), a reply is matched by the length it names: requests are sent with distinct
//! lengths (`size`, `size + 1`, … as many as the flow remembers), so a reply is credited
//! only to the one request of that length, never to an older one after a loss. Such replies
//! are *unverified*: when proof of IDs arrives they are revoked ([`Flow::take_revoked`]) and
//! their requests wait again. Memory is fixed at creation.
//!
//! The protocol ([`Protocol`]) writes the requests and says what a reply claims; this
//! module decides whether the claim holds. With echo a reply is the request itself: the ID it carries names
//! its request from the first reply on. With STAMP a reply echoes the request's sequence
//! number and timestamp, which name it exactly; it is proven genuine by udpkit's nonce in
//! the Extra Padding TLV, which a reflector that echoes TLVs sends back (RFC 8972), and until
//! such a reply comes (or against a reflector that does not echo TLVs) a reply is
//! unverified, as above.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::io::icmp::{IcmpCounts, IcmpError};
use crate::measure::latency::{Latency, Record};
use crate::measure::stamp::StampSample;
use crate::wire::protocol::{Claim, Request, Session};
use crate::wire::stamp::{CosSeen, NtpTime, Reflected};
use crate::wire::{ID_LEN, MAX_IPV4_PAYLOAD, Protocol, RequestId};

/// How replies are matched to requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matching {
    /// No reply with the flow's ID yet: replies without one are matched by length and
    /// unverified.
    Unknown,
    /// The server repeats request IDs; a reply without the right one is forged.
    Ids,
    /// Requests too small to carry an ID: replies are matched by length only.
    Length,
    /// STAMP requests too small for udpkit's nonce: replies are matched by the sequence
    /// number and timestamp they echo, and cannot be authenticated.
    Sequence,
}

impl Matching {
    /// `ids`, `length` or `unknown`, as the JSON reports say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Matching::Ids => "ids",
            Matching::Length => "length",
            Matching::Sequence => "sequence",
            Matching::Unknown => "unknown",
        }
    }

    /// How a run's flows together matched: `ids` only if every flow proved IDs; otherwise
    /// `length` (`sequence` for STAMP) when any unverified reply was accepted.
    pub fn settled(flows: impl IntoIterator<Item = Matching>, unverified: u64) -> Matching {
        let mut all_ids = true;
        let mut any = false;
        let mut sequence = false;
        for m in flows {
            any = true;
            all_ids &= m == Matching::Ids;
            sequence |= m == Matching::Sequence;
        }
        if any && all_ids {
            Matching::Ids
        } else if sequence && unverified > 0 {
            Matching::Sequence
        } else if unverified > 0 {
            Matching::Length
        } else {
            Matching::Unknown
        }
    }
}

/// What a datagram from the server turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first reply to request `seq`; `late` if it came after its timeout; `verified`
    /// if it carried the request's ID.
    Answer {
        seq: u64,
        rtt: Duration,
        late: bool,
        verified: bool,
        /// STAMP: what the reflector said beyond the round trip.
        stamp: Option<StampSample>,
    },
    /// Another reply to a request already answered.
    Duplicate { seq: u64, rtt: Duration },
    /// A reply that a server which repeats IDs did not send: no ID, a wrong nonce, or a
    /// sequence number never sent.
    Forged,
    /// Not a reply in the seed's form, or one naming a length that no request had.
    Bad,
    /// A reply that proves it answers request `seq` (its ID) but names or has another
    /// length, `got`: the request or the reply was cut short on the way (an echo server's
    /// buffer, a truncating middlebox). Counted as bad, never as an answer.
    Cut { seq: u64, got: usize },
    /// A reply that matches no request still remembered, or more than one (by length).
    Unmatched,
}

/// The accounting of a run of requests, in one place for `ping` and `bench`: every request
/// sent is either received (its first reply, late or not) or lost; duplicates, forgeries,
/// bad datagrams, datagrams from foreign addresses and ICMP errors are counted apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests sent, counting those the kernel refused (`not_sent`).
    pub sent: u64,
    /// Requests answered: first replies, late or not, verified or not.
    pub received: u64,
    /// Of `received`: answers matched by length alone, whose authenticity is unknown.
    pub unverified: u64,
    /// Replies beyond the first to a request already answered.
    pub duplicates: u64,
    /// Of `received`: first replies that came after their request's timeout.
    pub late: u64,
    /// Replies a server that repeats request IDs did not send (no ID, a wrong nonce, a
    /// sequence number never sent), and unverified answers revoked once it proved so.
    pub forged: u64,
    /// Datagrams from the server that are not replies in its protocol's form, or answer
    /// no request (`unmatched` among them).
    pub bad: u64,
    /// Datagrams to the client's port from anyone but the server: never taken as replies.
    pub foreign: u64,
    /// ICMP errors that came back (port, host or network unreachable, prohibited, ...).
    pub unreachable: u64,
    /// The same, by kind.
    pub icmp: IcmpCounts,
    /// Of `sent`: requests the kernel refused to send (a full buffer, a firewall, too big);
    /// they count as lost.
    pub not_sent: u64,
    /// Of `bad`: replies that answer no request still remembered, or (matched by length)
    /// could answer more than one; never credited to either.
    pub unmatched: u64,
    /// Of `bad`: replies with their request's ID but another length (cut short on the
    /// way, or by the server).
    pub cut: u64,
    /// Requests the pacer skipped after a stall (open loop, interval): they could not go on
    /// time, so they never went (neither sent nor lost).
    pub skipped: u64,
}

impl Tally {
    /// Counts what a datagram turned out to be; a verified answer's round trip goes to
    /// `latency`, an unverified one's to `unverified` (merged at the end if never revoked).
    pub fn count(
        &mut self,
        outcome: Outcome,
        latency: &mut impl Record,
        unverified: &mut impl Record,
    ) {
        match outcome {
            Outcome::Answer {
                rtt,
                late,
                verified,
                ..
            } => {
                self.received += 1;
                self.late += u64::from(late);
                if verified {
                    latency.record(rtt);
                } else {
                    self.unverified += 1;
                    unverified.record(rtt);
                }
            }
            Outcome::Duplicate { .. } => self.duplicates += 1,
            Outcome::Forged => self.forged += 1,
            Outcome::Bad => self.bad += 1,
            Outcome::Cut { .. } => {
                self.bad += 1;
                self.cut += 1;
            }
            Outcome::Unmatched => {
                self.bad += 1;
                self.unmatched += 1;
            }
        }
    }

    /// Takes back `revoked` unverified answers (with their `late` marks) of a flow whose
    /// server has just proved that it repeats IDs: they were forged. The flow's unverified
    /// latencies are dropped with them.
    pub fn revoke(&mut self, revoked: Revoked, unverified: &mut Latency) {
        self.received -= revoked.answers;
        self.unverified -= revoked.answers;
        self.late -= revoked.late;
        self.forged += revoked.answers;
        *unverified = Latency::new();
    }

    /// Adds another run's accounting (another thread's flows) to this one.
    pub fn merge(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.received += o.received;
        self.unverified += o.unverified;
        self.duplicates += o.duplicates;
        self.late += o.late;
        self.forged += o.forged;
        self.bad += o.bad;
        self.foreign += o.foreign;
        self.unreachable += o.unreachable;
        self.not_sent += o.not_sent;
        self.unmatched += o.unmatched;
        self.cut += o.cut;
        self.skipped += o.skipped;
        self.icmp.merge(&o.icmp);
    }

    /// Counts an ICMP error that came back.
    pub fn note_icmp(&mut self, kind: IcmpError) {
        self.unreachable += 1;
        self.icmp.note(kind);
    }

    /// Requests never answered.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Requests never answered, as a percentage of those sent (0 when none went).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / self.sent as f64
        }
    }
}

/// Unverified answers taken back when the server proved that it repeats IDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    pub answers: u64,
    /// Of those, how many had been counted late.
    pub late: u64,
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
    len: usize,
    state: State,
    /// Answered by a reply without ID (revocable).
    unverified: bool,
    /// That answer came after the timeout.
    late: bool,
    /// STAMP: the request's own timestamp, which its reply must echo.
    t1: NtpTime,
}

/// The fewest requests a flow remembers (a monitor's target with three in flight: 16,
/// eight distinct lengths until IDs are proven). The load engine asks for 32 at least.
pub const MIN_REMEMBERED: usize = 16;

/// The most distinct lengths a flow uses: requests stay within 1 KiB of the size asked,
/// under a typical path MTU for the default size.
pub const MAX_LENGTHS: usize = 1024;

/// The request side and reply matching of one flow; see the module's promise.
#[derive(Debug)]
pub struct Flow {
    nonce: u64,
    size: usize,
    /// Until IDs are proven, request `seq` is `base + (seq + offset) % lengths` bytes long:
    /// the first is the size asked (`offset` is `size - base`, 0 unless the size is so near
    /// the largest datagram that the lengths go below it).
    base: usize,
    offset: usize,
    lengths: usize,
    /// Requests are large enough to carry an ID.
    with_ids: bool,
    next_seq: u64,
    /// Requests by `seq % slots.len()`; a power of two, at least twice `lengths`.
    slots: Box<[Slot]>,
    /// The oldest sequence number that may still be waiting.
    oldest: u64,
    waiting: usize,
    matching: Matching,
    /// A verified reply has come: the server speaks this protocol, with proof.
    proven: bool,
    revoked: Revoked,
    protocol: Protocol,
    /// A test-packet protocol's session (STAMP): SSID, CoS asked for, clock error.
    session: Session,
}

impl Flow {
    /// A flow of `size`-byte requests that remembers the last `capacity` of them (rounded up
    /// to a power of two, at least [`MIN_REMEMBERED`]): at least twice the most requests ever
    /// in flight at once. Until the server proves it repeats IDs, requests are `size` to
    /// `size + capacity / 2 - 1` bytes long (at most [`MAX_LENGTHS`] lengths; lower where
    /// that would pass the largest datagram).
    pub fn new(size: usize, capacity: usize) -> Flow {
        let capacity = capacity.max(MIN_REMEMBERED).next_power_of_two();
        let lengths = (capacity / 2).min(MAX_LENGTHS);
        let with_ids = Protocol::SEED.proves(size);
        let base = if with_ids {
            size.min(MAX_IPV4_PAYLOAD + 1 - lengths).max(ID_LEN)
        } else {
            size
        };
        let free = Slot {
            seq: u64::MAX,
            sent_at: Instant::now(),
            len: 0,
            state: State::Free,
            unverified: false,
            late: false,
            t1: NtpTime::default(),
        };
        Flow {
            nonce: fastrand::u64(..),
            size,
            base,
            offset: size.saturating_sub(base) % lengths.max(1),
            lengths,
            with_ids,
            next_seq: 0,
            slots: vec![free; capacity].into_boxed_slice(),
            oldest: 0,
            waiting: 0,
            matching: if with_ids {
                Matching::Unknown
            } else {
                Matching::Length
            },
            proven: false,
            revoked: Revoked::default(),
            protocol: Protocol::SEED,
            session: Session::default(),
        }
    }

    /// Speaks `protocol` from the first request on (call before any is sent); a protocol of
    /// test packets (STAMP) gets a session of its own, asking the reflector to send back
    /// DSCP and ECN `cos` (RFC 8972's CoS TLV). The protocol shapes the requests: echo and
    /// STAMP requests are all one size (their replies name their request without the
    /// seed's distinct lengths), and STAMP's are at least its 44-byte packet.
    pub fn set_protocol(&mut self, protocol: Protocol, cos: (u8, u8)) {
        debug_assert_eq!(self.next_seq, 0, "the protocol is chosen before sending");
        self.protocol = protocol;
        if protocol.test_packets() {
            self.session = Session {
                // Never 0: RFC 8762 reflectors leave the field zero.
                ssid: fastrand::u16(1..),
                cos,
                error: crate::measure::stamp::clock_estimate(),
            };
        }
        let shape = protocol.shape(self.size);
        self.size = shape.size;
        self.with_ids = protocol.proves(self.size);
        if !shape.distinct_lengths {
            self.base = self.size;
            self.lengths = 1;
            self.offset = 0;
        }
        self.matching = self.first_matching();
    }

    /// How replies are matched before any proof: by IDs at once where the protocol's reply
    /// is proof enough, else unknown until one proves them; by length or by sequence where
    /// the requests cannot carry proof.
    fn first_matching(&self) -> Matching {
        let shape = self.protocol.shape(self.size);
        match (self.with_ids, shape.ids_from_start, shape.distinct_lengths) {
            (true, true, _) => Matching::Ids,
            (true, false, _) => Matching::Unknown,
            (false, _, true) => Matching::Length,
            (false, _, false) => Matching::Sequence,
        }
    }

    /// The protocol this flow's requests speak.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// STAMP: the Session-Sender Identifier this flow sends.
    pub fn ssid(&self) -> u16 {
        self.session.ssid
    }

    /// A flow whose requests are all exactly `size` bytes, even before the server proves
    /// that it repeats IDs (`mtu` probes one size at a time): a reply without an ID then
    /// matches only while a single request of its length may be answered.
    pub fn exact(size: usize, capacity: usize) -> Flow {
        let mut flow = Flow::new(size, capacity);
        flow.lengths = 1;
        flow.base = size;
        flow.offset = 0;
        flow
    }

    /// The size of the requests from now on, for a flow made by [`Flow::exact`]; those
    /// already sent keep theirs.
    pub fn set_size(&mut self, size: usize) {
        debug_assert_eq!(self.lengths, 1, "only an exact flow changes its size");
        self.size = self.protocol.shape(size).size;
        self.base = self.size;
        self.with_ids = self.protocol.proves(self.size);
        if self.matching != Matching::Ids {
            self.matching = self.first_matching();
        }
    }

    /// How this flow's replies are matched to requests now.
    /// How replies are matched so far; for test packets not yet proven by the nonce, by
    /// the sequence number and timestamp they echo.
    pub fn matching(&self) -> Matching {
        match self.matching {
            Matching::Unknown if self.protocol.test_packets() => Matching::Sequence,
            m => m,
        }
    }

    /// Requests sent and neither answered nor timed out.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }

    /// The lengths requests may have: `(smallest, largest)`.
    pub fn length_range(&self) -> (usize, usize) {
        if self.matching == Matching::Ids {
            (self.size, self.size)
        } else {
            (self.base, self.base + self.lengths - 1)
        }
    }

    /// The length of request `seq`, if it is still remembered.
    pub fn request_len(&self, seq: u64) -> Option<usize> {
        let slot = &self.slots[self.index(seq)];
        (slot.seq == seq && slot.state != State::Free).then_some(slot.len)
    }

    /// Unverified answers revoked since the last call: the server has proved that it
    /// repeats IDs, so they were forged (see [`Tally::revoke`]).
    pub fn take_revoked(&mut self) -> Revoked {
        std::mem::take(&mut self.revoked)
    }

    fn index(&self, seq: u64) -> usize {
        (seq & (self.slots.len() as u64 - 1)) as usize
    }

    /// Writes the next request into `buf` and records it as sent at `sent_at` (for an open
    /// loop, the time it was meant to be sent). Returns its sequence number.
    pub fn next_request(&mut self, buf: &mut Vec<u8>, sent_at: Instant) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = if self.matching == Matching::Ids {
            self.size
        } else {
            self.base + ((seq + self.offset as u64) % self.lengths as u64) as usize
        };
        let request = Request {
            id: RequestId {
                nonce: self.nonce,
                seq,
            },
            len,
            session: self.session,
        };
        let t1 = self.protocol.write_request(buf, &request);
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        if slot.state == State::Waiting {
            // Overwritten while waiting: the table is too small for what is in flight.
            self.waiting -= 1;
        }
        *slot = Slot {
            seq,
            sent_at,
            len,
            state: State::Waiting,
            unverified: false,
            late: false,
            t1,
        };
        self.waiting += 1;
        seq
    }

    /// Forgets the request just written by `next_request` when sending it failed.
    pub fn unsend(&mut self, seq: u64) {
        if seq + 1 == self.next_seq {
            let index = self.index(seq);
            let slot = &mut self.slots[index];
            if slot.state == State::Waiting {
                self.waiting -= 1;
            }
            slot.state = State::Free;
            self.next_seq = seq;
        }
    }

    /// Gives up on request `seq` at once (the kernel refused to send it): it is lost, and
    /// a reply to it, should one come, is late.
    pub fn abandon(&mut self, seq: u64) {
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        if slot.seq == seq && slot.state == State::Waiting {
            slot.state = State::TimedOut;
            self.waiting -= 1;
            self.advance_oldest();
        }
    }

    /// Marks requests sent before `now - timeout` as timed out; returns how many were.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        if self.waiting == 0 {
            return 0;
        }
        let mut expired = 0;
        let first = self
            .oldest
            .max(self.next_seq.saturating_sub(self.slots.len() as u64));
        for seq in first..self.next_seq {
            let index = self.index(seq);
            let slot = &mut self.slots[index];
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
        (self.oldest..self.next_seq)
            .map(|seq| self.slots[self.index(seq)])
            .find(|s| s.state == State::Waiting)
            .map(|s| s.sent_at)
    }

    fn advance_oldest(&mut self) {
        self.oldest = self
            .oldest
            .max(self.next_seq.saturating_sub(self.slots.len() as u64));
        while self.oldest < self.next_seq {
            let slot = self.slots[self.index(self.oldest)];
            if slot.seq == self.oldest && slot.state == State::Waiting {
                break;
            }
            self.oldest += 1;
        }
    }

    /// Classifies `data`, received from the server at `now`: what the protocol says it
    /// claims, then whether that holds.
    pub fn on_reply(&mut self, data: &[u8], now: Instant) -> Outcome {
        match self.protocol.read_reply(data) {
            // Once the server has sent a verified reply, whatever else seems to come from it
            // is someone else's, in every protocol; before, it may speak another protocol.
            Claim::Bad if self.proven => Outcome::Forged,
            Claim::Bad => Outcome::Bad,
            Claim::Forged => Outcome::Forged,
            Claim::Id { id, len } => {
                if !self.with_ids || id.nonce != self.nonce || id.seq >= self.next_seq {
                    return Outcome::Forged;
                }
                if self.matching == Matching::Unknown {
                    self.prove_ids();
                }
                self.credit(id.seq, Some(len), now, true)
            }
            Claim::Length(_) if self.matching == Matching::Ids => Outcome::Forged,
            Claim::Length(len) => match self.by_length(len) {
                Ok(seq) => self.credit(seq, Some(len), now, false),
                Err(outcome) => outcome,
            },
            Claim::Reflected {
                reply,
                proof,
                cos,
                authenticated,
            } => self.on_reflected(&reply, proof, cos, authenticated, now),
        }
    }

    /// A reflected test packet: the sequence number and timestamp it echoes name the
    /// request; udpkit's nonce, where the reflector echoed it, proves it genuine.
    fn on_reflected(
        &mut self,
        r: &Reflected,
        proof: Option<(u64, u64)>,
        cos: Option<CosSeen>,
        authenticated: bool,
        now: Instant,
    ) -> Outcome {
        let t4 = NtpTime::now();
        // The request's full sequence number: the latest sent with these low 32 bits.
        let Some(last) = self.next_seq.checked_sub(1) else {
            return Outcome::Forged;
        };
        let low = u64::from(r.sender_seq);
        let seq = (last & !0xffff_ffff) | low;
        let Some(seq) = (if seq > last {
            seq.checked_sub(1 << 32)
        } else {
            Some(seq)
        }) else {
            return Outcome::Forged;
        };
        let slot = self.slots[self.index(seq)];
        if slot.seq != seq || slot.state == State::Free {
            return Outcome::Unmatched;
        }
        // A reflector that knows SSIDs repeats ours; an RFC 8762 one leaves zero.
        if slot.t1 != r.sender_timestamp || (r.ssid != self.session.ssid && r.ssid != 0) {
            return Outcome::Forged;
        }
        // Only a request with room for the nonce carries one: a reply to a smaller one is
        // unverified whatever the reflector has proved.
        let verified = match proof {
            _ if authenticated => true,
            Some((nonce, id_seq)) if nonce == self.nonce && id_seq == seq => true,
            _ if self.protocol.proves(slot.len) && self.matching == Matching::Ids => {
                return Outcome::Forged;
            }
            _ => false,
        };
        if verified && self.matching == Matching::Unknown {
            self.prove_ids();
        }
        // The sequence number and timestamp name the request, whatever the reply's length:
        // a TWAMP reflector's may be shorter (41 bytes) or longer than its request.
        let outcome = self.credit(seq, None, now, verified);
        let sample = StampSample {
            t1: slot.t1,
            t2: r.receive,
            t3: r.timestamp,
            t4,
            reflector_seq: r.seq,
            reflector_error: r.error,
            sender_error: self.session.error,
            ttl: r.sender_ttl,
            cos,
        };
        match outcome {
            Outcome::Answer {
                seq,
                rtt,
                late,
                verified,
                ..
            } => Outcome::Answer {
                seq,
                rtt,
                late,
                verified,
                stamp: Some(sample),
            },
            other => other,
        }
    }

    /// The server repeated an ID: from now on only IDs count, and every answer taken on
    /// length alone is revoked, its request waiting (or timed out) again.
    fn prove_ids(&mut self) {
        self.matching = Matching::Ids;
        let protocol = self.protocol;
        for slot in self.slots.iter_mut() {
            // A request too small for the proof could not have had it echoed: its answer
            // stays unverified rather than being called forged.
            let could_prove = protocol.proves(slot.len);
            if slot.state == State::Answered && slot.unverified && could_prove {
                self.revoked.answers += 1;
                self.revoked.late += u64::from(slot.late);
                slot.unverified = false;
                if slot.late {
                    slot.state = State::TimedOut;
                } else {
                    slot.state = State::Waiting;
                    self.waiting += 1;
                    self.oldest = self.oldest.min(slot.seq);
                }
                slot.late = false;
            }
        }
    }

    /// The one remembered request that a reply naming `len` bytes can answer.
    fn by_length(&self, len: usize) -> Result<u64, Outcome> {
        let length = len
            .checked_sub(self.base)
            .filter(|c| *c < self.lengths)
            .ok_or(Outcome::Bad)?;
        // The sequence numbers that length is sent with: `seq % lengths == class`.
        let class = ((length + self.lengths - self.offset) % self.lengths) as u64;
        let last = self.next_seq.checked_sub(1).ok_or(Outcome::Unmatched)?;
        if last < class {
            return Err(Outcome::Unmatched);
        }
        let n = self.lengths as u64;
        let seq = last - (last - class) % n;
        // An older request of the same length that may still be answered makes the reply
        // ambiguous: crediting the newer one could invent a round-trip time.
        if let Some(older) = seq.checked_sub(n) {
            let slot = &self.slots[self.index(older)];
            if slot.seq == older && matches!(slot.state, State::Waiting | State::TimedOut) {
                return Err(Outcome::Unmatched);
            }
        }
        Ok(seq)
    }

    /// Credits request `seq` with an answer; `len`, where the reply names a length, must be
    /// the request's.
    fn credit(&mut self, seq: u64, len: Option<usize>, now: Instant, verified: bool) -> Outcome {
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        if slot.seq != seq || slot.state == State::Free {
            return Outcome::Unmatched;
        }
        if let Some(got) = len.filter(|&len| len != slot.len) {
            return if verified {
                Outcome::Cut { seq, got }
            } else {
                Outcome::Bad
            };
        }
        let rtt = now.saturating_duration_since(slot.sent_at);
        match slot.state {
            State::Waiting | State::TimedOut => {
                let late = slot.state == State::TimedOut;
                if !late {
                    self.waiting -= 1;
                }
                slot.state = State::Answered;
                slot.unverified = !verified;
                self.proven |= verified;
                slot.late = late;
                self.advance_oldest();
                Outcome::Answer {
                    seq,
                    rtt,
                    late,
                    verified,
                    stamp: None,
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
    use crate::wire::{MAX_REPLY, emit_reply, request_id};

    /// What a udpkit server would answer to `request`.
    fn answer(request: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(&mut buf, request.len(), request_id(request));
        buf[..n].to_vec()
    }

    /// What the seed's server would answer (and what a forger without the nonce sends).
    fn seed_answer(request: &[u8]) -> Vec<u8> {
        crate::wire::reply_text(request.len()).into_bytes()
    }

    fn send(flow: &mut Flow, t: Instant) -> Vec<u8> {
        let mut buf = Vec::new();
        flow.next_request(&mut buf, t);
        buf
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ids_match_replies_in_any_order_and_spot_duplicates() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        let b = send(&mut flow, t);
        let later = t + ms(5);
        assert_eq!(
            flow.on_reply(&answer(&b), later),
            Outcome::Answer {
                seq: 1,
                rtt: ms(5),
                late: false,
                verified: true,
                stamp: None,
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
    fn an_echo_is_matched_by_its_id_and_anything_else_is_not_taken() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        flow.set_protocol(Protocol::ECHO, (0, 0));
        assert_eq!(
            flow.matching(),
            Matching::Ids,
            "an echo always repeats the ID"
        );
        let a = send(&mut flow, t);
        let b = send(&mut flow, t);
        assert_eq!(a.len(), 38);
        assert!(matches!(
            flow.on_reply(&b, t + ms(2)),
            Outcome::Answer {
                seq: 1,
                verified: true,
                ..
            }
        ));
        // The seed's sentence is not an echo, and this echo server has proved itself:
        // forged, as another flow's request is.
        assert_eq!(flow.on_reply(&seed_answer(&a), t), Outcome::Forged);
        let mut other = Flow::new(38, 64);
        other.set_protocol(Protocol::ECHO, (0, 0));
        assert_eq!(flow.on_reply(&send(&mut other, t), t), Outcome::Forged);
        assert!(matches!(
            flow.on_reply(&b, t),
            Outcome::Duplicate { seq: 1, .. }
        ));
        // Too small for an ID: matched by length, unverified.
        let mut small = Flow::new(8, 64);
        small.set_protocol(Protocol::ECHO, (0, 0));
        let c = send(&mut small, t);
        assert!(matches!(
            small.on_reply(&c, t),
            Outcome::Answer {
                verified: false,
                ..
            }
        ));
    }

    fn reflect(request: &[u8], strip_tlvs: bool) -> Vec<u8> {
        use crate::wire::stamp::{Arrival, CosPolicy, ErrorEstimate, NtpTime, reflect};
        let mut reply = request.to_vec();
        let at = NtpTime::now();
        let arrival = Arrival {
            at,
            ttl: Some(61),
            tos: Some(0),
        };
        assert!(reply.len() >= 44);
        reflect(
            &mut reply,
            &arrival,
            None,
            at,
            ErrorEstimate::for_error(1e-6, false),
            CosPolicy::AsArrived,
        );
        if strip_tlvs {
            reply[44..].fill(0); // an RFC 8762 reflector: no TLVs echoed
        }
        reply
    }

    #[test]
    fn a_stamp_reply_names_its_request_and_the_nonce_proves_it() {
        let t = Instant::now();
        let mut flow = Flow::new(72, 64);
        flow.set_protocol(Protocol::STAMP, (10, 0));
        let a = send(&mut flow, t);
        let b = send(&mut flow, t);
        assert_eq!(a.len(), 72);
        match flow.on_reply(&reflect(&b, false), t + ms(1)) {
            Outcome::Answer {
                seq: 1,
                verified: true,
                stamp: Some(s),
                ..
            } => {
                assert_eq!(s.ttl, 61);
                assert_eq!(s.reflector_seq, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(flow.matching(), Matching::Ids);
        // Without the nonce now: forged. With a timestamp that is not the request's: forged.
        assert_eq!(flow.on_reply(&reflect(&a, true), t), Outcome::Forged);
        let mut wrong = reflect(&a, false);
        wrong[35] ^= 1; // the echoed sender timestamp's last byte
        assert_eq!(flow.on_reply(&wrong, t), Outcome::Forged);
        assert!(matches!(
            flow.on_reply(&reflect(&a, false), t),
            Outcome::Answer { seq: 0, .. }
        ));
        assert_eq!(flow.on_reply(b"short", t), Outcome::Forged);
    }

    #[test]
    fn a_small_stamp_probe_answered_before_the_nonce_is_proven_is_not_called_forged() {
        // mtu's way: an exact flow whose probes change size.
        let t = Instant::now();
        let mut flow = Flow::exact(44, 64);
        flow.set_protocol(Protocol::STAMP, (0, 0));
        let small = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&reflect(&small, false), t),
            Outcome::Answer {
                verified: false,
                ..
            }
        ));
        flow.set_size(100);
        let big = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&reflect(&big, false), t),
            Outcome::Answer { verified: true, .. }
        ));
        assert_eq!(
            flow.take_revoked(),
            Revoked::default(),
            "nothing to take back"
        );
        flow.set_size(50);
        let small = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&reflect(&small, false), t),
            Outcome::Answer {
                verified: false,
                ..
            }
        ));
    }

    #[test]
    fn stamp_replies_without_the_nonce_are_matched_by_sequence_unverified() {
        let t = Instant::now();
        let mut flow = Flow::new(44, 64);
        flow.set_protocol(Protocol::STAMP, (0, 0));
        assert_eq!(flow.matching(), Matching::Sequence);
        let a = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&reflect(&a, true), t),
            Outcome::Answer {
                seq: 0,
                verified: false,
                ..
            }
        ));
        // A reflector that does not echo TLVs, against a request with the nonce.
        let mut flow = Flow::new(72, 64);
        flow.set_protocol(Protocol::STAMP, (0, 0));
        let a = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&reflect(&a, true), t),
            Outcome::Answer {
                seq: 0,
                verified: false,
                ..
            }
        ));
        assert_eq!(flow.matching(), Matching::Sequence, "said as what it is");
    }

    #[test]
    fn before_a_verified_reply_another_protocols_answer_is_bad_not_forged() {
        // So that a run against a server of another protocol can say so.
        let t = Instant::now();
        for protocol in Protocol::ALL {
            let mut flow = Flow::new(80, 64);
            flow.set_protocol(protocol, (0, 0));
            let a = send(&mut flow, t);
            assert_eq!(flow.on_reply(b"garbage", t), Outcome::Bad, "{protocol}");
            if protocol != Protocol::SEED {
                assert_eq!(
                    flow.on_reply(&seed_answer(&a), t),
                    Outcome::Bad,
                    "{protocol}"
                );
            }
        }
    }

    #[test]
    fn once_ids_are_repeated_a_reply_without_the_right_one_is_forged() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        let b = send(&mut flow, t);
        assert!(matches!(
            flow.on_reply(&answer(&a), t),
            Outcome::Answer { verified: true, .. }
        ));
        // The seed's sentence, right length, no ID: what a forger without the nonce sends.
        assert_eq!(flow.on_reply(&seed_answer(&b), t), Outcome::Forged);
        let mut other = Flow::new(38, 64);
        let stranger = send(&mut other, t);
        assert_eq!(flow.on_reply(&answer(&stranger), t), Outcome::Forged);
        assert_eq!(flow.on_reply(b"garbage", t), Outcome::Forged);
        assert_eq!(flow.waiting(), 1, "the second request still waits");
        // Requests are the size asked for from now on.
        assert_eq!(send(&mut flow, t).len(), 38);
        assert_eq!(send(&mut flow, t).len(), 38);
    }

    #[test]
    fn a_forgery_that_wins_the_race_is_revoked_by_the_genuine_reply() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        // The forger's ID-less reply, right length, before the server's.
        assert_eq!(
            flow.on_reply(&seed_answer(&a), t + ms(1)),
            Outcome::Answer {
                seq: 0,
                rtt: ms(1),
                late: false,
                verified: false,
                stamp: None,
            }
        );
        assert_eq!(flow.waiting(), 0);
        assert_eq!(flow.matching(), Matching::Unknown);
        // The genuine reply: proof of IDs; the forged answer is taken back.
        assert_eq!(
            flow.on_reply(&answer(&a), t + ms(7)),
            Outcome::Answer {
                seq: 0,
                rtt: ms(7),
                late: false,
                verified: true,
                stamp: None,
            }
        );
        assert_eq!(
            flow.take_revoked(),
            Revoked {
                answers: 1,
                late: 0
            }
        );
        assert_eq!(flow.take_revoked(), Revoked::default());
        assert_eq!(flow.on_reply(&seed_answer(&a), t + ms(8)), Outcome::Forged);
    }

    #[test]
    fn the_first_request_is_the_size_asked_even_at_the_largest_datagram() {
        // `ping -s 65507` sent 65,476 bytes first (the distinct lengths went below the size
        // asked, from its lowest); now they start at the size asked, and still match.
        let t = Instant::now();
        let mut flow = Flow::new(65_507, 64);
        let requests: Vec<Vec<u8>> = (0..32).map(|i| send(&mut flow, t + ms(i))).collect();
        assert_eq!(requests[0].len(), 65_507);
        let mut lengths: Vec<usize> = requests[..32].iter().map(Vec::len).collect();
        lengths.sort_unstable();
        lengths.dedup();
        assert_eq!(lengths.len(), 32, "distinct lengths");
        assert!(requests.iter().all(|r| r.len() <= 65_507));
        for seq in [31u64, 0, 20] {
            let outcome = flow.on_reply(&seed_answer(&requests[seq as usize]), t + ms(50));
            assert!(
                matches!(outcome, Outcome::Answer { seq: got, .. } if got == seq),
                "{seq}: {outcome:?}"
            );
        }
    }

    #[test]
    fn without_ids_a_reply_is_credited_by_the_length_it_names_never_by_order() {
        // udp_remote.py: the server drops half the requests and repeats no IDs.
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let requests: Vec<Vec<u8>> = (0..6).map(|i| send(&mut flow, t + ms(200 * i))).collect();
        let lengths: Vec<usize> = requests.iter().map(Vec::len).collect();
        assert_eq!(lengths, [38, 39, 40, 41, 42, 43], "distinct lengths");
        flow.expire(t + ms(1500), ms(1000));
        // Requests 0, 2 and 4 were dropped; 1, 3 and 5 answered 0.2 ms after they left.
        for seq in [1u64, 3, 5] {
            let at = t + ms(200 * seq) + Duration::from_micros(200);
            let outcome = flow.on_reply(&seed_answer(&requests[seq as usize]), at);
            match outcome {
                Outcome::Answer {
                    seq: got,
                    rtt,
                    verified: false,
                    ..
                } => {
                    assert_eq!(got, seq);
                    assert_eq!(rtt, Duration::from_micros(200), "no invented RTT");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            flow.on_reply(b"Your data was 37 bytes long", t),
            Outcome::Bad
        );
        assert!(matches!(
            flow.on_reply(&seed_answer(&requests[1]), t + ms(300)),
            Outcome::Duplicate { seq: 1, .. }
        ));
    }

    #[test]
    fn a_length_shared_with_an_older_unanswered_request_is_not_credited() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 32); // 16 lengths, 32 slots
        let first = send(&mut flow, t);
        for _ in 1..16 {
            send(&mut flow, t);
        }
        let again = send(&mut flow, t); // seq 16: the length of seq 0, which still waits
        assert_eq!(first.len(), again.len());
        assert_eq!(
            flow.on_reply(&seed_answer(&again), t),
            Outcome::Unmatched,
            "seq 0 or seq 16? Neither is credited"
        );
    }

    #[test]
    fn small_requests_carry_no_id_and_match_by_length() {
        let mut flow = Flow::new(5, 16);
        let req = send(&mut flow, Instant::now());
        assert_eq!(req, b"xxxxx");
        assert_eq!(flow.matching(), Matching::Length);
        assert!(matches!(
            flow.on_reply(&seed_answer(&req), Instant::now()),
            Outcome::Answer {
                seq: 0,
                verified: false,
                ..
            }
        ));
        let next = send(&mut flow, Instant::now());
        assert_eq!(next, b"xxxxxx");
    }

    #[test]
    fn timeouts_free_the_window_and_a_late_reply_still_counts() {
        let t = Instant::now();
        let mut flow = Flow::new(38, 64);
        let a = send(&mut flow, t);
        assert_eq!(flow.expire(t + ms(50), ms(100)), 0);
        assert_eq!(flow.expire(t + ms(150), ms(100)), 1);
        assert_eq!(flow.waiting(), 0);
        assert!(matches!(
            flow.on_reply(&answer(&a), t + ms(200)),
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
        // It carries the request's ID: cut short on the way, and never an answer.
        assert_eq!(
            flow.on_reply(&answer(&wrong), t),
            Outcome::Cut { seq: 0, got: 39 }
        );
        assert_eq!(flow.waiting(), 1);
    }

    #[test]
    fn lengths_stay_within_the_largest_datagram() {
        let mut flow = Flow::new(MAX_IPV4_PAYLOAD, 64);
        let t = Instant::now();
        for _ in 0..100 {
            let len = send(&mut flow, t).len();
            assert!((ID_LEN..=MAX_IPV4_PAYLOAD).contains(&len), "{len}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Send,
            Expire(u8),
            /// The server's reply to request `n` (mod sent), with its ID or without.
            Reply(u16, bool),
            /// A forger's reply without ID naming a length.
            Forge(u16),
            Garbage(Vec<u8>),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => Just(Step::Send),
                1 => any::<u8>().prop_map(Step::Expire),
                4 => (any::<u16>(), any::<bool>()).prop_map(|(n, id)| Step::Reply(n, id)),
                1 => any::<u16>().prop_map(Step::Forge),
                1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Step::Garbage),
            ]
        }

        proptest! {
            /// Whatever arrives: an answer names a request that was sent, has the length
            /// that request had, is verified only if it carried the ID, and is never
            /// credited twice; the number waiting never exceeds what was sent.
            #[test]
            fn every_answer_belongs_to_a_request_of_its_length(
                size in 0usize..80,
                steps in proptest::collection::vec(step(), 1..300),
            ) {
                let t0 = Instant::now();
                let mut flow = Flow::new(size, 32);
                let mut sent: Vec<Vec<u8>> = Vec::new();
                let mut answered = std::collections::HashSet::new();
                for (i, step) in steps.into_iter().enumerate() {
                    let now = t0 + Duration::from_millis(i as u64);
                    let outcome = match step {
                        Step::Send => {
                            let mut buf = Vec::new();
                            flow.next_request(&mut buf, now);
                            sent.push(buf);
                            continue;
                        }
                        Step::Expire(ms) => {
                            flow.expire(now, Duration::from_millis(u64::from(ms)));
                            continue;
                        }
                        Step::Reply(n, with_id) if !sent.is_empty() => {
                            let req = &sent[usize::from(n) % sent.len()];
                            let reply = if with_id { answer(req) } else { seed_answer(req) };
                            flow.on_reply(&reply, now)
                        }
                        Step::Reply(..) => continue,
                        Step::Forge(len) => flow.on_reply(
                            crate::wire::reply_text(usize::from(len) % 200).as_bytes(),
                            now,
                        ),
                        Step::Garbage(data) => flow.on_reply(&data, now),
                    };
                    let revoked = flow.take_revoked();
                    for _ in 0..revoked.answers {
                        // Revoked answers may be answered again by their genuine reply.
                        answered.clear();
                    }
                    prop_assert!(flow.waiting() as u64 <= flow.sent());
                    if let Outcome::Answer { seq, verified, .. } = outcome {
                        prop_assert!(seq < flow.sent());
                        let len = flow.request_len(seq).unwrap();
                        prop_assert_eq!(len, sent[seq as usize].len());
                        if verified {
                            prop_assert!(size >= ID_LEN);
                        }
                        prop_assert!(answered.insert(seq), "credited twice: {}", seq);
                    }
                }
            }
        }
    }
}
