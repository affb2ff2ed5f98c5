//! TWAMP-light (RFC 5357 Appendix I), unauthenticated: the test packets of TWAMP without
//! its control protocol, which most routers and probes in the field speak. A Session-Sender's
//! packet is a sequence number, a timestamp and an error estimate (14 bytes, RFC 5357
//! §4.1.2) and padding; a Session-Reflector's is laid out as STAMP's (§4.2.1: the same
//! fields up to the sender's TTL, 41 bytes) and padding.
//!
//! Promise: a reply is matched by the sequence number and timestamp it echoes, whatever its
//! length (38 bytes and up: twampy's reflector stops after the sender's fields); nothing in a TWAMP-light packet can prove a reply genuine, so
//! every reply is unverified and said to be. The reflector answers a request of at least 14
//! bytes with a packet as long as the request, or 41 bytes where the request is shorter
//! (the one answer longer than its request, by 27 bytes at most), never panics, and reads
//! only within the datagram.

use crate::wire::protocol::{Claim, Dialect, Prepared, Reflecting, Request, Shape};
use crate::wire::seed::MAX_REPLY;
use crate::wire::stamp::{self, NtpTime, REFLECTED_MIN, Reflected, SENDER_MIN};

/// TWAMP-light, sender and reflector.
#[derive(Debug)]
pub struct TwampLight;

