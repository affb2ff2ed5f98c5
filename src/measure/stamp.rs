//! What a STAMP session's replies say beyond the round trip, gathered over a run: the round
//! trip without the reflector's own time, the one-way delays and whether they can be
//! trusted, loss split by direction where the reflector counts on its own (stateful), the
//! TTL and the DSCP/ECN the requests arrived with.
//!
//! Promise: nothing is claimed that the replies do not show. One-way delays are labelled
//! `exact` only when the reflector is this host (one clock), `synchronized` only when both
//! ends' Error Estimates say so (then within the sum of their errors), `unsynchronized`
//! otherwise. Loss is split by direction only when the reflector has shown that it keeps
//! its own count (a reply whose reflector sequence number differs from the sender's), and
//! never across a restart of that count, nor once forgeries are seen: a forged reply, or a
//! reflector count ahead of the requests sent (someone sends in the session's name, and
//! the reflector counted their packets as ours).

use std::time::Duration;

use serde::Serialize;

use crate::measure::latency::Latency;
use crate::wire::stamp::{CosSeen, ErrorEstimate, NtpTime};

/// What one STAMP reply says beyond its round trip: the four timestamps (t1 the request
/// left, t2 it reached the reflector, t3 the reply left, t4 it came back; t1 and t4 on
/// this host's clock, t2 and t3 on the reflector's), the reflector's sequence number, the
/// TTL and CoS it saw, and how good its clock says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StampSample {
    /// When the request left, on this host's clock.
    pub t1: NtpTime,
    /// When the request reached the reflector, on its clock.
    pub t2: NtpTime,
    /// When the reply left the reflector, on its clock.
    pub t3: NtpTime,
    /// When the reply came back, on this host's clock.
    pub t4: NtpTime,
    /// The reflector's sequence number: its own count in a stateful session, the
    /// request's otherwise.
    pub reflector_seq: u32,
    /// The error estimate the reflector sent with its timestamps.
    pub reflector_error: ErrorEstimate,
    /// The error estimate this host sent with the request.
    pub sender_error: ErrorEstimate,
    /// 0: the reflector did not say.
    pub ttl: u8,
    /// The DSCP and ECN the request arrived with, where the reflector filled the Class
    /// of Service TLV.
    pub cos: Option<CosSeen>,
}

impl StampSample {
    /// The reflector's time between receiving and replying (t3 - t2), in nanoseconds.
    pub fn reflector_nanos(&self) -> i64 {
        self.t3.nanos_since(self.t2)
    }
    /// The way there (t2 - t1); meaningful only when both clocks agree.
    pub fn forward_nanos(&self) -> i64 {
        self.t2.nanos_since(self.t1)
    }
    /// The way back (t4 - t3); meaningful only when both clocks agree.
    pub fn backward_nanos(&self) -> i64 {
        self.t4.nanos_since(self.t3)
    }
}

/// This host's clock as an RFC 4656 Error Estimate, for the timestamps it sends (the
/// kernel's own word, `io::clock`).
pub fn clock_estimate() -> ErrorEstimate {
    let q = crate::io::clock::quality();
    ErrorEstimate::for_error(q.error_seconds, q.synchronized)
}

/// Whether the two clocks behind the one-way delays agree.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clocks {
    /// The reflector is this host: one clock, the one-way delays are exact.
    Exact,
    /// Both ends say they are synchronised: the one-way delays are right within
    /// `error_us`, the sum of their errors.
    Synchronized {
        /// The sum of both ends' error estimates, the largest any reply gave, in
        /// microseconds.
        error_us: f64,
    },
    /// At least one end is not known to be synchronised: one-way delays mean nothing.
    Unsynchronized,
}

/// Loss split by direction, or why it cannot be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionLoss {
    /// Requests that never reached the reflector.
    pub forward: Option<u64>,
    /// Replies that never came back.
    pub backward: Option<u64>,
    /// Lost after the last reply the reflector counted: which way, nobody can tell.
    pub unknown: Option<u64>,
    /// Why the split is not given, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<&'static str>,
}

const RESTARTED: &str = "the reflector's count restarted during the run";
const FORGED: &str = "forgeries reached this session (forged replies, or a reflector count ahead \
     of the requests sent): the reflector may have counted someone else's packets as ours, so \
     its count cannot split the loss";
const STATELESS: &str = "the reflector repeats the sender's sequence numbers (stateless, or \
     nothing was lost on the way there): it does not say which way a request was lost";

/// One session's count of what the reflector counted: the reply with the highest reflector
/// sequence number so far, and whether that count can split loss by direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionCount {
    /// The reflector kept a count of its own (some reflector seq != sender seq).
    stateful: bool,
    /// Its count went backwards: it restarted (or the session was forgotten).
    restarted: bool,
    /// Its count got ahead of the requests sent: it counted packets that were not ours.
    ahead: bool,
    /// (sender seq, reflector seq) of the reply with the highest reflector seq.
    last: Option<(u64, u32)>,
}

