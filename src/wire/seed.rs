//! The bytes on the wire: the seed's reply, `Your data was N bytes long`, in ASCII, and
//! udpkit's optional request-ID extension (docs/PROTOCOL.md).
//!
//! Promise: `emit_reply` without an ID writes exactly the bytes that the seed's Python
//! server sends; every `parse_*` accepts exactly what the matching `emit_*` writes
//! (`parse(emit(x)) == x`) and never panics on any input. Everything here is ASCII, so the
//! seed's server, which decodes requests as ASCII, survives udpkit's requests too.

use crate::wire::protocol::{Claim, Dialect, Prepared, Request, Shape};
use crate::wire::stamp::NtpTime;

/// The largest UDP payload over IPv4 (65535 - 20 bytes of IP header - 8 of UDP header).
pub const MAX_IPV4_PAYLOAD: usize = 65_507;

/// A receive buffer this large never truncates a UDP datagram, over IPv4 or IPv6.
pub const RECV_BUFFER: usize = 65_536;

/// The longest reply: the sentence with a 20-digit length and a request ID fits.
pub const MAX_REPLY: usize = 96;

/// Bytes of a request ID on the wire: `#` and 32 lowercase hexadecimal digits.
pub const ID_LEN: usize = 33;

const PREFIX: &[u8] = b"Your data was ";
const SUFFIX: &[u8] = b" bytes long";
const ID_MARK: u8 = b'#';
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Each byte's two lowercase hex digits.
const HEX_PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// Each byte's value as a lowercase hex digit, or 16 (bit 4 set) for any other byte.
const UNHEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut i = 0;
    while i < 16 {
        t[HEX[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// `v` as 16 lowercase hex digits, most significant first.
fn hex16(v: u64, out: &mut [u8; 16]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
    }
}

/// A request ID: a flow's random 64-bit `nonce`, which an off-path forger must guess, and
/// the request's sequence number in that flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId {
    /// The flow's secret, drawn at random when the flow is made.
    pub nonce: u64,
    /// The request's sequence number in its flow, from 0.
    pub seq: u64,
}

impl RequestId {
    /// Writes `#` and the nonce and sequence number as 16 hex digits each.
    pub fn emit(&self, buf: &mut [u8; ID_LEN]) {
        buf[0] = ID_MARK;
        hex16(self.nonce, (&mut buf[1..17]).try_into().expect("16 bytes"));
        hex16(self.seq, (&mut buf[17..33]).try_into().expect("16 bytes"));
    }

    /// Reads an ID written by [`RequestId::emit`] from the start of `data`.
    pub fn parse(data: &[u8]) -> Option<RequestId> {
        let (&mark, digits) = data.get(..ID_LEN)?.split_first()?;
        if mark != ID_MARK {
            return None;
        }
        // Every digit through one table (16 marks a byte that is not a lowercase hex
        // digit), checked once for the whole word: no branch a digit.
        let word = |hex: &[u8]| {
            let mut acc = 0u64;
            let mut bad = 0u8;
            for &c in hex {
                let v = UNHEX[usize::from(c)];
                bad |= v;
                acc = acc << 4 | u64::from(v & 0xf);
            }
            (bad & 0x10 == 0).then_some(acc)
        };
        Some(RequestId {
            nonce: word(&digits[..16])?,
            seq: word(&digits[16..])?,
        })
    }
}

/// Writes a request of exactly `size` bytes carrying `id`: the ID, then a space and `x`s
/// as padding. Returns `false`, writing nothing, when `size` is below [`ID_LEN`].
pub fn emit_request(buf: &mut Vec<u8>, id: RequestId, size: usize) -> bool {
    if size < ID_LEN {
        return false;
    }
    // A buffer that already holds a request of this size keeps its padding.
    if buf.len() != size || (size > ID_LEN && buf[ID_LEN] != b' ') {
        buf.clear();
        buf.resize(size, b'x');
        if size > ID_LEN {
            buf[ID_LEN] = b' ';
        }
    }
    let mut head = [0u8; ID_LEN];
    id.emit(&mut head);
    buf[..ID_LEN].copy_from_slice(&head);
    true
}

/// The ID a request carries, if it uses the extension: it starts with an ID that is
/// followed by the end of the datagram or by a space.
pub fn request_id(request: &[u8]) -> Option<RequestId> {
    match request.get(ID_LEN) {
        None | Some(b' ') => RequestId::parse(request),
        Some(_) => None,
    }
}

/// Writes the reply for a request of `len` bytes into `buf` and returns its length: the
/// seed's sentence, followed by ` #` and the ID when the request carried one.
///
/// ```
/// let mut buf = [0u8; udpkit::wire::MAX_REPLY];
/// let n = udpkit::wire::emit_reply(&mut buf, 38, None);
/// assert_eq!(&buf[..n], b"Your data was 38 bytes long");
/// ```
pub fn emit_reply(buf: &mut [u8; MAX_REPLY], len: usize, id: Option<RequestId>) -> usize {
    // By hand rather than through `write!`: this runs once per datagram on the hot path.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = len;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut end = 0;
    for part in [PREFIX, &digits[at..], SUFFIX] {
        buf[end..end + part.len()].copy_from_slice(part);
        end += part.len();
    }
    if let Some(id) = id {
        buf[end] = b' ';
        let mut head = [0u8; ID_LEN];
        id.emit(&mut head);
        buf[end + 1..end + 1 + ID_LEN].copy_from_slice(&head);
        end += 1 + ID_LEN;
    }
    end
}

/// The seed's reply for a datagram of `len` bytes, as a string.
pub fn reply_text(len: usize) -> String {
    format!("Your data was {len} bytes long")
}

/// What a reply says: the length the server received and, if it repeated one, the ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The length in bytes of the datagram the server says it received.
    pub len: usize,
    /// The request ID the server repeated (`None`: the seed's plain sentence).
    pub id: Option<RequestId>,
}

