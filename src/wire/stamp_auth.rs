//! STAMP's authenticated mode (RFC 8762 §4.2.2 and §4.3.2, with RFC 8972's SSID): 112-byte
//! packets whose first 96 bytes are covered by an HMAC-SHA-256 truncated to 128 bits, under
//! a key both ends hold (from a file given on the command line, never on it).
//!
//! Promise: a reply whose HMAC does not verify under the key is claimed forged, whoever
//! sent it and wherever it was seen: with a key, no number can be forged even by someone on
//! the path. A reflector answers only requests whose HMAC verifies (RFC 8762 §4.4) and signs
//! each reply; the comparison is constant-time (the `hmac` crate's). Nothing here panics on
//! any input, and a reply is exactly as long as its request.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::wire::protocol::{Claim, Dialect, Prepared, Reflecting, Request, Shape};
use crate::wire::seed::MAX_REPLY;
use crate::wire::stamp::{self, ErrorEstimate, NtpTime, Reflected, u16_at, u32_at, u64_at};

/// An authenticated packet's length: 96 bytes of fields, 16 of HMAC.
pub const AUTH_LEN: usize = 112;
/// Where the HMAC is, after the bytes it covers.
const HMAC_AT: usize = 96;
/// The shortest key accepted: 16 bytes (128 bits).
pub const KEY_MIN: usize = 16;
/// The longest key accepted (a key longer than SHA-256's block is hashed by HMAC anyway).
pub const KEY_MAX: usize = 64;

/// Authenticated STAMP under one key.
pub struct StampAuth {
    key: Vec<u8>,
}

impl fmt::Debug for StampAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StampAuth { key: (withheld) }")
    }
}

impl StampAuth {
    /// Authenticated STAMP under `key` ([`KEY_MIN`] to [`KEY_MAX`] bytes).
    pub fn new(key: &[u8]) -> Result<StampAuth, String> {
        if !(KEY_MIN..=KEY_MAX).contains(&key.len()) {
            return Err(format!(
                "an HMAC key of {} bytes: give {KEY_MIN} to {KEY_MAX} bytes ({} to {} hex digits)",
                key.len(),
                2 * KEY_MIN,
                2 * KEY_MAX
            ));
        }
        Ok(StampAuth { key: key.to_vec() })
    }

    fn mac(&self, covered: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(covered);
        mac
    }

    /// Writes the HMAC of `packet`'s first 96 bytes into bytes 96 to 111.
    fn sign(&self, packet: &mut [u8]) {
        let tag = self.mac(&packet[..HMAC_AT]).finalize().into_bytes();
        packet[HMAC_AT..AUTH_LEN].copy_from_slice(&tag[..AUTH_LEN - HMAC_AT]);
    }

    /// Whether `packet` (at least [`AUTH_LEN`] bytes) carries the HMAC of its first 96
    /// bytes, compared in constant time.
    fn verifies(&self, packet: &[u8]) -> bool {
        packet.len() >= AUTH_LEN
            && self
                .mac(&packet[..HMAC_AT])
                .verify_truncated_left(&packet[HMAC_AT..AUTH_LEN])
                .is_ok()
    }
}