impl SessionCount {
    /// The first reply to request `seq`, numbered `reflector_seq` by the reflector.
    pub fn observe(&mut self, seq: u64, reflector_seq: u32) {
        self.stateful |= u64::from(reflector_seq) != (seq & 0xffff_ffff);
        self.ahead |= seq < (1 << 32) && u64::from(reflector_seq) > seq;
        match self.last {
            Some((_, r)) if reflector_seq > r => self.last = Some((seq, reflector_seq)),
            Some((last_seq, r)) if reflector_seq < r && seq > last_seq => self.restarted = true,
            None => self.last = Some((seq, reflector_seq)),
            _ => {}
        }
    }

    /// Why this count cannot split loss by direction (given the forged replies seen), if
    /// it cannot.
    pub fn why_not(&self, forged: u64) -> Option<&'static str> {
        if self.restarted {
            Some(RESTARTED)
        } else if forged > 0 || self.ahead {
            Some(FORGED)
        } else if !(self.stateful || self.last.is_none()) {
            Some(STATELESS)
        } else {
            None
        }
    }

    /// `sent - received` requests lost, split `(forward, backward, unknown)` by the
    /// reflector's count (call only when [`SessionCount::why_not`] is `None`): of requests
    /// `0..=seq`, the reflector had received `refl + 1` when it answered `seq`; what was
    /// lost after the last reply it counted went nobody can tell which way.
    pub fn split(&self, sent: u64, received: u64) -> (u64, u64, u64) {
        let lost = sent.saturating_sub(received);
        let Some((seq, refl)) = self.last else {
            return (0, 0, lost);
        };
        let there = (seq + 1).saturating_sub(u64::from(refl) + 1).min(lost);
        let after = sent.saturating_sub(seq + 1).min(lost - there);
        (there, lost - there - after, after)
    }
}

/// The gathering, one per run.
#[derive(Clone, Debug)]
pub struct StampStats {
    net: Latency,
    reflector: Latency,
    forward: Latency,
    backward: Latency,
    negative: u64,
    same_host: bool,
    synchronized: bool,
    worst_error: f64,
    ttl: Option<(u8, u8)>,
    cos: Option<CosSeen>,
    cos_varied: bool,
    flows: Vec<SessionCount>,
    sent_tos: u8,
    sent_ttl: Option<u8>,
}

/// What the run's STAMP replies said (see the module's promise).
#[derive(Clone, Debug)]
pub struct StampReport {
    /// Round trips less the reflector's time (t4 - t1 - (t3 - t2)).
    pub net: Latency,
    /// The reflector's time between receiving and replying (t3 - t2).
    pub reflector: Latency,
    /// One-way delays, each way; negative ones (clocks apart) are counted, not recorded.
    pub forward: Latency,
    /// The way back (t4 - t3), as `forward`.
    pub backward: Latency,
    /// Replies whose one-way delay came out negative either way (clocks apart); neither
    /// of their delays is recorded.
    pub negative_one_way: u64,
    /// Whether the one-way delays can be trusted.
    pub clocks: Clocks,
    /// The lowest and highest TTL (hop limit) the requests arrived with, where said.
    pub ttl: Option<(u8, u8)>,
    /// The DSCP and ECN the last request arrived with, where the reflector filled RFC
    /// 8972's Class of Service TLV; `cos_varied` if not all arrived alike.
    pub cos: Option<CosSeen>,
    /// The replies that filled the Class of Service TLV did not all say the same DSCP and ECN.
    pub cos_varied: bool,
    /// Loss split by direction, where the reflector's count allows it.
    pub loss: DirectionLoss,
    /// The TOS byte the requests were sent with (DSCP and ECN).
    pub sent_tos: u8,
    /// The TTL the requests were sent with, if known.
    pub sent_ttl: Option<u8>,
}

impl StampReport {
    /// Adds another thread's report of the same run to this one.
    pub fn merge(&mut self, o: &StampReport) {
        self.net.merge(&o.net);
        self.reflector.merge(&o.reflector);
        self.forward.merge(&o.forward);
        self.backward.merge(&o.backward);
        self.negative_one_way += o.negative_one_way;
        self.clocks = match (self.clocks, o.clocks) {
            (Clocks::Exact, Clocks::Exact) => Clocks::Exact,
            (Clocks::Synchronized { error_us: a }, Clocks::Synchronized { error_us: b }) => {
                Clocks::Synchronized { error_us: a.max(b) }
            }
            _ => Clocks::Unsynchronized,
        };
        self.ttl = match (self.ttl, o.ttl) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
        self.cos_varied |=
            o.cos_varied || (self.cos.is_some() && o.cos.is_some() && self.cos != o.cos);
        self.cos = self.cos.or(o.cos);
        let add = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
        self.loss = DirectionLoss {
            forward: add(self.loss.forward, o.loss.forward),
            backward: add(self.loss.backward, o.loss.backward),
            unknown: add(self.loss.unknown, o.loss.unknown),
            why_not: self.loss.why_not.or(o.loss.why_not),
        };
    }
}