/// Reads a reply written by [`emit_reply`], or `None` if `data` is anything else
/// (the length in canonical decimal: no sign, no leading zeros, no spaces).
///
/// ```
/// use udpkit::wire::{parse_reply, Reply};
/// assert_eq!(parse_reply(b"Your data was 38 bytes long"), Some(Reply { len: 38, id: None }));
/// assert_eq!(parse_reply(b"Your data was 038 bytes long"), None);
/// ```
pub fn parse_reply(data: &[u8]) -> Option<Reply> {
    let rest = data.strip_prefix(PREFIX)?;
    let digits_end = rest.iter().position(|c| !c.is_ascii_digit())?;
    let (digits, rest) = rest.split_at(digits_end);
    let canonical = !digits.is_empty() && (digits.len() == 1 || digits[0] != b'0');
    if !canonical {
        return None;
    }
    let len = digits.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })?;
    let rest = rest.strip_prefix(SUFFIX)?;
    let id = match rest {
        [] => None,
        [b' ', id @ ..] if id.len() == ID_LEN => Some(RequestId::parse(id)?),
        _ => return None,
    };
    Some(Reply { len, id })
}

/// The seed's protocol: a request is anything (udpkit's carry its request ID), a reply the
/// seed's sentence naming the request's length, with the ID repeated where it had one.
#[derive(Debug)]
pub struct Seed;