impl Dialect for StampAuth {
    fn name(&self) -> &'static str {
        "stamp-authenticated"
    }

    fn banner(&self, stateful: bool) -> Option<&'static str> {
        Some(if stateful {
            "STAMP Session-Reflector, authenticated, stateful"
        } else {
            "STAMP Session-Reflector, authenticated, stateless"
        })
    }

    fn default_port(&self) -> u16 {
        stamp::PORT
    }

    fn default_size(&self) -> usize {
        AUTH_LEN
    }

    fn min_size(&self) -> usize {
        AUTH_LEN
    }

    fn test_packets(&self) -> bool {
        true
    }

    fn has_sessions(&self) -> bool {
        true
    }

    fn shape(&self, size: usize) -> Shape {
        Shape {
            size: size.max(AUTH_LEN),
            distinct_lengths: false,
            ids_from_start: false,
        }
    }

    /// Every reply is proven by its HMAC.
    fn proves(&self, _len: usize) -> bool {
        true
    }

    /// The HMAC covers the fixed fields: what follows them (a larger probe's padding) can
    /// be cut and padded again on the path unseen.
    fn proof_covers(&self) -> Option<usize> {
        Some(AUTH_LEN)
    }

    fn keyed(&self) -> bool {
        true
    }

    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime {
        let t1 = NtpTime::now();
        buf.clear();
        buf.resize(r.len.max(AUTH_LEN), 0);
        buf[0..4].copy_from_slice(&(r.id.seq as u32).to_be_bytes());
        buf[16..24].copy_from_slice(&t1.0.to_be_bytes());
        buf[24..26].copy_from_slice(&r.session.error.to_bits().to_be_bytes());
        buf[26..28].copy_from_slice(&r.session.ssid.to_be_bytes());
        self.sign(buf);
        t1
    }

    fn read_reply(&self, data: &[u8]) -> Claim {
        if data.len() < AUTH_LEN {
            return Claim::Bad;
        }
        if !self.verifies(data) {
            return Claim::Forged;
        }
        // RFC 8762 §4.3.2's reflected packet.
        let reply = Reflected {
            seq: u32_at(data, 0),
            timestamp: NtpTime(u64_at(data, 16)),
            error: ErrorEstimate::from_bits(u16_at(data, 24)),
            ssid: u16_at(data, 26),
            receive: NtpTime(u64_at(data, 32)),
            sender_seq: u32_at(data, 48),
            sender_timestamp: NtpTime(u64_at(data, 64)),
            sender_error: ErrorEstimate::from_bits(u16_at(data, 72)),
            sender_ttl: data[80],
        };
        Claim::Reflected {
            reply,
            proof: None,
            cos: None,
            authenticated: true,
        }
    }

    fn prepare(&self, request: &[u8], _reply: &mut [u8; MAX_REPLY]) -> Prepared {
        // RFC 8762 §4.4: a packet that fails its HMAC is discarded (counted malformed).
        if self.verifies(request) {
            Prepared::InPlace(request.len())
        } else {
            Prepared::Malformed
        }
    }

    fn completes(&self) -> bool {
        true
    }

    fn complete(&self, answer: &mut [u8], ctx: &mut Reflecting<'_>) -> Option<u8> {
        if answer.len() < AUTH_LEN {
            return None;
        }
        let sender_seq = u32_at(answer, 0);
        let sender_timestamp = u64_at(answer, 16);
        let sender_error = u16_at(answer, 24);
        let ssid = u16_at(answer, 26);
        let seq = (ctx.session_seq)(ssid).unwrap_or(sender_seq);
        let head = &mut answer[..HMAC_AT];
        head.fill(0);
        head[0..4].copy_from_slice(&seq.to_be_bytes());
        head[16..24].copy_from_slice(&ctx.sent.0.to_be_bytes());
        head[24..26].copy_from_slice(&ctx.clock_error.to_bits().to_be_bytes());
        head[26..28].copy_from_slice(&ssid.to_be_bytes());
        head[32..40].copy_from_slice(&ctx.arrival.at.0.to_be_bytes());
        head[48..52].copy_from_slice(&sender_seq.to_be_bytes());
        head[64..72].copy_from_slice(&sender_timestamp.to_be_bytes());
        head[72..74].copy_from_slice(&sender_error.to_be_bytes());
        head[80] = ctx.arrival.ttl.unwrap_or(0);
        self.sign(answer);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::protocol::Session;
    use crate::wire::seed::RequestId;
    use crate::wire::stamp::Arrival;

    const KEY: &[u8; 16] = b"0123456789abcdef";

    fn request(auth: &StampAuth, seq: u64) -> (Vec<u8>, NtpTime) {
        let mut buf = Vec::new();
        let r = Request {
            id: RequestId { nonce: 1, seq },
            len: 112,
            session: Session {
                ssid: 77,
                ..Session::default()
            },
        };
        let t1 = auth.write_request(&mut buf, &r);
        (buf, t1)
    }

    fn reflect(auth: &StampAuth, request: &[u8]) -> Option<Vec<u8>> {
        let mut reply = [0u8; MAX_REPLY];
        if auth.prepare(request, &mut reply) != Prepared::InPlace(request.len()) {
            return None;
        }
        let mut bytes = request.to_vec();
        let mut seq = |_| Some(5);
        let mut ctx = Reflecting {
            arrival: Arrival {
                at: NtpTime(3 << 32),
                ttl: Some(61),
                tos: None,
            },
            sent: NtpTime(4 << 32),
            clock_error: ErrorEstimate::for_error(1e-3, true),
            marks_each_answer: true,
            session_seq: &mut seq,
        };
        auth.complete(&mut bytes, &mut ctx);
        Some(bytes)
    }

    #[test]
    fn a_signed_request_is_reflected_signed_and_read_back() {
        let auth = StampAuth::new(KEY).unwrap();
        let (req, t1) = request(&auth, 9);
        assert_eq!(req.len(), 112);
        let reply = reflect(&auth, &req).expect("a request that verifies is answered");
        assert_eq!(reply.len(), 112);
        let Claim::Reflected {
            reply: r,
            authenticated,
            ..
        } = auth.read_reply(&reply)
        else {
            panic!("not read back");
        };
        assert!(authenticated);
        assert_eq!((r.sender_seq, r.sender_timestamp, r.ssid), (9, t1, 77));
        assert_eq!((r.seq, r.sender_ttl), (5, 61));
        assert_eq!(
            (r.receive, r.timestamp),
            (NtpTime(3 << 32), NtpTime(4 << 32))
        );
    }

    #[test]
    fn any_change_or_another_key_is_forged_and_unsigned_requests_are_not_answered() {
        let auth = StampAuth::new(KEY).unwrap();
        let other = StampAuth::new(b"another key, 16+").unwrap();
        let (req, _) = request(&auth, 1);
        let reply = reflect(&auth, &req).unwrap();
        for i in 0..112 {
            let mut bent = reply.clone();
            bent[i] ^= 1;
            assert_eq!(auth.read_reply(&bent), Claim::Forged, "byte {i}");
        }
        assert_eq!(other.read_reply(&reply), Claim::Forged);
        assert_eq!(auth.read_reply(&reply[..111]), Claim::Bad);
        assert!(reflect(&other, &req).is_none(), "another key's request");
        let mut bent = req.clone();
        bent[0] ^= 1;
        assert!(reflect(&auth, &bent).is_none(), "a changed request");
        assert!(reflect(&auth, &[0; 111]).is_none(), "a short one");
    }

    #[test]
    fn keys_are_bounded() {
        assert!(StampAuth::new(&[1; 15]).is_err());
        assert!(StampAuth::new(&[1; 65]).is_err());
        assert!(StampAuth::new(&[1; 32]).is_ok());
    }
}