impl StampStats {
    /// `flows` flows; `same_host`: the reflector's address is one of this host's.
    pub fn new(flows: usize, same_host: bool) -> StampStats {
        StampStats {
            net: Latency::new(),
            reflector: Latency::new(),
            forward: Latency::new(),
            backward: Latency::new(),
            negative: 0,
            same_host,
            synchronized: true,
            worst_error: 0.0,
            ttl: None,
            cos: None,
            cos_varied: false,
            flows: vec![SessionCount::default(); flows],
            sent_tos: 0,
            sent_ttl: None,
        }
    }

    /// How the requests were marked: the TOS byte and the TTL.
    pub fn set_sent(&mut self, tos: u8, ttl: Option<u8>) {
        self.sent_tos = tos;
        self.sent_ttl = ttl;
    }

    /// One first reply (not a duplicate) to request `seq` of flow `flow`.
    pub fn observe(&mut self, flow: usize, seq: u64, rtt: Duration, s: &StampSample) {
        let reflector = s.reflector_nanos();
        let nanos = |n: i64| Duration::from_nanos(n.max(0) as u64);
        self.reflector.record(nanos(reflector));
        let rtt_ns = i64::try_from(rtt.as_nanos()).unwrap_or(i64::MAX);
        self.net
            .record(nanos(rtt_ns.saturating_sub(reflector.max(0))));
        let (fwd, back) = (s.forward_nanos(), s.backward_nanos());
        if fwd < 0 || back < 0 {
            self.negative += 1;
        } else {
            self.forward.record(nanos(fwd));
            self.backward.record(nanos(back));
        }
        self.synchronized &= s.reflector_error.synchronized && s.sender_error.synchronized;
        self.worst_error = self
            .worst_error
            .max(s.reflector_error.seconds() + s.sender_error.seconds());
        if s.ttl != 0 {
            self.ttl = Some(
                self.ttl
                    .map_or((s.ttl, s.ttl), |(lo, hi)| (lo.min(s.ttl), hi.max(s.ttl))),
            );
        }
        if let Some(cos) = s.cos {
            self.cos_varied |= self.cos.is_some_and(|c| c != cos);
            self.cos = Some(cos);
        }
        if let Some(f) = self.flows.get_mut(flow) {
            f.observe(seq, s.reflector_seq);
        }
    }

    /// The report, given each flow's requests sent and first replies received, and the
    /// replies rejected as forged.
    pub fn report(&self, sent: &[u64], received: &[u64], forged: u64) -> StampReport {
        let clocks = if self.same_host {
            Clocks::Exact
        } else if self.synchronized && self.net.count() > 0 {
            Clocks::Synchronized {
                error_us: self.worst_error * 1e6,
            }
        } else {
            Clocks::Unsynchronized
        };
        StampReport {
            net: self.net.clone(),
            reflector: self.reflector.clone(),
            forward: self.forward.clone(),
            backward: self.backward.clone(),
            negative_one_way: self.negative,
            clocks,
            ttl: self.ttl,
            cos: self.cos,
            cos_varied: self.cos_varied,
            loss: self.direction_loss(sent, received, forged),
            sent_tos: self.sent_tos,
            sent_ttl: self.sent_ttl,
        }
    }