impl Dialect for Seed {
    fn name(&self) -> &'static str {
        "seed"
    }

    fn banner(&self, _stateful: bool) -> Option<&'static str> {
        None
    }

    fn replies_as_long_as_requests(&self) -> bool {
        false
    }

    fn shape(&self, size: usize) -> Shape {
        Shape {
            size,
            distinct_lengths: true,
            ids_from_start: false,
        }
    }

    fn proves(&self, len: usize) -> bool {
        len >= ID_LEN
    }

    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime {
        if !emit_request(buf, r.id, r.len) {
            buf.clear();
            buf.resize(r.len, b'x');
        }
        NtpTime::default()
    }

    fn read_reply(&self, data: &[u8]) -> Claim {
        match parse_reply(data) {
            None => Claim::Bad,
            Some(Reply { len, id: Some(id) }) => Claim::Id { id, len },
            Some(Reply { len, id: None }) => Claim::Length(len),
        }
    }

    fn prepare(&self, request: &[u8], reply: &mut [u8; MAX_REPLY]) -> Prepared {
        Prepared::Written(emit_reply(reply, request.len(), request_id(request)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reply(len: usize, id: Option<RequestId>) -> Vec<u8> {
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(&mut buf, len, id);
        buf[..n].to_vec()
    }

    #[test]
    fn reply_bytes_match_the_seed() {
        for (len, text) in [
            (0, "Your data was 0 bytes long"),
            (1, "Your data was 1 bytes long"),
            (65_507, "Your data was 65507 bytes long"),
            (
                usize::MAX,
                &format!("Your data was {} bytes long", usize::MAX),
            ),
        ] {
            assert_eq!(reply(len, None), text.as_bytes());
            assert_eq!(reply_text(len), text);
            assert_eq!(parse_reply(text.as_bytes()), Some(Reply { len, id: None }));
        }
    }

    #[test]
    fn a_reply_repeats_the_requests_id() {
        let id = RequestId {
            nonce: 0x0123_4567_89ab_cdef,
            seq: 42,
        };
        let mut request = Vec::new();
        assert!(emit_request(&mut request, id, 38));
        assert_eq!(request, b"#0123456789abcdef000000000000002a xxxx");
        assert_eq!(request_id(&request), Some(id));
        let answer = reply(request.len(), request_id(&request));
        assert_eq!(
            answer,
            b"Your data was 38 bytes long #0123456789abcdef000000000000002a"
        );
        assert_eq!(
            parse_reply(&answer),
            Some(Reply {
                len: 38,
                id: Some(id)
            })
        );
    }

    #[test]
    fn requests_too_small_for_an_id_are_not_written() {
        let mut buf = Vec::new();
        assert!(!emit_request(
            &mut buf,
            RequestId { nonce: 1, seq: 1 },
            ID_LEN - 1
        ));
        assert!(emit_request(
            &mut buf,
            RequestId { nonce: 1, seq: 1 },
            ID_LEN
        ));
        assert_eq!(buf.len(), ID_LEN);
    }

    #[test]
    fn the_seeds_message_carries_no_id() {
        assert_eq!(request_id(b"The time is 2026-11-25 08:28:25.226815"), None);
        assert_eq!(request_id(b"#0123456789abcdef000000000000002aX"), None);
        assert_eq!(request_id(b"#0123456789ABCDEF000000000000002a"), None);
    }

    #[test]
    fn parse_rejects_anything_but_a_canonical_reply() {
        for bad in [
            &b""[..],
            b"Your data was  bytes long",
            b"Your data was -1 bytes long",
            b"Your data was +1 bytes long",
            b"Your data was 01 bytes long",
            b"Your data was 1 bytes long\n",
            b"your data was 1 bytes long",
            b"Your data was 99999999999999999999999 bytes long",
            b"Your data was 1x bytes long",
            b"Your data was 1 bytes long #",
            b"Your data was 1 bytes long #0123456789abcdef000000000000002",
            b"Your data was 1 bytes long #0123456789abcdef000000000000002aa",
            b"Your data was 1 bytes long  #0123456789abcdef000000000000002a",
        ] {
            assert_eq!(parse_reply(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    fn any_id() -> impl Strategy<Value = RequestId> {
        (any::<u64>(), any::<u64>()).prop_map(|(nonce, seq)| RequestId { nonce, seq })
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&data);
            let _ = request_id(&data);
            let _ = RequestId::parse(&data);
        }

        #[test]
        fn parsers_never_panic_near_valid_input(
            len in any::<usize>(),
            id in proptest::option::of(any_id()),
            cut in 0usize..100,
            flip in 0usize..100,
            byte in any::<u8>(),
        ) {
            let mut data = reply(len, id);
            if flip < data.len() { data[flip] = byte; }
            data.truncate(cut);
            let _ = parse_reply(&data);
            let _ = request_id(&data);
        }

        #[test]
        fn replies_round_trip(len in any::<usize>(), id in proptest::option::of(any_id())) {
            prop_assert_eq!(parse_reply(&reply(len, id)), Some(Reply { len, id }));
        }

        #[test]
        fn requests_round_trip(id in any_id(), size in ID_LEN..2000usize) {
            let mut buf = Vec::new();
            prop_assert!(emit_request(&mut buf, id, size));
            prop_assert_eq!(buf.len(), size);
            prop_assert_eq!(request_id(&buf), Some(id));
        }

        #[test]
        fn an_accepted_reply_is_exactly_what_emit_writes(data in "Your data was [0-9]{1,3} bytes long( #[0-9a-f]{32})?") {
            if let Some(parsed) = parse_reply(data.as_bytes()) {
                prop_assert_eq!(reply(parsed.len, parsed.id), data.as_bytes());
            }
        }
    }
}