impl Dialect for TwampLight {
    fn name(&self) -> &'static str {
        "twamp-light"
    }

    fn banner(&self, _stateful: bool) -> Option<&'static str> {
        Some("TWAMP-light Session-Reflector, RFC 5357 Appendix I")
    }

    fn default_port(&self) -> u16 {
        stamp::PORT
    }

    /// 41 bytes: the 14 of the sender's packet and the 27 of padding RFC 5357 §4.1.2 asks
    /// for, so that the reflector's reply is as long as the request.
    fn default_size(&self) -> usize {
        REFLECTED_MIN
    }

    fn min_size(&self) -> usize {
        SENDER_MIN
    }

    fn test_packets(&self) -> bool {
        true
    }

    fn shape(&self, size: usize) -> Shape {
        Shape {
            size: size.max(SENDER_MIN),
            distinct_lengths: false,
            ids_from_start: false,
        }
    }

    fn proves(&self, _len: usize) -> bool {
        false
    }

    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime {
        let t1 = NtpTime::now();
        buf.clear();
        buf.resize(r.len.max(SENDER_MIN), 0);
        buf[0..4].copy_from_slice(&(r.id.seq as u32).to_be_bytes());
        buf[4..12].copy_from_slice(&t1.0.to_be_bytes());
        buf[12..14].copy_from_slice(&r.session.error.to_bits().to_be_bytes());
        t1
    }

    fn read_reply(&self, data: &[u8]) -> Claim {
        match Reflected::parse(data) {
            None => Claim::Bad,
            Some(reply) => Claim::Reflected {
                reply,
                proof: None,
                cos: None,
                authenticated: false,
            },
        }
    }

    fn prepare(&self, request: &[u8], reply: &mut [u8; MAX_REPLY]) -> Prepared {
        match request.len() {
            n if n < SENDER_MIN => Prepared::Malformed,
            n if n < REFLECTED_MIN => {
                reply[..n].copy_from_slice(request);
                reply[n..REFLECTED_MIN].fill(0);
                Prepared::Written(REFLECTED_MIN)
            }
            n => Prepared::InPlace(n),
        }
    }

    fn completes(&self) -> bool {
        true
    }

    fn complete(&self, answer: &mut [u8], ctx: &mut Reflecting<'_>) -> Option<u8> {
        // The sender's padding over bytes 14 to 40 is written over; what follows is kept
        // (the base reply writes STAMP's 44 bytes: its last three are put back).
        let mut kept = [0u8; 3];
        let tail = answer.len().min(stamp::BASE_LEN);
        kept[..tail - REFLECTED_MIN].copy_from_slice(&answer[REFLECTED_MIN..tail]);
        answer[14..REFLECTED_MIN].fill(0);
        stamp::reflect_base(answer, &ctx.arrival, None, ctx.sent, ctx.clock_error);
        answer[REFLECTED_MIN..tail].copy_from_slice(&kept[..tail - REFLECTED_MIN]);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::Session;
    use crate::wire::seed::RequestId;
    use crate::wire::stamp::{Arrival, ErrorEstimate};

    fn request(seq: u64, len: usize) -> (Vec<u8>, NtpTime) {
        let mut buf = Vec::new();
        let r = Request {
            id: RequestId { nonce: 9, seq },
            len,
            session: Session::default(),
        };
        let t1 = TwampLight.write_request(&mut buf, &r);
        (buf, t1)
    }

    fn answer(request: &[u8]) -> Vec<u8> {
        let mut reply = [0u8; MAX_REPLY];
        let mut bytes = match TwampLight.prepare(request, &mut reply) {
            Prepared::Written(n) => reply[..n].to_vec(),
            Prepared::InPlace(_) => request.to_vec(),
            Prepared::Malformed => return Vec::new(),
        };
        let mut none = |_| None;
        let mut ctx = Reflecting {
            arrival: Arrival {
                at: NtpTime(5 << 32),
                ttl: Some(60),
                tos: None,
            },
            sent: NtpTime(6 << 32),
            clock_error: ErrorEstimate::for_error(0.001, true),
            marks_each_answer: true,
            session_seq: &mut none,
        };
        assert_eq!(TwampLight.complete(&mut bytes, &mut ctx), None);
        bytes
    }

    #[test]
    fn a_senders_packet_is_fourteen_bytes_and_padding() {
        let (packet, t1) = request(7, 41);
        assert_eq!(packet.len(), 41);
        assert_eq!(&packet[0..4], &7u32.to_be_bytes());
        assert_eq!(&packet[4..12], &t1.0.to_be_bytes());
        assert!(packet[14..].iter().all(|&b| b == 0));
        assert_eq!(
            request(1, 3).0.len(),
            14,
            "never shorter than the sender's fields"
        );
    }

    #[test]
    fn a_reflected_packet_echoes_the_sender_and_is_as_long_as_the_request_or_41() {
        for len in [14, 20, 41, 60] {
            let (packet, t1) = request(3, len);
            let reply = answer(&packet);
            assert_eq!(reply.len(), len.max(41), "{len}");
            let Claim::Reflected {
                reply: r, proof, ..
            } = TwampLight.read_reply(&reply)
            else {
                panic!("{len}: not read back");
            };
            assert_eq!((r.sender_seq, r.sender_timestamp, r.seq), (3, t1, 3));
            assert_eq!(
                (r.receive, r.timestamp, r.sender_ttl),
                (NtpTime(5 << 32), NtpTime(6 << 32), 60)
            );
            assert_eq!(r.ssid, 0, "MBZ in TWAMP");
            assert_eq!(proof, None, "nothing in TWAMP-light proves a reply");
        }
        assert!(
            answer(&[1; 13]).is_empty(),
            "under 14 bytes: not a test packet"
        );
        // The sender's padding after byte 40 comes back as it went.
        let mut padded = request(4, 60).0;
        for (i, b) in padded[41..].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        assert_eq!(answer(&padded)[41..], padded[41..]);
    }

    #[test]
    fn replies_under_38_bytes_are_not_replies_and_38_have_no_ttl() {
        assert_eq!(TwampLight.read_reply(&[0; 37]), Claim::Bad);
        let mut reply = [9u8; 38];
        reply[24..28].copy_from_slice(&5u32.to_be_bytes());
        let Claim::Reflected { reply: r, .. } = TwampLight.read_reply(&reply) else {
            panic!("a 38-byte reply is read");
        };
        assert_eq!((r.sender_seq, r.sender_ttl), (5, 0));
    }
}