    fn direction_loss(&self, sent: &[u64], received: &[u64], forged: u64) -> DirectionLoss {
        let lost: u64 = sent
            .iter()
            .zip(received)
            .map(|(s, r)| s.saturating_sub(*r))
            .sum();
        if lost == 0 {
            return DirectionLoss {
                forward: Some(0),
                backward: Some(0),
                unknown: Some(0),
                why_not: None,
            };
        }
        let not = |why| DirectionLoss {
            why_not: Some(why),
            ..DirectionLoss::default()
        };
        if self.flows.iter().any(|f| f.restarted) {
            return not(RESTARTED);
        }
        if forged > 0 || self.flows.iter().any(|f| f.ahead) {
            return not(FORGED);
        }
        if !self.flows.iter().all(|f| f.stateful || f.last.is_none()) {
            return not(STATELESS);
        }
        let (mut forward, mut backward, mut unknown) = (0, 0, 0);
        for (i, f) in self.flows.iter().enumerate() {
            let (s, r) = (
                sent.get(i).copied().unwrap_or(0),
                received.get(i).copied().unwrap_or(0),
            );
            let (there, back, after) = f.split(s, r);
            forward += there;
            backward += back;
            unknown += after;
        }
        DirectionLoss {
            forward: Some(forward),
            backward: Some(backward),
            unknown: Some(unknown),
            why_not: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stamp::{ErrorEstimate, NtpTime};

    fn sample(reflector_seq: u32) -> StampSample {
        let t1 = NtpTime::from_unix(Duration::from_secs(1_800_000_000));
        StampSample {
            t1,
            t2: t1.plus_nanos(10_000),
            t3: t1.plus_nanos(12_000),
            t4: t1.plus_nanos(20_000),
            reflector_seq,
            reflector_error: ErrorEstimate::for_error(1e-6, false),
            sender_error: ErrorEstimate::for_error(1e-6, true),
            ttl: 64,
            cos: None,
        }
    }

    #[test]
    fn the_reflectors_time_is_taken_out_and_one_way_delays_labelled() {
        let mut s = StampStats::new(1, false);
        s.observe(0, 0, Duration::from_micros(20), &sample(0));
        let r = s.report(&[1], &[1], 0);
        assert_eq!(r.net.summary(1e3).p50, 18.0);
        assert_eq!(r.reflector.summary(1e3).p50, 2.0);
        assert_eq!(r.forward.summary(1e3).p50, 10.0);
        assert_eq!(r.backward.summary(1e3).p50, 8.0);
        // The reflector's clock is not synchronised: the one-way delays mean nothing.
        assert_eq!(r.clocks, Clocks::Unsynchronized);
        assert_eq!(
            StampStats::new(1, true).report(&[0], &[0], 0).clocks,
            Clocks::Exact
        );
    }

    #[test]
    fn a_stateful_reflector_splits_loss_by_direction() {
        // Sent 0..10; 2 and 5 lost on the way there, 7 on the way back, 9 after the last
        // reply counted (direction unknown).
        let mut s = StampStats::new(1, true);
        let mut refl = 0;
        for seq in 0..10u32 {
            if seq == 2 || seq == 5 {
                continue; // never reached the reflector
            }
            let r = refl;
            refl += 1;
            if seq == 7 || seq == 9 {
                continue; // reflected, reply lost
            }
            s.observe(0, u64::from(seq), Duration::from_micros(20), &sample(r));
        }
        let loss = s.report(&[10], &[6], 0).loss;
        assert_eq!(
            (loss.forward, loss.backward, loss.unknown),
            (Some(2), Some(1), Some(1))
        );
    }

    #[test]
    fn a_stateless_reflector_gives_no_split() {
        let mut s = StampStats::new(1, true);
        for seq in [0u32, 1, 3] {
            s.observe(0, u64::from(seq), Duration::from_micros(20), &sample(seq));
        }
        let loss = s.report(&[4], &[3], 0).loss;
        assert_eq!(loss.forward, None);
        assert!(loss.why_not.is_some());
    }

    #[test]
    fn a_restarted_count_gives_no_split() {
        let mut s = StampStats::new(1, true);
        s.observe(0, 0, Duration::from_micros(20), &sample(0));
        s.observe(0, 2, Duration::from_micros(20), &sample(1));
        s.observe(0, 3, Duration::from_micros(20), &sample(0));
        let loss = s.report(&[4], &[3], 0).loss;
        assert_eq!(loss.forward, None);
        assert_eq!(
            loss.why_not,
            Some("the reflector's count restarted during the run")
        );
    }

    #[test]
    fn forgeries_in_a_session_give_no_split() {
        // The case: a forger spraying the session's SSID from the sender's address
        // pushes the reflector's count ahead; the real replies then look lost on the way
        // back where none were.
        let mut s = StampStats::new(1, true);
        for seq in 0..10u32 {
            s.observe(
                0,
                u64::from(seq),
                Duration::from_micros(20),
                &sample(seq * 3 + 5),
            );
        }
        let loss = s.report(&[12], &[10], 0).loss;
        assert_eq!(loss.backward, None);
        assert!(loss.why_not.unwrap().contains("forgeries"));
        // Forged replies rejected on the way back say the same.
        let mut s = StampStats::new(1, true);
        for seq in [0u32, 1, 3] {
            s.observe(
                0,
                u64::from(seq),
                Duration::from_micros(20),
                &sample(seq.min(2)),
            );
        }
        assert_eq!(s.report(&[4], &[3], 0).loss.forward, Some(1));
        assert_eq!(s.report(&[4], &[3], 7).loss.forward, None);
    }
}
